"""When to fetch the fleet repo, and handing each new snapshot on.

Flow: **source** -> fleet model -> render -> desired -> connector/status. ``SourceLoop`` drives
a ``gitsource.GitMirror``: it fetches on a jittered poll interval and at once when woken
(``wake()``: the push webhook and the development file watcher call it, from any thread),
and when the branch has moved it makes the new snapshot (incrementally from the last one it
handed on) and awaits ``on_snapshot`` with it. The blocking Git work runs in one worker
thread of the loop's own, so a fetch and a snapshot never overlap.

When a fetch fails, the last good snapshot stays where it is (nothing is handed on), the
status says since when the source is stale and why, and the next attempt backs off
exponentially with full jitter, capped (errors that need a person, such as bad credentials
or a deleted branch, wait the cap at once). A wake still fetches at once. A WARNING is
logged when the error changes, not on every retry; an INFO line on recovery and on each
revision handed on.

The timing rules are plain functions (``jittered``, ``backoff_ceiling``, ``next_delay``), so
they are tested without sleeping; the clock (for status timestamps) and the random source
are parameters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from rciots.controller import gitsource, redaction, snapshots

__all__ = [
    "DEFAULT_BACKOFF_CAP",
    "DEFAULT_INTERVAL",
    "DEFAULT_JITTER",
    "Mirror",
    "OnSnapshot",
    "SourceLoop",
    "SourceStatus",
    "backoff_ceiling",
    "jittered",
    "next_delay",
]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 15.0
DEFAULT_JITTER = 0.1
DEFAULT_BACKOFF_CAP = 300.0

_T = TypeVar("_T")
OnSnapshot = Callable[[snapshots.Snapshot], Awaitable[None]]


class Mirror(Protocol):
    """What the loop needs of a source; ``gitsource.GitMirror`` is one."""

    def fetch(self) -> gitsource.Fetched: ...

    def snapshot(
        self, revision: str, previous: snapshots.Snapshot | None
    ) -> snapshots.Snapshot: ...


@dataclass(frozen=True)
class SourceStatus:
    """What the source knows about itself, for the status page and readiness.

    ``revision``: the commit of the last snapshot handed on. ``stale_since``: the first failed
    attempt since the last success (None while healthy). ``last_error``: "Reason: message"
    of the last failure (no secrets in it), ``reason`` its reason alone. ``forced_updates``:
    force-pushes seen. ``failures``: failed attempts in a row; ``retry_in``: the delay chosen
    after the last failure (seconds); ``attempts``: every fetch attempt so far.
    """

    revision: str | None = None
    last_fetch_at: datetime.datetime | None = None
    last_success_at: datetime.datetime | None = None
    stale_since: datetime.datetime | None = None
    last_error: str | None = None
    reason: str | None = None
    forced_updates: int = 0
    failures: int = 0
    retry_in: float | None = None
    attempts: int = 0


def jittered(interval: float, jitter: float, u: float) -> float:
    """The poll delay: ``interval`` spread evenly over ±``jitter`` of itself, by ``u`` in
    [0, 1) (so that controllers started together do not poll in step)."""
    return interval * (1.0 - jitter + 2.0 * jitter * u)


def backoff_ceiling(failures: int, interval: float, cap: float) -> float:
    """The longest wait after ``failures`` failures in a row (>= 1): twice the poll interval,
    doubling with each further failure, never above ``cap``."""
    # min() inside the exponent keeps 2**failures finite after days of failures
    return min(cap, interval * 2.0 ** min(failures, 64))


def next_delay(
    *,
    failures: int,
    retryable: bool,
    interval: float,
    jitter: float,
    cap: float,
    u: float,
) -> float:
    """Seconds until the next fetch: the jittered interval while healthy (``failures`` 0);
    after a failure a "full jitter" backoff, ``u`` times the ceiling (spreads retries of many
    controllers the most); an error that is not retryable waits up to the cap at once."""
    if failures <= 0:
        return jittered(interval, jitter, u)
    ceiling = backoff_ceiling(failures, interval, cap) if retryable else cap
    return u * ceiling


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class SourceLoop:
    """Fetch ``mirror`` on a schedule and on ``wake()``; await ``on_snapshot`` with each new
    snapshot (its ``changed`` relative to the previous one handed on).

    Use ``start()`` and ``stop()`` from a running event loop, or await ``run()`` (runs until
    cancelled). ``run_once()`` does one pass; made before ``start()`` (the controller does, to
    have its desired table at once), the loop's first pass comes when that pass's delay is
    over, or on a wake, not at once again. A SourceLoop runs once: after ``stop()`` make a new
    one. An exception from ``on_snapshot`` is logged and counts as a failed attempt; the same
    revision is offered again on the next attempt.
    """

    def __init__(
        self,
        mirror: Mirror,
        on_snapshot: OnSnapshot,
        *,
        interval: float = DEFAULT_INTERVAL,
        jitter: float = DEFAULT_JITTER,
        backoff_cap: float = DEFAULT_BACKOFF_CAP,
        clock: Callable[[], datetime.datetime] = _utc_now,
        rng: random.Random | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"poll interval must be positive, not {interval}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), not {jitter}")
        if backoff_cap <= 0:
            raise ValueError(f"backoff cap must be positive, not {backoff_cap}")
        self._mirror = mirror
        self._on_snapshot = on_snapshot
        self._interval = interval
        self._jitter = jitter
        self._cap = backoff_cap
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 (spreads timing; not a secret)
        self._status = SourceStatus()
        self._last: snapshots.Snapshot | None = None
        self._logged_reason: str | None = None
        # One worker thread: the mirror is not thread-safe, and fetch and snapshot take turns.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="rciots-source"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken: asyncio.Event | None = None
        self._wake_pending = False
        self._next_pass_at: float | None = None  # event loop time the last pass chose
        self._task: asyncio.Task[None] | None = None

    @property
    def status(self) -> SourceStatus:
        return self._status

    @property
    def snapshot(self) -> snapshots.Snapshot | None:
        """The last snapshot handed on (None before the first)."""
        return self._last

    def wake(self) -> None:
        """Fetch at once (from any thread). Wakes that arrive while a fetch runs make one
        more fetch after it, however many they are."""
        loop, woken = self._loop, self._woken
        if loop is None or woken is None:
            self._wake_pending = True  # the first pass fetches anyway
            return
        with contextlib.suppress(RuntimeError):  # the event loop has closed: nothing to wake
            loop.call_soon_threadsafe(woken.set)

    def start(self) -> None:
        """Run the loop as a task of the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="source-loop")

    async def stop(self) -> None:
        """Cancel the loop and wait for the fetch under way, if any, to finish (it cannot be
        interrupted; it ends within the mirror's fetch timeout)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        await asyncio.to_thread(self._executor.shutdown, True)

    async def run(self) -> None:
        """Fetch, hand on, wait (the jittered interval, or the backoff), until cancelled.
        After a ``run_once()`` of the caller's, the first fetch waits for its delay."""
        woken = self._bind()
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self._next_pass_at is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), self._next_pass_at - loop.time())
                await self.run_once()
        finally:
            self._executor.shutdown(wait=False)

    async def run_once(self) -> float:
        """One pass: fetch; if the branch moved, make the snapshot and await on_snapshot.
        Updates the status; returns the delay before the next pass (seconds)."""
        woken = self._bind()
        # cleared before the pass: this pass serves the wakes so far, and a wake during the
        # fetch means one more pass
        woken.clear()
        delay = await self._pass()
        self._next_pass_at = asyncio.get_running_loop().time() + delay
        return delay

    async def _pass(self) -> float:
        try:
            fetched = await self._in_thread(self._mirror.fetch)
            if fetched.forced:
                self._status = replace(self._status, forced_updates=self._status.forced_updates + 1)
            last = self._last
            if last is None or fetched.revision != last.revision:
                made = await self._in_thread(self._mirror.snapshot, fetched.revision, last)
                try:
                    await self._on_snapshot(made)
                except Exception:
                    if self._logged_reason != "HandOnFailed":
                        log.exception("handing on revision %s failed", made.revision[:12])
                    self._logged_reason = "HandOnFailed"
                    return self._failed(
                        "HandOnFailed",
                        f"the consumer of revision {made.revision} failed (see the log); it is "
                        "offered again on the next attempt",
                        retryable=True,
                    )
                self._last = made
                count = "all" if made.changed is None else str(len(made.changed))
                log.info(
                    "source revision %s handed on (%s paths changed)", made.revision[:12], count
                )
        except gitsource.SourceError as error:
            return self._failed(error.reason, error.message, retryable=error.retryable)
        except Exception as error:  # a bug must not stop the source: record it and retry
            if self._logged_reason != "SourceFailed":
                log.exception("the source failed unexpectedly")
            self._logged_reason = "SourceFailed"
            return self._failed(
                "SourceFailed", redaction.redact(f"{type(error).__name__}: {error}"), retryable=True
            )
        return self._succeeded()

    # --- internals ---------------------------------------------------------------------

    def _bind(self) -> asyncio.Event:
        if self._woken is None:
            self._loop = asyncio.get_running_loop()
            self._woken = asyncio.Event()
            if self._wake_pending:
                self._woken.set()
        return self._woken

    async def _in_thread(self, function: Callable[..., _T], *args: object) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    def _succeeded(self) -> float:
        now = self._clock()
        before = self._status
        if before.failures:
            log.info(
                "source recovered after %d failed attempts (stale since %s); at revision %s",
                before.failures,
                before.stale_since.isoformat() if before.stale_since else "?",
                (self._last.revision[:12] if self._last else "?"),
            )
        self._logged_reason = None
        self._status = replace(
            before,
            revision=self._last.revision if self._last else None,
            last_fetch_at=now,
            last_success_at=now,
            stale_since=None,
            last_error=None,
            reason=None,
            failures=0,
            retry_in=None,
            attempts=before.attempts + 1,
        )
        return next_delay(
            failures=0,
            retryable=True,
            interval=self._interval,
            jitter=self._jitter,
            cap=self._cap,
            u=self._rng.random(),
        )

    def _failed(self, reason: str, message: str, *, retryable: bool) -> float:
        now = self._clock()
        before = self._status
        failures = before.failures + 1
        delay = next_delay(
            failures=failures,
            retryable=retryable,
            interval=self._interval,
            jitter=self._jitter,
            cap=self._cap,
            u=self._rng.random(),
        )
        if self._logged_reason != reason:
            log.warning(
                "source is stale (keeping revision %s): %s: %s; next attempt in %.1f s",
                before.revision[:12] if before.revision else "none",
                reason,
                message,
                delay,
            )
            self._logged_reason = reason
        self._status = replace(
            before,
            last_fetch_at=now,
            stale_since=before.stale_since or now,
            last_error=f"{reason}: {message}",
            reason=reason,
            failures=failures,
            retry_in=delay,
            attempts=before.attempts + 1,
        )
        return delay
