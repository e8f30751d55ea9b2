"""One uvicorn server inside the controller's event loop: start, port, stop.

Position in the flow: service -> **httpserver** -> FastAPI apps (webhook and status on the HTTP
listener, enrollment on the HTTPS listener). Only lifecycle and connection limits; the apps are
built elsewhere.

A client must send each request's head (request line and headers) whole within
``head_timeout`` of connecting, or of the answer to its previous request; otherwise it is
disconnected. uvicorn has no such limit: a client that sent a few bytes and then nothing (or a
header line now and then) held its connection for ever, and enough of them, before any
credential or token is checked, took all the process's file descriptors. Bodies have a deadline
of their own (``httpbody``); a request that came whole in time is never cut, however long its
answer takes (an event stream).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import fastapi
import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

__all__ = ["HEAD_TIMEOUT", "Server"]

# seconds for a request's head: uvicorn's own keep-alive time, which a client that sends
# nothing meets first
HEAD_TIMEOUT = 30.0


class _HeadDeadline(H11Protocol):
    """uvicorn's h11 protocol, with the deadline for each request's head."""

    head_timeout = HEAD_TIMEOUT
    _deadline: asyncio.TimerHandle | None = None
    _armed_with: RequestResponseCycle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._disarm()  # the connection is the WebSocket protocol's from here
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            # the request under way (None before the first): a new one replaces it when its
            # head has come whole
            self._armed_with = self.cycle
            self._deadline = self.loop.call_later(self.head_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        current: RequestResponseCycle | None = self.cycle
        # no new request since the deadline was set, and none is being answered
        if current is self._armed_with and (current is None or current.response_complete):
            self.transport.close()


def _protocol(head_timeout: float) -> type[H11Protocol]:
    attributes: dict[str, Any] = {"head_timeout": head_timeout}
    return type("HeadDeadline", (_HeadDeadline,), attributes)


class Server:
    """``await Server.start(app, host, port)``; ``await server.stop()``."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None]) -> None:
        self._server = server
        self._task = task

    @classmethod
    async def start(
        cls,
        app: fastapi.FastAPI,
        host: str,
        port: int,
        *,
        certificate: Path | None = None,
        key: Path | None = None,
        name: str = "http",
        head_timeout: float = HEAD_TIMEOUT,
    ) -> Server:
        """Serve ``app`` on ``host:port`` (HTTPS with ``certificate`` and ``key``); returns
        once it listens, or raises why it could not. A client has ``head_timeout`` seconds for
        each request's head."""
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http=_protocol(head_timeout),
            log_level="warning",
            lifespan="off",
            ssl_certfile=str(certificate) if certificate else None,
            ssl_keyfile=str(key) if key else None,
            timeout_keep_alive=30,
            # a client that holds a request open (an event stream) never delays a stop long
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(), name=name)
        while not server.started:
            if task.done():
                await task  # raises why it could not start
                raise OSError(f"the {name} server on {host}:{port} stopped at start")
            await asyncio.sleep(0.01)
        return cls(server, task)

    @property
    def port(self) -> int:
        """The port it listens on (useful with port 0)."""
        for listener in self._server.servers:
            for sock in listener.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("the server has no listening socket")

    async def stop(self) -> None:
        self._server.should_exit = True
        await self._task
