"""Benchmark: commits of device status files to the status branch, against the git CLI.

The status writer commits ``status/<tenant>/<device>.yaml`` documents (``statusdocs``) for N
devices (default 10,000 over 10 tenants) to a bare repository. Measured in the same run, medians
of --runs:

1. ``StatusBranch.commit``: the first commit of all N files (a new branch: the README root
   commit plus one commit of N files); then a commit changing 100 files; then one changing 1;
2. the same three commits made by ``git fast-import`` (one process per commit, which writes a
   pack, as the first commit here does): the reference, with the ratio ours / reference;
3. for scale: the first commit through a pygit2 in-memory index over all files (the way this
   module does not do it), ``StatusBranch.read`` of all N files (a restart) and one push of
   the first commit to a bare repository over file://.

Target (issue 4): a first commit of 10,000 files <= 2 s; a commit of 100 files in tens of ms.

Run: .venv/bin/python bench/status_commit.py [--devices 10000] [--tenants 10] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pygit2

from rciots.controller import statusbranch, statusdocs

REVISION = "5f3c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e"
DIGEST = "sha256:" + "ab" * 32
BRANCH = "rciots/status"


def documents(
    devices: int, tenants: int, revision: str, only: int | None = None
) -> dict[str, bytes]:
    """Status documents of ``devices`` devices (or of the first ``only`` of them)."""
    seen = datetime(2027, 3, 1, 12, tzinfo=UTC)
    files: dict[str, bytes] = {}
    for i in range(devices if only is None else only):
        tenant, device = f"tenant-{i % tenants:02d}", f"device-{i:05d}"
        status = statusdocs.DeviceStatus(
            tenant,
            device,
            statusdocs.APPLIED,
            desired_revision=revision,
            desired_digest=DIGEST,
            attempted_revision=revision,
            applied_revision=revision,
            applied_digest=DIGEST,
            last_seen=seen + timedelta(seconds=i),
            connected=True,
        )
        files[statusdocs.status_path(tenant, device)] = statusdocs.render_status(status)
    return files


def new_bare(root: Path, name: str) -> Path:
    path = root / name
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def fast_import(repo: Path, files: Mapping[str, bytes], parent: bool) -> None:
    """One commit of ``files`` on BRANCH by ``git fast-import`` (on top of BRANCH if
    ``parent``)."""
    stream = bytearray()
    message = b"status"
    stream += f"commit refs/heads/{BRANCH}\n".encode()
    stream += b"committer RCIoTs <controller@rciots.invalid> 1800000000 +0000\n"
    stream += b"data %d\n%s\n" % (len(message), message)
    if parent:
        stream += f"from refs/heads/{BRANCH}^0\n".encode()
    for path, data in files.items():
        stream += b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data)
    subprocess.run(
        ["git", "-C", str(repo), "fast-import", "--quiet"], input=bytes(stream), check=True
    )


def index_commit(repo_path: Path, files: Mapping[str, bytes]) -> None:
    """The first commit through a pygit2 in-memory index over every file."""
    repo = pygit2.Repository(str(repo_path))
    index = pygit2.Index()
    for path, data in files.items():
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), pygit2.enums.FileMode.BLOB))
    tree = index.write_tree(repo)
    signature = pygit2.Signature("RCIoTs", "controller@rciots.invalid")
    repo.create_commit(f"refs/heads/{BRANCH}", signature, signature, "status", tree, [])


def one_run(
    root: Path,
    all_files: Mapping[str, bytes],
    batches: list[dict[str, bytes]],
    ours: dict[str, list[float]],
    cli: dict[str, list[float]],
    extra: dict[str, list[float]],
) -> None:
    """One measurement of everything, in fresh repositories under ``root``."""
    repo = new_bare(root, "ours.git")
    branch = statusbranch.StatusBranch(repo)
    ours["first"].append(timed(lambda: branch.commit(all_files, "first")))
    for key, batch in zip(("100", "1"), batches, strict=True):
        ours[key].append(timed(lambda: branch.commit(batch, "change")))  # noqa: B023

    reference = new_bare(root, "cli.git")
    cli["first"].append(timed(lambda: fast_import(reference, all_files, False)))
    for key, batch in zip(("100", "1"), batches, strict=True):
        cli[key].append(timed(lambda: fast_import(reference, batch, True)))  # noqa: B023

    indexed = new_bare(root, "index.git")
    extra["index"].append(timed(lambda: index_commit(indexed, all_files)))
    extra["read"].append(timed(lambda: statusbranch.StatusBranch(repo).read()))

    target = new_bare(root, "remote.git")
    pushing = statusbranch.StatusBranch(repo, remote_url=f"file://{target}")
    extra["push"].append(timed(pushing.push))
    assert pygit2.Repository(str(target)).references.get(f"refs/heads/{BRANCH}") is not None


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    n, tenants, runs = args.devices, args.tenants, args.runs

    all_files = documents(n, tenants, REVISION)
    changes = {
        count: [documents(n, tenants, f"{run:040x}", only=count) for run in range(runs)]
        for count in (100, 1)
    }
    size = sum(len(data) for data in all_files.values())
    print(f"{n} status files over {tenants} tenants, {size / n:.0f} bytes each; {runs} runs\n")

    ours: dict[str, list[float]] = {"first": [], "100": [], "1": []}
    cli: dict[str, list[float]] = {"first": [], "100": [], "1": []}
    extra: dict[str, list[float]] = {"index": [], "read": [], "push": []}
    for run in range(runs):
        with tempfile.TemporaryDirectory(prefix="status-bench-") as temporary:
            one_run(
                Path(temporary), all_files, [changes[100][run], changes[1][run]], ours, cli, extra
            )

    print(f"{'commit':<28}{'StatusBranch':>14}{'git fast-import':>18}{'ratio':>8}")
    for key, label in (
        ("first", f"first, {n} files"),
        ("100", "100 files changed"),
        ("1", "1 file changed"),
    ):
        mine, theirs = median(ours[key]), median(cli[key])
        print(f"{label:<28}{mine * 1000:>11.1f} ms{theirs * 1000:>15.1f} ms{mine / theirs:>8.2f}")
    print()
    first = median(ours["first"])
    print(
        f"first commit via a pygit2 index over all files: {median(extra['index']) * 1000:.0f} ms "
        f"({median(extra['index']) / first:.1f}x StatusBranch)"
    )
    print(f"StatusBranch.read of {n} files (a restart):     {median(extra['read']) * 1000:.0f} ms")
    print(f"push of the first commit over file://:          {median(extra['push']) * 1000:.0f} ms")
    verdict = "meets" if first <= 2.0 else "MISSES"
    print(f"\ntarget: first commit of 10,000 files <= 2 s: {first:.2f} s ({verdict} it at n={n})")


if __name__ == "__main__":
    main()
