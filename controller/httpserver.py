"""One uvicorn server inside the controller's event loop: start, port, stop.

Position in the flow: service -> **httpserver** -> FastAPI apps (webhook and status on the HTTP
listener, enrollment on the HTTPS listener). Only lifecycle; the apps are built elsewhere.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import fastapi
import uvicorn

__all__ = ["Server"]


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
    ) -> Server:
        """Serve ``app`` on ``host:port`` (HTTPS with ``certificate`` and ``key``); returns
        once it listens, or raises why it could not."""
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
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
