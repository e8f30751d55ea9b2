"""Snapshots: what the source hands on (``Snapshot``), and readers for the command line.

A snapshot is the fleet repo's ``tenants/`` at one revision as path -> bytes. The loader and
renderer are pure and take one; ``read_worktree`` and ``read_git_revision`` are the I/O that
makes one for ``rciots validate``, ``render`` and ``diff`` (the controller's own Git source,
``gitsource``, with mirroring and change detection, builds ``Snapshot`` objects
incrementally; it shares ``read_git_tenants`` and ``read_git_entry`` with these readers, so a
file is refused the same way however it is read, and ``changed_paths`` with the working-tree
source, so that "what changed" is decided the same way too). Only ``tenants/`` is read.
Symlinks are reported and never followed, in a working tree and in a commit alike: the load
restrictor of the renderer must never be sidestepped by a link, so the repo is refused before
it gets that far.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rciots.controller import layout
from rciots.controller.diagnostics import Diagnostic

if TYPE_CHECKING:
    import pygit2

__all__ = [
    "MAX_FILE_BYTES",
    "Files",
    "Snapshot",
    "changed_paths",
    "read",
    "read_git_entry",
    "read_git_revision",
    "read_git_tenants",
    "read_worktree",
]

Files = dict[str, bytes]  # repo-relative path under tenants/ -> content
# Larger than any file a fleet repo needs; the YAML reader has its own, smaller limit.
MAX_FILE_BYTES = 8 * 1024 * 1024

_SYMLINK = (
    "symbolic links are not allowed in a fleet repo (they are never followed): "
    "replace it with the file it points to"
)
_TOO_LARGE = f"file is larger than {MAX_FILE_BYTES} bytes; fleet repo files must be smaller"
_SUBMODULE = "submodules are not allowed in a fleet repo"


@dataclass(frozen=True)
class Snapshot:
    """The fleet repo at one revision, as the controller's source hands it on. Immutable:
    ``files`` is never changed after the snapshot is made (a newer snapshot is a new object,
    which may share the unchanged bytes objects of the previous one)."""

    revision: str  # a commit id, or "worktree:<sha256>" for a working tree in development
    files: Mapping[str, bytes]  # tenants/... -> content
    problems: tuple[Diagnostic, ...] = ()  # files refused while reading (symlinks, size)
    # paths added, changed or removed since the previous snapshot; None: no previous one
    changed: frozenset[str] | None = None


def changed_paths(
    previous: Snapshot, files: Mapping[str, bytes], problems: Iterable[Diagnostic]
) -> frozenset[str]:
    """The paths that differ between ``previous`` and a new full read of the tree (``files``
    and its ``problems``): files added, changed or removed, and refused paths that appeared,
    vanished or are refused for another reason. What ``Snapshot.changed`` holds, for the
    sources that read the whole tree; bytes objects shared with ``previous`` compare at once."""
    before = {problem.path: problem.message for problem in previous.problems}
    after = {problem.path: problem.message for problem in problems}
    paths = set(previous.files) | set(files) | set(before) | set(after)
    return frozenset(
        path
        for path in paths
        if previous.files.get(path) != files.get(path) or before.get(path) != after.get(path)
    )


def read_worktree(root: Path) -> tuple[Files, list[Diagnostic]]:
    """Read ``root/tenants`` of a working tree without following symlinks."""
    snapshot: Files = {}
    problems: list[Diagnostic] = []
    top = root / layout.TENANTS_DIR
    if top.is_symlink():
        return snapshot, [Diagnostic(layout.TENANTS_DIR, 1, 1, _SYMLINK)]
    for directory, subdirs, filenames in os.walk(top, followlinks=False):
        for name in sorted(subdirs + filenames):
            full = Path(directory, name)
            relative = full.relative_to(root).as_posix()
            info = full.lstat()
            if stat.S_ISLNK(info.st_mode):
                problems.append(Diagnostic(relative, 1, 1, _SYMLINK))
            elif stat.S_ISREG(info.st_mode):
                if info.st_size > MAX_FILE_BYTES:
                    problems.append(Diagnostic(relative, 1, 1, _TOO_LARGE))
                else:
                    snapshot[relative] = full.read_bytes()
    return snapshot, problems


def read_git_revision(repository: Path, revision: str) -> tuple[Files, list[Diagnostic], str]:
    """Read ``tenants/`` of ``revision`` in the Git repository at (or above) ``repository``.

    Returns the snapshot, its problems and the full commit id. Raises ValueError with a
    message for a path that is no Git repository or a revision that does not resolve.
    """
    import pygit2  # the controller extra; imported here so the agent never needs it

    found = pygit2.discover_repository(str(repository))
    if found is None:
        raise ValueError(f"{repository} is not inside a Git repository")
    repo = pygit2.Repository(found)
    try:
        commit = repo.revparse_single(revision).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        raise ValueError(f"revision {revision!r} not found in {repository}") from None
    snapshot, problems = read_git_tenants(repo, commit)
    return snapshot, problems, str(commit.id)


def read_git_tenants(
    repo: pygit2.Repository, commit: pygit2.Commit
) -> tuple[Files, list[Diagnostic]]:
    """``tenants/`` of ``commit``: every regular file by path, and the entries refused by
    ``read_git_entry`` as problems. The one tree walk of the snapshot readers and the source."""
    import pygit2

    snapshot: Files = {}
    problems: list[Diagnostic] = []
    try:
        top = commit.tree / layout.TENANTS_DIR
    except KeyError:
        return snapshot, problems
    # an explicit stack rather than recursion: tree depth comes from the repo's author
    stack: list[tuple[str, pygit2.Object]] = [(layout.TENANTS_DIR, top)]
    while stack:
        path, obj = stack.pop()
        if isinstance(obj, pygit2.Tree):
            stack.extend((f"{path}/{entry.name}", entry) for entry in obj)
            continue
        content = read_git_entry(repo, path, obj.filemode, obj.id)
        if isinstance(content, Diagnostic):
            problems.append(content)
        else:
            snapshot[path] = content
    return snapshot, problems


def read_git_entry(
    repo: pygit2.Repository, path: str, filemode: int | None, oid: pygit2.Oid
) -> bytes | Diagnostic:
    """The rule for one entry of a commit that is not a folder: a regular file's content, or
    the problem that keeps it out of a snapshot (symbolic link, submodule, too large). The
    full walk (``read_git_tenants``) and the source's incremental snapshots both use it, so a
    file is refused the same way however it was read."""
    import pygit2

    if filemode == pygit2.enums.FileMode.LINK:
        return Diagnostic(path, 1, 1, _SYMLINK)
    if filemode == pygit2.enums.FileMode.COMMIT:
        return Diagnostic(path, 1, 1, _SUBMODULE)
    blob = repo[oid]  # KeyError for a missing object: the repository is damaged
    if not isinstance(blob, pygit2.Blob):
        return Diagnostic(path, 1, 1, _SUBMODULE)
    if blob.size > MAX_FILE_BYTES:
        return Diagnostic(path, 1, 1, _TOO_LARGE)
    return blob.data


def read(repository: Path, revision: str | None) -> tuple[Files, list[Diagnostic], str | None]:
    """The working tree (``revision`` None) or a Git revision of the repo at ``repository``:
    the snapshot, its problems and the commit id (None for a working tree). ValueError with a
    message for a missing directory, a path outside Git or an unknown revision."""
    if not repository.is_dir():
        raise ValueError(f"{repository} is not a directory")
    if revision is None:
        snapshot, problems = read_worktree(repository)
        return snapshot, problems, None
    return read_git_revision(repository, revision)
