"""The status writer: batches status file changes into few commits on the status branch.

Position in the flow: status documents (``statusdocs``) -> **status writer** (this module,
asyncio) -> status branch (``statusbranch``: commit and push, run in a thread).

Callers say what a file should contain (``set``); the writer remembers only the latest wish per
path and drops wishes that match what is committed already, so a heartbeat that renders the same
document again costs a dictionary lookup, not a commit. The first change after a quiet period
waits ``window`` seconds for the changes that follow it, then all of them go into one commit
(so at most one commit per window). When committing or pushing fails, the changes stay queued
and the next attempt waits longer (doubling, capped). ``flush`` writes at once; ``stop`` flushes,
so nothing set before shutdown is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import types
from collections.abc import Mapping

from rciots.controller import statusbranch

__all__ = ["DEFAULT_WINDOW", "MAX_RETRY_DELAY", "StatusWriter"]

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 5.0  # seconds a first change waits for those that follow it
MAX_RETRY_DELAY = 300.0  # seconds between attempts while commits or pushes keep failing


class StatusWriter:
    """Batches ``set`` calls into commits on ``branch``; one flushing task per writer."""

    def __init__(
        self,
        branch: statusbranch.StatusBranch,
        window: float = DEFAULT_WINDOW,
        *,
        max_retry_delay: float = MAX_RETRY_DELAY,
    ) -> None:
        if window <= 0:
            raise ValueError(f"status commit window must be positive, not {window}")
        self._branch = branch
        self._window = window
        self._max_retry_delay = max(max_retry_delay, window)
        self._committed: dict[str, bytes] = {}  # what the branch holds, as far as we wrote it
        self._pending: dict[str, bytes | None] = {}  # path -> wanted content (None: delete)
        self._push_due = False  # a commit is made but not pushed yet
        self._failures = 0  # consecutive failed flushes
        self._due = asyncio.Event()  # set while something waits to be committed or pushed
        self._lock = asyncio.Lock()  # one flush at a time
        self._task: asyncio.Task[None] | None = None

    @property
    def committed(self) -> Mapping[str, bytes]:
        """What the branch holds, as far as this writer knows (read at start)."""
        return types.MappingProxyType(self._committed)

    @property
    def pending(self) -> Mapping[str, bytes | None]:
        """Changes not committed yet (a read-only view)."""
        return types.MappingProxyType(self._pending)

    @property
    def running(self) -> bool:
        """Whether its task runs (started, not stopped, not ended by an error)."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Learn what the branch holds (nothing committed is written again), then start."""
        if self._task is not None:
            raise RuntimeError("the status writer is running already")
        self._committed = await asyncio.to_thread(self._branch.read)
        # a commit of an earlier run may not have reached the remote: push() knows, cheaply
        self._push_due = self._branch.remote_url is not None
        if self._push_due or self._pending:
            self._due.set()
        self._task = asyncio.create_task(self._run(), name="status-writer")

    async def stop(self) -> None:
        """Stop the task, then write what is still pending (errors propagate)."""
        task, self._task = self._task, None
        if task is not None:
            async with self._lock:
                task.cancel()  # never in the middle of a write: that holds the lock
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()

    def set(self, path: str, content: bytes | None) -> None:
        """Want ``path`` to hold ``content`` (None: not exist); committed within a window."""
        statusbranch.validate_path(path)  # refused here, not later inside a whole batch
        if path in self._pending and self._pending[path] == content:
            return
        if self._committed.get(path) == content:
            # back to what is committed: a wish still queued for this path is void
            self._pending.pop(path, None)
            return
        self._pending[path] = content
        self._due.set()

    async def flush(self) -> None:
        """Commit and push what is pending now; raises what committing or pushing raised."""
        async with self._lock:
            await self._write()

    async def _run(self) -> None:
        while True:
            await self._due.wait()
            await asyncio.sleep(self._delay())
            # a failure is logged where it happens and retried after a longer delay
            async with self._lock:
                with contextlib.suppress(Exception):
                    await self._write()

    def _delay(self) -> float:
        if self._failures == 0:
            return self._window
        return min(self._window * 2.0**self._failures, self._max_retry_delay)

    async def _write(self) -> None:
        for path in [
            p for p, content in self._pending.items() if self._committed.get(p) == content
        ]:
            del self._pending[path]  # set() before start() compared with nothing yet
        batch = dict(self._pending)
        try:
            if batch:
                await self._commit(batch)
            if self._push_due:
                await self._push()
        except Exception:
            self._failures += 1
            self._due.set()
            raise
        self._failures = 0
        if not self._pending:
            self._due.clear()

    async def _commit(self, batch: dict[str, bytes | None]) -> None:
        message = _message(batch)
        try:
            commit = await asyncio.to_thread(self._branch.commit, batch, message)
        except Exception as exc:
            log.warning("committing %d status file(s) failed, will retry: %s", len(batch), exc)
            raise
        for path, content in batch.items():
            if content is None:
                self._committed.pop(path, None)
            else:
                self._committed[path] = content
            # set() may have changed a path while the commit ran: keep that newer wish
            if path in self._pending and self._pending[path] == content:
                del self._pending[path]
        if commit is not None:
            log.info(
                "committed %d status file(s) to %s as %s",
                len(batch),
                self._branch.branch,
                commit[:12],
            )
            self._push_due = self._branch.remote_url is not None

    async def _push(self) -> None:
        try:
            await asyncio.to_thread(self._branch.push)
        except Exception as exc:
            log.warning("pushing %s failed, will retry: %s", self._branch.branch, exc)
            raise
        self._push_due = False


def _message(batch: Mapping[str, bytes | None]) -> str:
    deleted = sum(1 for content in batch.values() if content is None)
    subject = f"Status: {len(batch) - deleted} file(s) written, {deleted} deleted"
    shown = sorted(batch)[:20]
    more = len(batch) - len(shown)
    return (
        subject
        + "\n\n"
        + "".join(f"{path}\n" for path in shown)
        + (f"... and {more} more\n" if more else "")
    )
