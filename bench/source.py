"""Benchmark: the Git source on a large fleet repo, over a real git daemon on loopback.

A fleet repo with N files under tenants/ (20 tenants, one device.yaml per device plus a small
template each) is made with ``git fast-import`` and served by ``git daemon``. The source's
mirror then measures, medians of several runs:

1. the first fetch (a clone) of the whole repo;
2. a full snapshot of a commit (every blob read) and, for comparison, the command line's
   reader ``snapshots.read_git_revision``;
3. a fetch that brings one new commit changing one file;
4. an incremental snapshot after one changed file, and after 100 changed files (target:
   "a few ms" for one file among 20,000), checked equal to the full snapshot; and, for
   comparison, libgit2's own tree diff of two such commits.

Run: .venv/bin/python bench/source.py [--files 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pygit2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the loopback git daemon helper lives with the tests

from rciots.controller import gitsource, snapshots  # noqa: E402
from tests import gitserver  # noqa: E402

T = TypeVar("T")
TENANTS = 20


def device_yaml(tenant: int, device: int, generation: int = 0) -> bytes:
    return (
        "apiVersion: rciots.io/v1\nkind: Device\nmetadata:\n"
        f"  name: d{device:05d}\n  labels:\n    site: s{device % 50}\n"
        f"    generation: g{generation}\nspec:\n  approved: true\n  template: app\n"
    ).encode()


def fast_import(bare: Path, stream: bytes) -> None:
    subprocess.run(
        ["git", "-C", str(bare), "fast-import", "--quiet", "--force"], input=stream, check=True
    )


def blob_command(path: str, data: bytes) -> bytes:
    return f"M 100644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n"


def commit_stream(message: str, changes: list[bytes], *, first: bool) -> bytes:
    header = (
        "commit refs/heads/main\ncommitter bench <bench@example.invalid> 1700000000 +0000\n"
        f"data {len(message)}\n{message}\n"
    ).encode()
    parent = b"" if first else b"from refs/heads/main^0\n"
    return header + parent + b"".join(changes) + b"\n"


def make_fleet(bare: Path, files: int) -> list[str]:
    """A bare repo with ``files`` files under tenants/; the paths of the device files."""
    gitserver.run_git(None, "init", "-q", "--bare", "-b", "main", str(bare))
    per_tenant = max(1, files // TENANTS)
    changes: list[bytes] = []
    devices: list[str] = []
    for tenant in range(TENANTS):
        base = f"tenants/t{tenant:02d}"
        changes.append(blob_command(f"{base}/tenant.yaml", b"kind: Tenant\n"))
        changes.append(blob_command(f"{base}/templates/app/kustomization.yaml", b"resources: []\n"))
        for device in range(per_tenant - 2):
            path = f"{base}/devices/d{device:05d}/device.yaml"
            devices.append(path)
            changes.append(blob_command(path, device_yaml(tenant, device)))
    fast_import(bare, commit_stream("fleet", changes, first=True))
    return devices


def change_files(bare: Path, paths: list[str], generation: int) -> str:
    changes = [
        blob_command(path, device_yaml(0, index, generation)) for index, path in enumerate(paths)
    ]
    fast_import(bare, commit_stream(f"change {generation}", changes, first=False))
    return gitserver.run_git(bare, "rev-parse", "refs/heads/main").strip()


def timed(function: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        served = root / "served"
        served.mkdir()
        bare = served / "fleet.git"
        build, devices = timed(lambda: make_fleet(bare, options.files))
        total = len(devices) + 2 * TENANTS
        print(f"fleet repo: {total} files under tenants/ (made in {build:.1f} s)")

        with gitserver.GitDaemon(served) as daemon:
            mirror = gitsource.GitMirror(
                gitsource.SourceConfig(url=daemon.url("fleet.git"), mirror=root / "mirror")
            )
            clone, fetched = timed(mirror.fetch)
            print(f"first fetch (clone) over git://     {ms(clone)}")

            fulls = [timed(lambda: mirror.snapshot(fetched.revision, None)) for _ in range(3)]
            full = fulls[-1][1]
            assert len(full.files) == total
            print(
                f"full snapshot                       {ms(statistics.median(t for t, _ in fulls))}"
            )
            cli = [
                timed(lambda: snapshots.read_git_revision(mirror.repository_path, fetched.revision))
                for _ in range(3)
            ]
            print(f"read_git_revision (CLI reader)      {ms(statistics.median(t for t, _ in cli))}")

            previous = full
            generation = 0
            for label, count in (("1 changed file", 1), ("100 changed files", 100)):
                fetch_times, snapshot_times = [], []
                for run in range(options.runs):
                    generation += 1
                    start = (run * count) % (len(devices) - count)
                    revision = change_files(bare, devices[start : start + count], generation)
                    fetch_time, fetched = timed(mirror.fetch)
                    assert fetched.revision == revision
                    snapshot_time, made = timed(
                        functools.partial(mirror.snapshot, revision, previous)
                    )
                    assert made.changed is not None
                    assert len(made.changed) == count
                    fetch_times.append(fetch_time)
                    snapshot_times.append(snapshot_time)
                    previous = made
                check = mirror.snapshot(previous.revision, None)
                assert dict(check.files) == dict(previous.files), "incremental != full"
                print(f"fetch of a commit, {label:<17}{ms(statistics.median(fetch_times))}")
                print(
                    f"incremental snapshot, {label:<14}{ms(statistics.median(snapshot_times))}"
                    f"   (min {ms(min(snapshot_times)).strip()})"
                )
            # why the source compares trees itself: libgit2's tree diff parses every subtree
            repo = pygit2.Repository(str(mirror.repository_path))
            old_tree = repo[fetched.revision].peel(pygit2.Commit).tree / "tenants"
            new_tree = repo[previous.revision].peel(pygit2.Commit).tree / "tenants"
            diffs = [timed(lambda: len(old_tree.diff_to_tree(new_tree))) for _ in range(3)]
            print(
                f"(libgit2 diff_to_tree of tenants/   {ms(statistics.median(t for t, _ in diffs))})"
            )


if __name__ == "__main__":
    main()
