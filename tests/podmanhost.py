"""The real podman for tests: an environment that works on these machines, a busybox image
made from Debian's busybox-static, and names that carry one run's suffix, so that a test
touches nothing else the machine runs and removes all it made.

Used by the podman applier's tests and the end-to-end agent tests.
"""

from __future__ import annotations

import io
import json
import os
import resource
import secrets
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Host:
    """The real podman as the tests run it: environment, image, and this run's name suffix."""

    env: dict[str, str]
    image: str
    suffix: str

    def podman(self, *arguments: str, stdin: bytes = b"") -> str:
        done = subprocess.run(
            ["podman", *arguments], input=stdin, capture_output=True, env=self.env, timeout=60
        )
        if done.returncode != 0:
            raise AssertionError(f"podman {' '.join(arguments)}: {done.stderr.decode()}")
        return done.stdout.decode()

    def pods(self) -> dict[str, str]:
        """This run's pods: name -> status."""
        listed = json.loads(self.podman("pod", "ps", "--format", "json") or "[]")
        return {p["Name"]: p["Status"] for p in listed if self.suffix in p["Name"]}

    def pod_ids(self) -> dict[str, str]:
        listed = json.loads(self.podman("pod", "ps", "--format", "json") or "[]")
        return {p["Name"]: p["Id"] for p in listed if self.suffix in p["Name"]}

    def names(self, what: str) -> set[str]:
        """This run's volumes or secrets."""
        listed = self.podman(what, "ls", "--format", "{{.Name}}").split()
        return {name for name in listed if self.suffix in name}

    def logs(self, container: str, expected: str) -> str:
        """A container's output, once it holds ``expected`` (containers start asynchronously)."""
        deadline = time.monotonic() + 10
        while True:
            text = self.podman("logs", container)
            if expected in text or time.monotonic() > deadline:
                return text
            time.sleep(0.1)


def _missing_tools() -> list[str]:
    missing = [name for name in ("podman", "runc") if shutil.which(name) is None]
    busybox = shutil.which("busybox")
    if busybox is None or not _is_static(Path(busybox)):
        missing.append("busybox-static")
    return missing


def _is_static(path: Path) -> bool:
    """Whether an ELF executable names no program interpreter (runs in an empty image)."""
    data = path.read_bytes()
    if data[:5] != b"\x7fELF\x02":  # 64-bit ELF; anything else is not what busybox-static is
        return False
    phoff = int.from_bytes(data[0x20:0x28], "little")
    size = int.from_bytes(data[0x36:0x38], "little")
    count = int.from_bytes(data[0x38:0x3A], "little")
    types = [
        int.from_bytes(data[phoff + i * size : phoff + i * size + 4], "little")
        for i in range(count)
    ]
    return 3 not in types  # PT_INTERP


def _containers_conf(folder: Path) -> Path:
    """runc, and default ulimits within this machine's hard limits (podman's defaults exceed
    them on some machines, and crun refuses hybrid cgroups: see TEST-RECIPES)."""

    def limit(which: int, cap: int) -> int:
        hard = resource.getrlimit(which)[1]
        return cap if hard == resource.RLIM_INFINITY else min(hard, cap)

    nofile = limit(resource.RLIMIT_NOFILE, 20000)
    nproc = limit(resource.RLIMIT_NPROC, 32768)
    path = folder / "containers.conf"
    path.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
    )
    return path


def _busybox_image() -> bytes:
    """A tar of a root file system holding busybox and the commands the tests run."""
    busybox = shutil.which("busybox")
    assert busybox is not None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo("bin")
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        tar.addfile(directory)
        tar.add(busybox, arcname="bin/busybox")
        for command in ("sh", "sleep", "echo", "cat", "ls"):
            link = tarfile.TarInfo(f"bin/{command}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buffer.getvalue()


@contextmanager
def running_podman(folder: Path) -> Iterator[Host]:
    """A Host with its image imported; on the way out, this run's pods, volumes, secrets and
    image are removed. Skips (not root, tools missing) or fails (root: they should be there)."""
    missing = _missing_tools()
    if missing:
        if os.geteuid() == 0:
            pytest.fail(
                f"{', '.join(missing)} missing: scripts/test installs them (scripts/test-tools)"
            )
        pytest.skip(
            f"{', '.join(missing)} not installed, and installing needs root (scripts/test-tools)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CONTAINERS_CONF": str(_containers_conf(folder))}
    suffix = secrets.token_hex(3)
    image = f"localhost/rciots-test-busybox:{suffix}"
    made = Host(env, image, suffix)
    made.podman("import", "--change", "ENV=PATH=/bin", "-", image, stdin=_busybox_image())
    try:
        yield made
    finally:
        pods = list(made.pods())
        if pods:
            made.podman("pod", "rm", "--force", "--time", "0", *pods)
        for what in ("volume", "secret"):
            names = sorted(made.names(what))
            if names:
                made.podman(what, "rm", *names)
        made.podman("rmi", image)
