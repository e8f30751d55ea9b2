"""The status writer: batching, no commit for repeated content, retries, nothing lost at stop."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rciots.controller import statusbranch, statusdocs, statuswriter
from tests import aio, gitserver

BRANCH = "rciots/status"
WINDOW = 0.1


def commits(repo: Path) -> int:
    """Commits on the status branch; 0 while it does not exist."""
    try:
        return int(gitserver.git(repo, "rev-list", "--count", f"refs/heads/{BRANCH}"))
    except subprocess.CalledProcessError as error:
        if "unknown revision" in error.stderr:  # no branch yet
            return 0
        raise


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    remote = gitserver.make_remote(tmp_path / "fleet.git", files={"tenants/a/tenant.yaml": "a\n"})
    return remote.bare


def test_many_sets_in_one_window_make_one_commit(
    bare: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rciots.controller.statuswriter")

    async def scenario() -> None:
        writer = statuswriter.StatusWriter(statusbranch.StatusBranch(bare), window=WINDOW)
        await writer.start()
        started = time.monotonic()
        for i in range(50):
            writer.set(f"status/acme/d{i}.yaml", f"{i}\n".encode())
            writer.set(f"status/acme/d{i}.yaml", f"{i} later\n".encode())  # the last wish wins
        await aio.eventually(lambda: commits(bare) > 0)
        assert time.monotonic() - started >= 0.9 * WINDOW  # it waited for the batch
        await asyncio.sleep(2 * WINDOW)
        assert commits(bare) == 2  # the README root commit and one commit of 50 files
        assert writer.pending == {}
        await writer.stop()

    aio.run(scenario())
    assert gitserver.run_git(bare, "show", f"{BRANCH}:status/acme/d7.yaml") == "7 later\n"
    lines = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    assert len(lines) == 1
    assert lines[0].startswith(f"committed 50 status file(s) to {BRANCH}")


def test_heartbeats_with_identical_documents_make_no_commit(bare: Path) -> None:
    seen = datetime(2027, 3, 1, 12, 0, 5, tzinfo=UTC)

    def document(at: datetime) -> bytes:
        status = statusdocs.DeviceStatus(
            "acme", "gw-1", statusdocs.APPLIED, last_seen=at, connected=True
        )
        return statusdocs.render_status(status)

    path = statusdocs.status_path("acme", "gw-1")

    async def scenario() -> None:
        writer = statuswriter.StatusWriter(statusbranch.StatusBranch(bare), window=WINDOW)
        await writer.start()
        writer.set(path, document(seen))
        await writer.flush()
        after_first = commits(bare)
        for beat in range(1, 100):  # a heartbeat every 20 s for half an hour
            writer.set(path, document(seen + timedelta(seconds=20 * beat)))
            assert writer.pending == {}
        await asyncio.sleep(2 * WINDOW)
        assert commits(bare) == after_first
        writer.set(path, document(seen + timedelta(hours=1)))  # the next hour: one change
        await writer.stop()
        assert commits(bare) == after_first + 1

    aio.run(scenario())


def test_a_wish_back_to_the_committed_content_cancels_the_queued_change(bare: Path) -> None:
    async def scenario() -> None:
        writer = statuswriter.StatusWriter(statusbranch.StatusBranch(bare), window=WINDOW)
        await writer.start()
        writer.set("status/acme/gw-1.yaml", b"a\n")
        await writer.flush()
        before = commits(bare)
        writer.set("status/acme/gw-1.yaml", b"b\n")
        writer.set("status/acme/gw-1.yaml", b"a\n")
        writer.set("status/acme/absent.yaml", None)  # deleting what is not there
        assert writer.pending == {}
        await writer.stop()
        assert commits(bare) == before

    aio.run(scenario())


def test_stop_writes_what_is_pending(bare: Path) -> None:
    async def scenario() -> None:
        writer = statuswriter.StatusWriter(statusbranch.StatusBranch(bare), window=60.0)
        await writer.start()
        writer.set("status/acme/gw-1.yaml", b"last words\n")
        writer.set("pending/acme/p.yaml", b"p\n")
        await writer.stop()  # long before the window ends
        assert writer.pending == {}

    aio.run(scenario())
    assert gitserver.run_git(bare, "show", f"{BRANCH}:status/acme/gw-1.yaml") == "last words\n"


def test_a_restarted_writer_does_not_write_what_is_committed(bare: Path) -> None:
    async def run_once(content: bytes) -> None:
        writer = statuswriter.StatusWriter(statusbranch.StatusBranch(bare), window=WINDOW)
        await writer.start()
        writer.set("status/acme/gw-1.yaml", content)
        writer.set("status/acme/gw-2.yaml", b"two\n")
        await writer.stop()

    aio.run(run_once(b"one\n"))
    before = commits(bare)
    aio.run(run_once(b"one\n"))
    assert commits(bare) == before
    aio.run(run_once(b"one, changed\n"))
    assert commits(bare) == before + 1


def test_deletions_are_committed(bare: Path) -> None:
    async def scenario() -> None:
        writer = statuswriter.StatusWriter(statusbranch.StatusBranch(bare), window=WINDOW)
        await writer.start()
        writer.set("pending/acme/p.yaml", b"p\n")
        await writer.flush()
        writer.set("pending/acme/p.yaml", None)
        await writer.stop()

    aio.run(scenario())
    assert gitserver.git(bare, "ls-tree", "-r", "--name-only", BRANCH) == "README.md"


def test_a_failed_commit_keeps_the_changes_and_retries(tmp_path: Path) -> None:
    work = tmp_path / "fleet"
    gitserver.run_git(None, "init", "-q", "-b", "main", str(work))
    gitserver.git(work, "commit", "-q", "--allow-empty", "-m", "fleet")
    gitserver.git(work, "symbolic-ref", "HEAD", f"refs/heads/{BRANCH}")  # someone checked it out

    async def scenario() -> None:
        writer = statuswriter.StatusWriter(
            statusbranch.StatusBranch(work), window=0.05, max_retry_delay=0.1
        )
        await writer.start()
        writer.set("status/acme/gw-1.yaml", b"1\n")
        with pytest.raises(statusbranch.StatusBranchError, match="checked out"):
            await writer.flush()
        assert "status/acme/gw-1.yaml" in writer.pending
        gitserver.git(work, "symbolic-ref", "HEAD", "refs/heads/main")  # they check out main again
        await aio.eventually(lambda: commits(work) == 2)
        await writer.stop()

    aio.run(scenario())


def test_a_failed_push_is_retried_until_the_remote_is_back(
    git_daemon: gitserver.GitDaemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", files={"tenants/a/t.yaml": "a\n"})
    mirror = tmp_path / "mirror.git"
    gitserver.run_git(None, "clone", "-q", "--bare", str(remote.bare), str(mirror))
    branch = statusbranch.StatusBranch(
        mirror, remote_url=git_daemon.url("fleet.git"), retry_delay=0.01
    )

    async def scenario() -> None:
        writer = statuswriter.StatusWriter(branch, window=0.05, max_retry_delay=0.1)
        await writer.start()
        git_daemon.stop()
        writer.set("status/acme/gw-1.yaml", b"1\n")
        await aio.eventually(lambda: "pushing rciots/status failed" in caplog.text)
        assert commits(mirror) == 2  # committed locally all the same
        git_daemon.start()
        await aio.eventually(lambda: commits(remote.bare) == 2)
        await writer.stop()

    aio.run(scenario())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings
    assert all(r.name == "rciots.controller.statuswriter" for r in warnings)
    assert gitserver.run_git(remote.bare, "show", f"{BRANCH}:status/acme/gw-1.yaml") == "1\n"


def test_set_refuses_a_bad_path_at_once(bare: Path) -> None:
    writer = statuswriter.StatusWriter(statusbranch.StatusBranch(bare))
    with pytest.raises(ValueError, match="not valid"):
        writer.set("../outside.yaml", b"x")
    assert writer.pending == {}


def test_a_window_must_be_positive(bare: Path) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        statuswriter.StatusWriter(statusbranch.StatusBranch(bare), window=0)
