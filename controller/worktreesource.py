"""A local working tree as the controller's source, for development: no commit needed.

Where it sits: source -> fleet model -> render -> desired -> connector/status. Instead of a Git
mirror, the source can be a folder someone edits. ``snapshot_worktree`` reads its ``tenants/``
(with ``snapshots.read_worktree``: same symlink and size rules as every other reader) into the
same immutable ``snapshots.Snapshot`` a commit gives, with a content-derived revision and the
paths changed since the previous snapshot. ``WorktreeMirror`` offers that to
``sourceloop.SourceLoop`` as the Git mirror offers commits (``rciots controller --worktree``).
``WorktreeWatcher`` wakes the caller when a file is saved (watchdog), once per burst of events,
so a reconcile starts within a second.

The watcher only says "look again"; what changed is always decided by comparing snapshots, so a
missed or spurious event costs at most one extra read, never a wrong result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import logging
import os
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
    FileSystemMovedEvent,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from rciots.controller import gitsource, layout, snapshots

__all__ = [
    "REVISION_PREFIX",
    "WorktreeMirror",
    "WorktreeWatcher",
    "is_ignored",
    "snapshot_worktree",
]

log = logging.getLogger(__name__)

REVISION_PREFIX = "worktree:"

# Names editors and tools write next to the files people edit: vim's swap files and its
# "can I write here" probe (4913), Emacs' backups, autosaves and lock links, and the hidden
# temporary files of atomic writes (``rciots`` commands among them) -- whose rename onto the
# real name is seen as a change of that name.
_IGNORED_NAMES = ("*.swp", "*.swo", "*.swx", "*~", ".#*", "#*#", "4913", ".*.tmp")
_IGNORED_DIRECTORIES = frozenset({".git"})
# Writes, creations, deletions and renames. Not opened, closed-without-writing nor attribute
# changes: reading the tree (which every snapshot does) must never wake the watcher again.
_CONTENT_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


def snapshot_worktree(root: Path, previous: snapshots.Snapshot | None) -> snapshots.Snapshot:
    """The working tree's ``tenants/`` now, as a snapshot.

    revision: ``"worktree:"`` and the hex SHA-256 over the sorted pairs of path and SHA-256 of
    the content (plus the refused paths, when there are any), so identical trees have identical
    revisions wherever they are. changed: the paths whose content differs from ``previous``,
    or that appeared in or vanished from it (files or refused paths); None without
    ``previous``. Files whose content is unchanged keep ``previous``'s bytes objects, so later
    stages can compare by identity.
    """
    files, problems = snapshots.read_worktree(root)
    problems.sort()
    old_files = previous.files if previous is not None else {}
    tree = hashlib.sha256()
    for path in sorted(files):
        content = files[path]
        old = old_files.get(path)
        if old is not None and old == content:
            files[path] = content = old
        # NUL cannot occur in a path and the digest has a fixed length: the encoding is
        # unambiguous without escaping
        tree.update(os.fsencode(path) + b"\0" + hashlib.sha256(content).digest())
    # a refused path (symlink, oversized file) changes what the loader sees even when every
    # readable file is the same; a tree without any hashes exactly the pairs above
    for problem in problems:
        tree.update(b"\0" + os.fsencode(problem.path) + b"\0" + problem.message.encode())
    changed = None if previous is None else snapshots.changed_paths(previous, files, problems)
    return snapshots.Snapshot(
        revision=REVISION_PREFIX + tree.hexdigest(),
        files=types.MappingProxyType(files),
        problems=tuple(problems),
        changed=changed,
    )


class WorktreeMirror:
    """A local working tree as a source for ``sourceloop.SourceLoop`` (development): each
    "fetch" reads the tree as saved, its revision being a digest of the content. Blocking and
    not thread-safe, like ``gitsource.GitMirror``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._current: snapshots.Snapshot | None = None
        self._base: snapshots.Snapshot | None = None  # what _current.changed is relative to

    def fetch(self) -> gitsource.Fetched:
        self._base = self._current
        self._current = snapshot_worktree(self.root, self._base)
        before = self._base.revision if self._base else None
        return gitsource.Fetched(self._current.revision, before, forced=False)

    def snapshot(self, revision: str, previous: snapshots.Snapshot | None) -> snapshots.Snapshot:
        """The tree the last fetch read, with ``changed`` relative to ``previous``."""
        current, base = self._current, self._base
        if current is None or current.revision != revision:
            raise gitsource.SourceError(
                "RevisionNotFound",
                f"the working tree {self.root} changed while it was read; reading it again",
                retryable=True,
            )
        if previous is None:
            return current if base is None else dataclasses.replace(current, changed=None)
        if base is not None and previous.revision == base.revision:
            return current  # the usual case: compared with it while reading
        # the last fetch compared with another snapshot (one not handed on, say)
        changed = snapshots.changed_paths(previous, current.files, current.problems)
        return dataclasses.replace(current, changed=changed)


def is_ignored(root: Path, path: str) -> bool:
    """Whether a change at ``path`` (absolute, under ``root``) is an editor's or Git's own
    bookkeeping rather than an edit of the fleet repo."""
    relative = Path(os.path.relpath(path, root))
    if _IGNORED_DIRECTORIES.intersection(relative.parts):
        return True
    return any(fnmatch.fnmatchcase(relative.name, pattern) for pattern in _IGNORED_NAMES)


