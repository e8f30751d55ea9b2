"""The status branch: commits of observed state to a branch of its own in the fleet repo.

Position in the flow: status documents (``statusdocs``) -> status writer (``statuswriter``,
batching, asyncio) -> **status branch** (this module: pygit2, blocking; run it in a thread).

The repository is either the controller's bare mirror of a remote fleet repo (``remote_url``
set: commits are pushed there) or a local repository (no push). Other parts use the same
repository at the same time (the Git source fetches into it from another thread), so this
module opens a ``pygit2.Repository`` of its own and touches exactly two references:
``refs/heads/<branch>`` and ``refs/remotes/origin/<branch>``. Never the tracked branch, never
``HEAD``, never a working tree or an index.

Commits are built from the parent's tree, rebuilding only the subtrees that hold a changed
path (``pygit2.TreeBuilder``), and the branch moves only from the commit it was built on to
the new one (compare-and-swap; when something else moved it, the change is built again on the
new head). A large batch of new files (a first commit of every device's status, say) is
written as one pack file instead of thousands of loose objects.

Pushing never forces. When the remote refuses because its branch moved (another controller
replica, a person), the remote branch is fetched and every change committed here since the
last successful push is applied again on top of it: our commits say "these paths now have
these contents", so they can be re-applied to any base. The other side's commits stay in the
history, which remains linear.

Errors: ``StatusBranchError`` for a repository that cannot be used as configured;
``StatusRemoteError`` (a subclass) when fetching or pushing fails, whether libgit2 or one of
the ``callbacks`` (refused credentials, say) raised, with any credentials removed from its
message.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import re
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pygit2
from pygit2.enums import FileMode, ObjectType, ReferenceType

from rciots.controller import redaction, statusdocs

__all__ = [
    "DEFAULT_BRANCH",
    "StatusBranch",
    "StatusBranchError",
    "StatusRemoteError",
    "validate_path",
]

log = logging.getLogger(__name__)

DEFAULT_BRANCH = "rciots/status"
DEFAULT_AUTHOR_NAME = "RCIoTs controller"
DEFAULT_AUTHOR_EMAIL = "controller@rciots.invalid"

# From this many new blobs on, one pack file is written instead of loose objects: 10,000 loose
# objects cost ~0.75 s and as many files; a pack ~0.1 s and two files.
_PACK_FROM_BLOBS = 256
_MAX_PACK_BYTES = 1 << 30  # the pack index below uses 31-bit offsets
_CAS_ATTEMPTS = 50  # rebuilds when the branch keeps moving under us; each costs milliseconds
_MAX_RETRY_DELAY = 5.0

Changes = Mapping[str, pygit2.Oid | None]  # path -> blob id (None: delete)


class StatusBranchError(Exception):
    """The status branch cannot be written as configured (message says what to change)."""


class StatusRemoteError(StatusBranchError):
    """Fetching the status branch from, or pushing it to, the remote failed.

    The message names the branch and the URL without credentials, and carries no secret.
    """


# The usual path (status/acme/gw-01.yaml): no part starts with a dot, so none is ".", ".."
# or ".git"; anything else takes the full check.
_SIMPLE_PATH = re.compile(r"[\w-][\w.-]*(?:/[\w-][\w.-]*)*", re.ASCII)


def validate_path(path: str) -> None:
    """ValueError unless ``path`` is a plain relative file path that Git can store."""
    if _SIMPLE_PATH.fullmatch(path):
        return
    parts = path.split("/")
    bad = (
        not path
        or "\0" in path
        or "\\" in path
        or any(part in ("", ".", "..") or part.lower() == ".git" for part in parts)
    )
    if bad:
        raise ValueError(
            f"status branch path {path!r} is not valid: use a relative path of "
            "'/'-separated names, none empty, '.', '..' or '.git' (status/acme/gw-01.yaml)"
        )


class StatusBranch:
    """One branch of one repository, written by this controller only. Blocking; thread-safe
    (calls are serialized), though meant for one thread at a time (``asyncio.to_thread``).

    ``lock`` makes a context manager held around every write to the repository (objects,
    references, fetches), never around a push on the network. In the controller it is the Git
    source's mirror lock (``lambda: mirror.lock(timeout)``), so that the source's clean-up of
    what a crashed writer left (lock files, pack files without index) never meets a write of
    ours in progress. ``callbacks`` makes the pygit2 callbacks (credentials, certificate
    check) for each fetch and push.
    """

    def __init__(
        self,
        repository: Path,
        branch: str = DEFAULT_BRANCH,
        remote_url: str | None = None,
        callbacks: Callable[[], pygit2.RemoteCallbacks] | None = None,
        author: pygit2.Signature | None = None,
        *,
        lock: Callable[[], contextlib.AbstractContextManager[object]] | None = None,
        push_attempts: int = 5,
        retry_delay: float = 0.2,
    ) -> None:
        ref = f"refs/heads/{branch}"
        if not pygit2.reference_is_valid_name(ref):
            raise StatusBranchError(
                f"status branch name {branch!r} is not a valid Git branch name: "
                f"use something like {DEFAULT_BRANCH}"
            )
        try:
            # our own Repository object: the Git source uses another one from another thread
            self._repo = pygit2.Repository(str(repository))
        except pygit2.GitError:
            raise StatusBranchError(
                f"{repository} is not a Git repository: point the status branch at the fleet "
                "repo (or the controller's mirror of it)"
            ) from None
        self.branch = branch
        self.remote_url = remote_url
        # for readers with a Repository of their own (the status page's device history)
        self.repository_path = Path(self._repo.path)
        self._ref = ref
        self._tracking = f"refs/remotes/origin/{branch}"
        self._callbacks = callbacks
        self._author = (author.name, author.email) if author else None
        self._push_attempts = max(1, push_attempts)
        self._retry_delay = retry_delay
        self._lock = threading.Lock()
        self._repository_lock = lock or contextlib.nullcontext

    # -- reading --------------------------------------------------------------------------

    def head(self) -> str | None:
        """The commit id the branch points at here, or None before its first commit."""
        with self._lock:
            head = self._head_id()
            return None if head is None else str(head)

    def read(self) -> dict[str, bytes]:
        """Every file on the branch, path -> content.

        With a remote, the remote branch is fetched first and anything it gained is taken in,
        so that what a restarted controller compares against is what is really there; when the
        remote cannot be reached, the local branch is read and a warning logged.
        """
        with self._lock:
            if self.remote_url is not None:
                try:
                    with self._repository_lock():
                        remote_head = self._fetch()
                        if remote_head is not None:
                            self._integrate(remote_head)
                except StatusRemoteError as exc:
                    log.warning("reading the status branch without the remote's changes: %s", exc)
            head = self._head_id()
            if head is None:
                return {}
            files: dict[str, bytes] = {}
            for path, oid in self._walk(self._commit(head).tree, ""):
                files[path] = self._repo[oid].read_raw()
            return files

    # -- committing ------------------------------------------------------------------------

    def commit(self, changes: Mapping[str, bytes | None], message: str) -> str | None:
        """Set each path to its content (None deletes it) in one commit; return its id.

        Returns None, and writes nothing, when the tree would not change. Creates the branch
        (a root commit holding the README) when it does not exist yet.
        """
        _check_changes(changes)
        with self._lock, self._repository_lock():
            self._refuse_checked_out()
            contents = {path: data for path, data in changes.items() if data is not None}
            blobs = self._write_blobs(contents)
            return self._commit_blobs({path: blobs.get(path) for path in changes}, message)

    def _commit_blobs(self, changes: Changes, message: str) -> str | None:
        for _ in range(_CAS_ATTEMPTS):
            head = self._head_id()
            if head is None:
                parents: list[pygit2.Oid] = []
                base_tree = self._repo[self._readme_tree()].peel(pygit2.Tree)
            else:
                parents = [head]
                base_tree = self._commit(head).tree
            tree = self._build_tree(base_tree, changes) or self._empty_tree()
            if tree == base_tree.id:
                return None
            if head is None:
                parents = [self._new_commit("Start the status branch", base_tree.id, [])]
            commit = self._new_commit(message, tree, parents)
            if self._move_branch(head, commit):
                return str(commit)
            log.debug("the status branch moved while committing; building on its new head")
        raise StatusBranchError(
            f"the status branch {self.branch} kept moving while committing "
            f"({_CAS_ATTEMPTS} attempts): is another process writing it?"
        )

    # -- pushing ---------------------------------------------------------------------------

    def push(self) -> None:
        """Push the branch to the remote, if any; never forced.

        On rejection the remote branch is fetched, the local changes since the last successful
        push are applied again on top of it, and the push is retried (bounded, with backoff).
        Raises StatusRemoteError when the remote cannot be reached or keeps refusing.
        """
        if self.remote_url is None:
            return
        with self._lock:
            delay = self._retry_delay
            problem = ""
            for attempt in range(1, self._push_attempts + 1):
                local = self._head_id()
                if local is None or local == self._ref_target(self._tracking):
                    return  # nothing that the remote does not have already
                problem = self._push_once()  # network only: the repository lock is not held
                if not problem:
                    with self._repository_lock():
                        self._repo.references.create(self._tracking, local, force=True)
                    log.debug("pushed %s at %s", self.branch, local)
                    return
                with self._repository_lock():
                    try:
                        remote_head = self._fetch()
                    except StatusRemoteError:
                        # unreachable, or credentials refused: what the push said is the news
                        raise StatusRemoteError(
                            f"pushing {self.branch} to {self._safe_url()} failed: {problem}"
                        ) from None
                    moved = False
                    if remote_head is not None and not self._contains(local, remote_head):
                        moved = True
                        log.info(
                            "the remote's %s moved to %s; applying %s's changes again on top",
                            self.branch,
                            str(remote_head)[:12],
                            str(local)[:12],
                        )
                        self._integrate(remote_head)
                if moved and attempt == 1:
                    continue  # the usual case: retry at once, on the fresh head
                if attempt < self._push_attempts:
                    # full jitter, so that two replicas racing for the branch drift apart
                    time.sleep(random.uniform(0, delay))  # noqa: S311 - not for security
                    delay = min(delay * 2, _MAX_RETRY_DELAY)
            raise StatusRemoteError(
                f"pushing {self.branch} to {self._safe_url()} failed {self._push_attempts} "
                f"times; last: {problem}"
            )

    def _push_once(self) -> str:
        """Push; return '' on success, else what went wrong (credentials removed)."""
        assert self.remote_url is not None
        remote = self._repo.remotes.create_anonymous(self.remote_url)
        callbacks = self._new_callbacks()
        refused: list[str] = []
        theirs = callbacks.push_update_reference

        def on_update(refname: str, message: str | None) -> None:
            if message:
                refused.append(f"{refname}: {message}")
            theirs(refname, message)  # type: ignore[arg-type]

        # an instance attribute: pygit2 calls it; the caller's own method still runs (above)
        setattr(callbacks, "push_update_reference", on_update)  # noqa: B010
        try:
            # no '+': the remote refuses what is not a fast-forward, and that is wanted
            remote.push([f"{self._ref}:{self._ref}"], callbacks=callbacks)
        except Exception as exc:  # a callback's own error too: see _fetch
            return redaction.redact(str(exc)) or type(exc).__name__
        return redaction.redact("; ".join(refused))

    def _fetch(self) -> pygit2.Oid | None:
        """Fetch the remote branch into the tracking ref; its head, or None if it has none."""
        assert self.remote_url is not None
        remote = self._repo.remotes.create_anonymous(self.remote_url)
        try:
            remote.fetch([f"+{self._ref}:{self._tracking}"], callbacks=self._new_callbacks())
            heads = remote.list_heads(connect=False)
        except Exception as exc:
            # not only libgit2's GitError: pygit2 re-raises whatever a callback raised (the
            # Git source's callbacks raise their own error for refused credentials, a
            # certificate not trusted, a time limit), and that is a remote failure too
            # "from None": the original exception's text may hold what was redacted here
            raise StatusRemoteError(
                f"fetching {self.branch} from {self._safe_url()} failed: "
                f"{redaction.redact(str(exc))}"
            ) from None
        for head in heads:
            if head.name == self._ref:
                return head.oid
        return None

    def _integrate(self, remote_head: pygit2.Oid) -> None:
        """Make the local branch contain ``remote_head``: create or fast-forward it, or apply
        the local changes since the last common commit again on top of the remote's."""
        for _ in range(_CAS_ATTEMPTS):
            local = self._head_id()
            if local is not None and self._contains(local, remote_head):
                return
            if local is None or self._contains(remote_head, local):
                target = remote_head
            else:
                target = self._reapply(local, remote_head)
            if self._move_branch(local, target):
                return
        raise StatusBranchError(f"the status branch {self.branch} kept moving while rebasing")

    def _reapply(self, local: pygit2.Oid, remote_head: pygit2.Oid) -> pygit2.Oid:
        base = self._merge_base(local, remote_head)
        base_tree = None if base is None else self._commit(base).tree
        changes = dict(self._tree_changes(base_tree, self._commit(local).tree, ""))
        remote_tree = self._commit(remote_head).tree
        tree = self._build_tree(remote_tree, changes) or self._empty_tree()
        if tree == remote_tree.id:
            return remote_head  # everything we wrote is there already
        subjects = self._subjects(local, base)
        message = (
            f"Re-apply {len(changes)} status file change(s) on top of {str(remote_head)[:12]}\n\n"
            "The remote branch moved while these commits were waiting to be pushed:\n"
            + "".join(f"- {subject}\n" for subject in subjects)
        )
        return self._new_commit(message, tree, [remote_head])

    # -- building blocks -------------------------------------------------------------------

    def _build_tree(self, base: pygit2.Tree | None, changes: Changes) -> pygit2.Oid | None:
        """The tree ``base`` with ``changes`` applied (paths relative to it); None when empty.
        Subtrees without a changed path are reused as they are, not read or rewritten."""
        here: dict[str, pygit2.Oid | None] = {}
        below: dict[str, dict[str, pygit2.Oid | None]] = {}
        for path, oid in changes.items():
            name, slash, rest = path.partition("/")
            if slash:
                below.setdefault(name, {})[rest] = oid
            else:
                here[name] = oid
        builder = self._repo.TreeBuilder(base) if base is not None else self._repo.TreeBuilder()
        changed = False
        for name, sub_changes in below.items():
            old = base[name] if base is not None and name in base else None
            old_tree = old if isinstance(old, pygit2.Tree) else None
            new = self._build_tree(old_tree, sub_changes)
            if old_tree is not None and new == old_tree.id:
                continue
            changed = True
            if new is not None:
                builder.insert(name, new, FileMode.TREE)
            elif builder.get(name) is not None:
                builder.remove(name)
        for name, oid in here.items():
            entry = builder.get(name)
            if oid is None:
                if entry is not None:
                    builder.remove(name)
                    changed = True
            elif entry is None or entry.id != oid or entry.filemode != FileMode.BLOB:
                builder.insert(name, oid, FileMode.BLOB)
                changed = True
        if not changed and base is not None:
            return base.id
        return builder.write() if len(builder) else None

    def _tree_changes(
        self, old: pygit2.Tree | None, new: pygit2.Tree | None, prefix: str
    ) -> Iterator[tuple[str, pygit2.Oid | None]]:
        """What turns ``old`` into ``new``, as path -> blob id (None: deleted); equal
        subtrees are skipped without being read."""
        old_entries = {entry.name: entry for entry in old or () if entry.name is not None}
        new_entries = {entry.name: entry for entry in new or () if entry.name is not None}
        for name in sorted(old_entries.keys() | new_entries.keys()):
            before, after = old_entries.get(name), new_entries.get(name)
            path = f"{prefix}{name}"
            if before is not None and after is not None and before.id == after.id:
                continue
            before_tree = before if isinstance(before, pygit2.Tree) else None
            if isinstance(after, pygit2.Tree):
                # a blob replaced by a tree needs no deletion: inserting the tree replaces it
                yield from self._tree_changes(before_tree, after, f"{path}/")
            elif after is not None:
                yield path, after.id  # replaces a tree of that name too
            elif before_tree is not None:
                yield from self._tree_changes(before_tree, None, f"{path}/")
            else:
                yield path, None

    def _walk(self, tree: pygit2.Tree, prefix: str) -> Iterator[tuple[str, pygit2.Oid]]:
        for entry in tree:
            if isinstance(entry, pygit2.Tree):
                yield from self._walk(entry, f"{prefix}{entry.name}/")
            elif entry.type == ObjectType.BLOB:
                yield f"{prefix}{entry.name}", entry.id

    def _write_blobs(self, contents: Mapping[str, bytes]) -> dict[str, pygit2.Oid]:
        pack_dir = Path(self._repo.path, "objects", "pack")
        if len(contents) >= _PACK_FROM_BLOBS and pack_dir.is_dir():
            ids = _write_pack(pack_dir, list(contents.values()))
            if ids is not None:
                return dict(zip(contents, ids, strict=True))
        return {path: self._repo.create_blob(data) for path, data in contents.items()}

    def _readme_tree(self) -> pygit2.Oid:
        builder = self._repo.TreeBuilder()
        builder.insert(
            statusdocs.README_PATH, self._repo.create_blob(statusdocs.README), FileMode.BLOB
        )
        return builder.write()

    def _empty_tree(self) -> pygit2.Oid:
        return self._repo.TreeBuilder().write()

    def _new_commit(self, message: str, tree: pygit2.Oid, parents: list[pygit2.Oid]) -> pygit2.Oid:
        # a new signature per commit: it carries the time of the commit
        name, email = self._author or (DEFAULT_AUTHOR_NAME, DEFAULT_AUTHOR_EMAIL)
        signature = pygit2.Signature(name, email)
        # None: no reference is moved here; _move_branch does that, compare-and-swap
        return self._repo.create_commit(None, signature, signature, message, tree, parents)

    def _move_branch(self, expected: pygit2.Oid | None, new: pygit2.Oid) -> bool:
        """Point the branch at ``new`` if it still points at ``expected`` (None: absent)."""
        if expected is None:
            try:
                self._repo.references.create(self._ref, new)
            except pygit2.AlreadyExistsError:
                return False
            return True
        ref = self._repo.references.get(self._ref)
        if ref is None or ref.target != expected:
            return False
        try:
            # libgit2 writes only if the reference still holds ref.target (== expected)
            ref.set_target(new, "status: commit")
        except pygit2.GitError:
            if self._ref_target(self._ref) != expected:
                return False
            raise
        return True

    def _head_id(self) -> pygit2.Oid | None:
        return self._ref_target(self._ref)

    def _ref_target(self, name: str) -> pygit2.Oid | None:
        ref = self._repo.references.get(name)
        if ref is None:
            return None
        target = ref.target
        if not isinstance(target, pygit2.Oid):
            raise StatusBranchError(f"{name} is a symbolic reference; delete it")
        return target

    def _commit(self, oid: pygit2.Oid) -> pygit2.Commit:
        return self._repo[oid].peel(pygit2.Commit)

    def _contains(self, descendant: pygit2.Oid, ancestor: pygit2.Oid) -> bool:
        return descendant == ancestor or self._repo.descendant_of(descendant, ancestor)

    def _merge_base(self, one: pygit2.Oid, other: pygit2.Oid) -> pygit2.Oid | None:
        base: pygit2.Oid | None = self._repo.merge_base(one, other)
        return base

    def _subjects(self, head: pygit2.Oid, base: pygit2.Oid | None, limit: int = 20) -> list[str]:
        subjects: list[str] = []
        commit: pygit2.Commit | None = self._commit(head)
        while commit is not None and commit.id != base:
            if len(subjects) == limit:
                subjects.append("...")
                break
            subjects.append(commit.message.split("\n", 1)[0])
            commit = commit.parents[0] if commit.parents else None
        return subjects

    def _refuse_checked_out(self) -> None:
        if self._repo.is_bare:
            return
        head = self._repo.references.get("HEAD")
        if head is not None and head.type == ReferenceType.SYMBOLIC and head.target == self._ref:
            raise StatusBranchError(
                f"the status branch {self.branch} is checked out in {self._repo.workdir}; "
                "the controller would change it under that working tree: check out another "
                "branch there"
            )

    def _new_callbacks(self) -> pygit2.RemoteCallbacks:
        return self._callbacks() if self._callbacks is not None else pygit2.RemoteCallbacks()

    def _safe_url(self) -> str:
        return redaction.redact(self.remote_url or "")


