"""The controller wired together, end to end against real servers on loopback: a commit pushed
to a git daemon reaches the desired table by polling or at once by a signed webhook, status
lands on the remote's status branch while main is untouched; a working tree in development is
followed by its file watcher."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

from rciots.controller import service
from tests import aio, fleetcontroller, gitserver
from tests.fleetcontroller import EXAMPLE

BERLIN = ("acme-sensors", "berlin-gw-01")
BERLIN_OVERLAY = "tenants/acme-sensors/devices/berlin-gw-01/kustomization.yaml"
SECRET = b"a-long-random-webhook-secret"


def add_suffix(work: Path) -> dict[str, str]:
    text = (work / BERLIN_OVERLAY).read_text()
    return {BERLIN_OVERLAY: text + "nameSuffix: -v2\n"}


async def with_controller(
    settings: service.Settings, body: Callable[[service.Controller], Awaitable[None]]
) -> None:
    async with fleetcontroller.controller(settings) as running:
        await body(running)


def test_a_pushed_commit_is_polled_rendered_and_its_status_pushed(
    tmp_path: Path, git_daemon: gitserver.GitDaemon
) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", source=EXAMPLE)
    first = remote.head()
    settings = service.Settings(
        source=git_daemon.url("fleet.git"),
        state_dir=tmp_path / "state",
        poll_interval=0.2,
        status_window=0.1,
    )

    async def body(controller: service.Controller) -> None:
        table = controller.reconciler.table
        assert len(table) == 8
        assert table[BERLIN].revision == first
        pushed = remote.commit(add_suffix(remote.work), "berlin: suffix")

        def rendered() -> bool:
            """the pushed commit reaches the desired table"""
            return controller.reconciler.table[BERLIN].revision == pushed

        await aio.eventually(rendered, within=10.0)
        assert "-v2" in controller.reconciler.table[BERLIN].manifests
        # only berlin changed: the other devices keep the revision they were rendered from
        others = [s for k, s in controller.reconciler.table.items() if k != BERLIN]
        assert all(state.revision == first for state in others)

        def status_pushed() -> bool:
            """berlin's status on the remote's status branch names the new revision"""
            shown = (
                gitserver.run_git(
                    remote.bare,
                    "show",
                    "rciots/status:status/acme-sensors/berlin-gw-01.yaml",
                )
                if _has_branch(remote.bare, "rciots/status")
                else ""
            )
            return pushed in shown

        await aio.eventually(status_pushed, within=10.0)

    aio.run(with_controller(settings, body))
    # the tracked branch is people's: the controller never moved it
    assert remote.head() == gitserver.run_git(remote.work, "rev-parse", "HEAD").strip()
    files = gitserver.run_git(remote.bare, "ls-tree", "-r", "--name-only", "rciots/status")
    assert "status/northwind-retail/store-0042.yaml" in files.splitlines()
    assert not any(line.startswith("tenants/") for line in files.splitlines())


def _has_branch(bare: Path, branch: str) -> bool:
    refs = gitserver.run_git(bare, "for-each-ref", "--format=%(refname)", "refs/heads/")
    return f"refs/heads/{branch}" in refs.splitlines()


def post_webhook(port: int, body: bytes, signature: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/hooks/git",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": signature,
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 (loopback)
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_a_signed_webhook_fetches_at_once_and_a_bad_one_is_refused(
    tmp_path: Path, git_daemon: gitserver.GitDaemon
) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", source=EXAMPLE)
    settings = service.Settings(
        source=git_daemon.url("fleet.git"),
        state_dir=tmp_path / "state",
        poll_interval=3600,  # no poll during the test: only the webhook can wake the source
        status_window=0.1,
        webhook_secret=SECRET,
        listen=("127.0.0.1", 0),
    )

    async def body(controller: service.Controller) -> None:
        port = controller.http_port
        assert port is not None
        pushed = remote.commit(add_suffix(remote.work), "berlin: suffix")
        payload = json.dumps({"ref": "refs/heads/main", "after": pushed}).encode()
        signature = "sha256=" + hmac.new(SECRET, payload, hashlib.sha256).hexdigest()
        bad = await asyncio.to_thread(post_webhook, port, payload, "sha256=" + "0" * 64)
        assert bad == 401  # that a refused webhook wakes nothing is test_webhook_endpoint's
        assert controller.reconciler.table[BERLIN].revision != pushed
        assert await asyncio.to_thread(post_webhook, port, payload, signature) == 202

        def rendered() -> bool:
            """the webhook's commit reaches the desired table"""
            return controller.reconciler.table[BERLIN].revision == pushed

        await aio.eventually(rendered, within=5.0)
        # one fetch at start-up (the source loop does not fetch again as it starts), and the
        # webhook's
        assert controller.source.status.attempts == 2

    aio.run(with_controller(settings, body))


def test_a_working_tree_is_followed_as_saved(tmp_path: Path) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", source=EXAMPLE)
    work = remote.work
    head = gitserver.run_git(work, "rev-parse", "HEAD").strip()
    settings = service.Settings(
        source=str(work), state_dir=tmp_path / "state", worktree=True, status_window=0.1
    )

    async def body(controller: service.Controller) -> None:
        assert controller.reconciler.table[BERLIN].revision is not None
        (work / BERLIN_OVERLAY).write_text(add_suffix(work)[BERLIN_OVERLAY])

        def rendered() -> bool:
            """the saved file reaches the desired table"""
            return "-v2" in controller.reconciler.table[BERLIN].manifests

        await aio.eventually(rendered, within=5.0)
        await controller.status.flush() if controller.status else None

    aio.run(with_controller(settings, body))
    # the status branch is in the working tree's repository; its branch and files untouched
    assert gitserver.run_git(work, "rev-parse", "HEAD").strip() == head
    assert _has_branch(work / ".git", "rciots/status")
    status = gitserver.run_git(work, "show", "rciots/status:status/acme-sensors/berlin-gw-01.yaml")
    assert "worktree:" in status


def test_a_fleet_folder_inside_another_repository_gets_no_status_branch_there(
    tmp_path: Path,
) -> None:
    outer = tmp_path / "project"
    shutil.copytree(EXAMPLE, outer / "fleet")
    gitserver.run_git(None, "init", "-q", "-b", "main", str(outer))
    gitserver.run_git(outer, "add", "-A")
    gitserver.run_git(outer, "commit", "-qm", "project")
    settings = service.Settings(
        source=str(outer / "fleet"), state_dir=tmp_path / "state", worktree=True
    )

    async def body(controller: service.Controller) -> None:
        assert controller.reconciler.table[BERLIN].revision is not None
        assert controller.status is None

    aio.run(with_controller(settings, body))
    assert not _has_branch(outer / ".git", "rciots/status")
