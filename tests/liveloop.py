"""A controller running in an event loop of its own thread, for tests that talk to it as a
client would (httpx, a browser) from plain synchronous test functions, and share one running
controller across a module's tests.

``LiveController(settings)`` starts it; ``call(coro)`` runs a coroutine in its loop (to start
or stop in-process agents there); ``close()`` stops the controller, then the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from rciots.controller import service

__all__ = ["LiveController"]

_T = TypeVar("_T")


class LiveController:
    def __init__(self, settings: service.Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.controller = service.Controller(settings)
        try:
            self.call(self.controller.start())
        except BaseException:
            self._end_loop()
            raise

    def call(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    @property
    def url(self) -> str:
        port = self.controller.http_port
        assert port is not None, "the controller serves no HTTP endpoint (listen=None)"
        return f"http://127.0.0.1:{port}"

    def close(self) -> None:
        try:
            self.call(self.controller.stop())
        finally:
            self._end_loop()

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
