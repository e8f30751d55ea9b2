"""Durable file writes: a file is either its old content or its new content, never half.

Position in the flow: under everything the agent keeps on disk (``state``: identity, desired
and applied bundles, inventory; the podman applier's record; the directory applier's bundles)
and the controller's CA files (``castore``). A temporary file in the same folder is written
and fsynced, renamed over the target, then the folder is fsynced so that the rename itself
survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["fsync_folder", "write_atomically"]


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``, created with permission bits ``mode`` (default: the
    owner only, since state files hold keys and tokens)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)  # whatever the umask let through
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Make what changed in ``folder`` (a rename, a new or removed entry) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
