"""``rciots kustomize build DIR``: the in-process renderer as a drop-in for ``kustomize build``.

Same bytes on stdout as ``kustomize build DIR`` for the supported features; a message naming
the file and exit status 1 on error. Files are read from disk lazily and never through a
symbolic link. As in kustomize, each kustomization reads files only at or below its own
directory, while it may name kustomization directories elsewhere as resources.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path
from typing import Any

from rciots.controller.render import RenderError, engine

__all__ = ["DiskSource", "register", "run_build"]


class DiskSource:
    """Files under ``top``, read on demand and once (a build sees one state of the tree);
    a path through a symlink is refused."""

    def __init__(self, top: Path) -> None:
        self.top = top
        # paths are joined as strings: a build reads thousands of files, and pathlib's
        # objects cost more than the system calls
        self.prefix = os.path.join(top, "")
        self.files: dict[str, bytes | None] = {}
        self.stats: dict[str, os.stat_result | None] = {}

    def _lstat(self, path: str) -> os.stat_result | None:
        if path in self.stats:
            return self.stats[path]
        parent = path.rpartition("/")[0]
        if path and parent != path:
            above = self._lstat(parent)  # each folder on the way is checked once
            if above is None or not stat.S_ISDIR(above.st_mode):
                self.stats[path] = None
                return None
        try:
            info: os.stat_result | None = os.lstat(self.prefix + path)
        except (FileNotFoundError, NotADirectoryError):
            info = None
        if info is not None and stat.S_ISLNK(info.st_mode):
            raise RenderError(path, "symbolic links are never followed")
        self.stats[path] = info
        return info

    def get(self, path: str) -> bytes | None:
        if path not in self.files:
            info = self._lstat(path)
            regular = info is not None and stat.S_ISREG(info.st_mode)
            self.files[path] = _read_bytes(self.prefix + path) if regular else None
        return self.files[path]

    def is_directory(self, path: str) -> bool:
        info = self._lstat(path)
        return info is not None and stat.S_ISDIR(info.st_mode)


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def register(commands: Any) -> None:
    kustomize = commands.add_parser(
        "kustomize",
        help="build Kustomize directories with the built-in renderer",
        description="Kustomize, in process: the renderer the controller uses for devices.",
    )
    actions = kustomize.add_subparsers(dest="kustomize_command", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="print the manifests of a kustomization directory",
        description=(
            "Print what `kustomize build DIR` prints, for the supported features (see "
            "docs/rendering.md). Unsupported features (helm charts, plugins, remote "
            "resources) are refused with a message naming the file. Exit 0 on success, 1 on "
            "error."
        ),
    )
    build.add_argument("directory", type=Path, metavar="DIR", help="the kustomization directory")
    build.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    directory = args.directory.absolute()
    if not directory.is_dir():
        print(f"rciots: error: {args.directory} is not a directory", file=sys.stderr)
        return 1
    top = Path(directory.anchor)
    entry = directory.relative_to(top).as_posix()
    try:
        rendered = engine.build_from(DiskSource(top), entry, cache=engine.Cache())
    except RenderError as exc:
        here = Path.cwd().relative_to(top).as_posix()
        shown = os.path.relpath(top / exc.path) if exc.path else ""
        message = exc.message.replace(here + "/", "") if here != "." else exc.message
        print(f"rciots: error: {shown}: {message}" if shown else message, file=sys.stderr)
        return 1
    sys.stdout.write(rendered.yaml)
    return 0