class WorktreeWatcher:
    """Calls ``on_change()`` once per burst of file changes under ``root/tenants``.

    A call comes ``debounce`` seconds after the last event of a burst, and no later than
    ``max_wait`` after its first event (an editor or a ``git checkout`` that keeps writing does
    not hold it back for ever). Calls come from one thread of the watcher, one at a time; an
    exception from ``on_change`` is logged and the watcher carries on. ``tenants/`` may be
    created, deleted or replaced while the watcher runs. Use ``start()``/``stop()`` or ``with``.
    """

    def __init__(
        self,
        root: Path,
        on_change: Callable[[], None],
        debounce: float = 0.2,
        *,
        max_wait: float = 1.0,
    ) -> None:
        if debounce < 0 or max_wait < debounce:
            raise ValueError(
                f"need 0 <= debounce <= max_wait, not debounce={debounce}, max_wait={max_wait}"
            )
        self._root = Path(os.path.abspath(root))
        self._tenants = self._root / layout.TENANTS_DIR
        self._on_change = on_change
        self._debounce = debounce
        self._max_wait = max_wait
        self._condition = threading.Condition()
        self._pending = False  # an event arrived that on_change has not yet been called for
        self._first = 0.0  # monotonic time of the first and last event of the pending burst
        self._last = 0.0
        self._rewatch = False  # tenants/ itself appeared, vanished or moved
        self._stopping = False
        self._observer: BaseObserver | None = None
        self._tenants_watch: ObservedWatch | None = None
        self._worker: threading.Thread | None = None
        self._handler = _Handler(self._on_filesystem_event)

    def __enter__(self) -> WorktreeWatcher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start watching; ValueError if ``root`` is no directory. Once per watcher."""
        if self._observer is not None:
            raise RuntimeError("this WorktreeWatcher was already started; make a new one")
        if not self._root.is_dir():
            raise ValueError(f"cannot watch {self._root}: it is not a directory")
        observer = Observer()
        # root itself, not recursively: only to see tenants/ appear, vanish or be replaced
        observer.schedule(
            self._handler, str(self._root), recursive=False, event_filter=_CONTENT_EVENTS
        )
        observer.start()  # OSError (root gone, no inotify instance left) goes to the caller
        self._observer = observer
        self._watch_tenants()
        self._worker = threading.Thread(
            target=self._run, name=f"worktree-watcher {self._root}", daemon=True
        )
        self._worker.start()
        log.info("watching %s for changes", self._tenants)

    def stop(self) -> None:
        """Stop watching and join the watcher's threads; no call of ``on_change`` starts after
        this returns. Idempotent."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join()
        if self._observer is not None and self._observer.is_alive():
            self._observer.stop()
            self._observer.join()

    def _event(self, *, rewatch: bool) -> None:
        """Note a relevant event (on the observer's thread) and wake the worker."""
        now = time.monotonic()
        with self._condition:
            if not self._pending:
                self._pending = True
                self._first = now
            self._last = now
            self._rewatch = self._rewatch or rewatch
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._pending and not self._stopping:
                    self._condition.wait()
                while not self._stopping:
                    due = min(self._last + self._debounce, self._first + self._max_wait)
                    remaining = due - time.monotonic()
                    if remaining <= 0:
                        break
                    self._condition.wait(remaining)
                if self._stopping:
                    return
                self._pending = False
                rewatch, self._rewatch = self._rewatch, False
            if rewatch:
                # before on_change: whatever is written to the new tenants/ from here on is
                # seen, and what was written before is read by the snapshot on_change starts
                self._watch_tenants()
            try:
                self._on_change()
            except Exception:
                log.exception("the worktree change callback failed; watching on")

    def _watch_tenants(self) -> None:
        """(Re)place the recursive watch on tenants/ to follow what is at that path now."""
        observer = self._observer
        assert observer is not None
        if self._tenants_watch is not None:
            # the old watch follows the old directory (deleted or moved): never reuse it
            with contextlib.suppress(KeyError):
                observer.unschedule(self._tenants_watch)
            self._tenants_watch = None
        if self._tenants.is_symlink() or not self._tenants.is_dir():
            return  # nothing to watch; a symlink is refused by the snapshot anyway
        try:
            self._tenants_watch = observer.schedule(
                self._handler, str(self._tenants), recursive=True, event_filter=_CONTENT_EVENTS
            )
        except OSError as error:
            # gone again (its deletion wakes us to try again), or out of inotify watches
            log.warning(
                "cannot watch %s (%s): saved files do not wake a reconcile until it is "
                "recreated; if the limit of inotify watches is reached, raise "
                "fs.inotify.max_user_watches",
                self._tenants,
                error.strerror or error,
            )

    def _on_filesystem_event(self, event: FileSystemEvent) -> None:
        """Called on the observer's thread for every event of both watches."""
        wake, rewatch = self._relevant(event)
        if wake:
            self._event(rewatch=rewatch)

    def _relevant(self, event: FileSystemEvent) -> tuple[bool, bool]:
        """(wake, rewatch) for one event."""
        # the event filter narrows what inotify reports; other back ends report everything
        if not isinstance(event, tuple(_CONTENT_EVENTS)):
            return False, False
        paths = [os.fsdecode(event.src_path)]
        if isinstance(event, FileSystemMovedEvent) and event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        tenants = str(self._tenants)
        if tenants in paths:
            return True, True
        wake = any(
            (path.startswith(tenants + os.sep) and not is_ignored(self._root, path))
            for path in paths
        )
        return wake, False


class _Handler(FileSystemEventHandler):
    def __init__(self, on_event: Callable[[FileSystemEvent], None]) -> None:
        self._on_event = on_event

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._on_event(event)
