"""Helpers for tests of asyncio code: run a coroutine with a time limit, wait for a condition.

Test modules import them as ``from tests import aio``. A test that hangs fails with a
TimeoutError after ``run``'s limit instead of holding up the suite, and ``eventually`` polls
with short sleeps and a deadline instead of sleeping a guessed time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["eventually", "run"]

_POLL = 0.01  # seconds between checks: short next to anything the tests wait for


def run(main: Coroutine[Any, Any, None], timeout: float = 30.0) -> None:
    """``asyncio.run(main)``, cancelled with a TimeoutError after ``timeout`` seconds."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await main

    asyncio.run(bounded())


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    """Return once ``check()`` is true; AssertionError (naming the check by its docstring)
    when it is still false after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within} s: {check.__doc__ or check}")
        await asyncio.sleep(_POLL)