def _check_changes(changes: Mapping[str, bytes | None]) -> None:
    for path in changes:
        validate_path(path)
    for path in changes:
        parts = path.split("/")
        for end in range(1, len(parts)):
            folder = "/".join(parts[:end])
            if folder in changes:
                raise ValueError(
                    f"status branch path {folder!r} is both a file and a folder ({path!r}) "
                    "in one commit: write one of them"
                )


# -- pack writing: many new blobs as one pack file plus its index --------------------------


def _write_pack(pack_dir: Path, blobs: list[bytes]) -> list[pygit2.Oid] | None:
    """Write ``blobs`` into one pack in ``pack_dir``; their ids in order, or None when the
    repository is not a SHA-1 one (then loose objects are written instead)."""
    ids = [pygit2.hash(data) for data in blobs]
    if ids and len(ids[0].raw) != 20:
        return None
    unique = dict(zip((oid.raw for oid in ids), blobs, strict=True))
    pack = bytearray(b"PACK" + struct.pack(">II", 2, len(unique)))
    entries: list[tuple[bytes, int, int]] = []  # (object id, offset, crc32 of the entry)
    for raw, data in unique.items():
        entry = _object_header(ObjectType.BLOB, len(data)) + zlib.compress(data, 1)
        entries.append((raw, len(pack), zlib.crc32(entry)))
        pack += entry
        if len(pack) > _MAX_PACK_BYTES:
            return None
    pack_sum = hashlib.sha1(pack, usedforsecurity=False).digest()
    pack += pack_sum
    entries.sort()
    index = bytearray(b"\xfftOc" + struct.pack(">I", 2))
    counts = [0] * 256
    for raw, _, _ in entries:
        counts[raw[0]] += 1
    total = 0
    for count in counts:
        total += count
        index += struct.pack(">I", total)
    index += b"".join(raw for raw, _, _ in entries)
    index += b"".join(struct.pack(">I", crc) for _, _, crc in entries)
    index += b"".join(struct.pack(">I", offset) for _, offset, _ in entries)
    index += pack_sum
    index += hashlib.sha1(index, usedforsecurity=False).digest()
    name = f"pack-{pack_sum.hex()}"
    # the pack first, its index last: a pack is found through its index, so readers never
    # see one half written
    _write_file_atomically(pack_dir / f"{name}.pack", bytes(pack))
    _write_file_atomically(pack_dir / f"{name}.idx", bytes(index))
    return ids


def _object_header(kind: int, size: int) -> bytes:
    header = bytearray()
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    while size:
        header.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    header.append(byte)
    return bytes(header)


def _write_file_atomically(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix="tmp_status_")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o444)  # as Git leaves packs: read-only
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
