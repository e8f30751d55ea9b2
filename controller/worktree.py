"""The fleet repo working tree as the editing commands see it.

``rciots token create`` and ``rciots device ...`` check what the user named against the working
tree, read the file to change, and write the result here. The renderer and the loader never
follow symbolic links inside a fleet repo, so these functions refuse them too: every path is
walked one directory at a time with ``O_NOFOLLOW``, which also holds when a link appears while
a command runs. Writes are atomic (a temporary file in the same directory, fsync, rename), so
an interrupted command leaves the old file or the new one, never half of one.

Paths are given relative to the repo root with ``/`` separators, as ``layout`` builds them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from rciots.controller import layout

__all__ = [
    "Kind",
    "WorktreeError",
    "has_overlay",
    "kind_of",
    "read_text",
    "require_repo",
    "require_template",
    "require_tenant",
    "write_text",
]

Kind = Literal["missing", "file", "directory", "other"]

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class WorktreeError(Exception):
    """What a command cannot do in the working tree; the message says what to do instead."""


def kind_of(root: Path, relpath: str, *, verb: Literal["read", "write"] = "read") -> Kind:
    """What is at ``relpath``; WorktreeError if any part of the way is a symbolic link.

    ``verb`` says what the caller is about to do, for the message.
    """
    *parents, name = relpath.split("/")
    try:
        with _open_directory(root, parents, relpath, verb=verb, create=False) as directory:
            return _kind_in(directory, name, relpath, verb=verb)
    except FileNotFoundError:
        return "missing"


def read_text(root: Path, relpath: str) -> str:
    """The UTF-8 text of a regular file; WorktreeError if it is a link, missing or not text."""
    if kind_of(root, relpath) != "file":
        raise WorktreeError(f"cannot read {relpath}: it is missing or not a regular file")
    *parents, name = relpath.split("/")
    with _open_directory(root, parents, relpath, verb="read", create=False) as directory:
        # O_NOFOLLOW again: a link put in place since the check above is refused, not read.
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
        with os.fdopen(fd, "rb") as file:
            data = file.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise WorktreeError(
            f"cannot read {relpath}: byte {error.start} is not UTF-8 (save the file as UTF-8)"
        ) from None


def write_text(root: Path, relpath: str, text: str, *, new: bool) -> None:
    """Write ``text`` atomically.

    ``new=True`` creates the file and its missing directories, and refuses if the file exists;
    ``new=False`` replaces an existing regular file and keeps its permission bits.
    """
    *parents, name = relpath.split("/")
    with _open_directory(root, parents, relpath, verb="write", create=new) as directory:
        kind = _kind_in(directory, name, relpath, verb="write")
        if new and kind != "missing":
            raise WorktreeError(f"{relpath} already exists")
        if not new and kind != "file":
            raise WorktreeError(f"cannot write {relpath}: it is not a regular file")
        mode = None if new else _mode_of(directory, name)
        _write_atomically(directory, name, relpath, text.encode("utf-8"), mode)


def require_repo(root: Path) -> None:
    if not root.is_dir():
        raise WorktreeError(
            f"fleet repo {str(root)!r} is not a directory (give its working tree with --repo)"
        )


def require_tenant(root: Path, tenant: str) -> None:
    relpath = layout.tenant_file(tenant)
    if kind_of(root, relpath) != "file":
        raise WorktreeError(
            f"unknown tenant {tenant!r}: {relpath} does not exist (create the tenant first)"
        )


def require_template(root: Path, tenant: str, template: str) -> None:
    directory = layout.template_dir(tenant, template)
    if not any(
        kind_of(root, f"{directory}/{name}") == "file" for name in layout.KUSTOMIZATION_NAMES
    ):
        raise WorktreeError(
            f"unknown template {template!r}: {directory}/ has no "
            f"{', '.join(layout.KUSTOMIZATION_NAMES[:-1])} or {layout.KUSTOMIZATION_NAMES[-1]} "
            "(create the template first or choose another --template)"
        )


def has_overlay(root: Path, tenant: str, device: str) -> str | None:
    """The path of the device's own kustomization, if it has one."""
    directory = layout.device_dir(tenant, device)
    for name in layout.KUSTOMIZATION_NAMES:
        if kind_of(root, f"{directory}/{name}") != "missing":
            return f"{directory}/{name}"
    return None


@contextlib.contextmanager
def _open_directory(
    root: Path, parents: list[str], relpath: str, *, verb: str, create: bool
) -> Iterator[int]:
    """Open the directory holding ``relpath`` without following links; close it afterwards."""
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, part in enumerate(parents):
            shown = "/".join(parents[: depth + 1])
            child = _open_child(directory, part, shown, relpath, verb=verb, create=create)
            os.close(directory)
            directory = child
        yield directory
    finally:
        os.close(directory)


def _open_child(
    directory: int, part: str, shown: str, relpath: str, *, verb: str, create: bool
) -> int:
    kind = _kind_in(directory, part, relpath, verb=verb, shown=shown)
    if kind == "missing" and create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, 0o777, dir_fd=directory)
    elif kind == "missing":
        raise FileNotFoundError(shown)
    elif kind != "directory":
        raise WorktreeError(f"cannot {verb} {relpath}: {shown} is not a directory")
    try:
        return os.open(part, _DIRECTORY_FLAGS, dir_fd=directory)
    except OSError:
        # It changed since we looked: a link or a file took its place.
        raise WorktreeError(
            f"cannot {verb} {relpath}: {shown} changed while this command ran (run it again)"
        ) from None


def _kind_in(directory: int, name: str, relpath: str, *, verb: str, shown: str = "") -> Kind:
    try:
        mode = os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return "missing"
    if stat.S_ISLNK(mode):
        raise WorktreeError(
            f"refusing to {verb} {relpath}: {shown or relpath} is a symbolic link (fleet repo "
            "files are never read or written through links; replace it with the real file "
            "or directory)"
        )
    if stat.S_ISREG(mode):
        return "file"
    return "directory" if stat.S_ISDIR(mode) else "other"


def _mode_of(directory: int, name: str) -> int:
    return stat.S_IMODE(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode)


def _write_atomically(
    directory: int, name: str, relpath: str, data: bytes, mode: int | None
) -> None:
    temporary = f".{name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, 0o666, dir_fd=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            if mode is not None:
                os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        _publish(directory, temporary, name, relpath, replace=mode is not None)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=directory)
    os.fsync(directory)


def _publish(directory: int, temporary: str, name: str, relpath: str, *, replace: bool) -> None:
    if replace:
        os.replace(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
        return
    # A hard link, unlike a rename, fails when the name was taken meanwhile: a file created
    # by someone else between our check and now is never overwritten.
    try:
        os.link(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
    except FileExistsError:
        raise WorktreeError(f"{relpath} already exists") from None
