"""`rciots demo` as a newcomer runs it: real processes, the status page's API, a commit.

Within 90 s the API shows at least three devices in sync and one pending enrollment; a template
commit in the printed fleet repo is applied by the tenant's online devices within 30 s; SIGINT
stops every process the demo started within a few seconds. The commands of "What to try" run,
as printed, on the demo's fleet repo.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from rciots.controller import cmd_demo
from tests import gitserver
from tests.processes import Process

pytestmark = pytest.mark.e2e

RCIOTS = Path(sys.executable).parent / "rciots"
SMALL_TEMPLATE = "tenants/acme-sensors/templates/mqtt-edge-small/kustomization.yaml"


def printed(demo: Process, label: str) -> str:
    return demo.wait_for(f"{label}: ", within=60).split(f"{label}: ", 1)[1].strip()


def devices(url: str, token: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 -- the demo's page on loopback
        f"{url}api/v1/devices", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
        listed: list[dict[str, Any]] = json.loads(answer.read())
    return listed


def processes_under(folder: Path) -> list[int]:
    """Pids of live processes whose command line names ``folder`` (only to check)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in command:
            found.append(int(entry.name))
    return found


def test_the_demo_runs_follows_a_commit_and_stops(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    started = time.monotonic()
    demo = Process(
        [str(RCIOTS), "demo", "--workdir", str(workdir), "--no-browser"], with_stdout=True
    )
    try:
        url = printed(demo, "status page")
        token = printed(demo, "admin token")
        repo = Path(printed(demo, "fleet repo"))
        demo.wait_for("ready:", within=90 - (time.monotonic() - started))
        listed = devices(url, token)
        states = [d["state"] for d in listed]
        assert states.count("in-sync") >= 3
        assert states.count("pending-approval") == 1
        online = [d["name"] for d in listed if d["online"] and d["tenant"] == "acme-sensors"]
        assert len(online) >= 3

        text = (repo / SMALL_TEMPLATE).read_text()
        (repo / SMALL_TEMPLATE).write_text(text + 'commonAnnotations:\n  demo/rollout: "2"\n')
        gitserver.run_git(repo, "commit", "-qam", "roll out")
        head = gitserver.run_git(repo, "rev-parse", "HEAD").strip()
        committed = time.monotonic()
        while time.monotonic() - committed < 30:
            now = {d["name"]: d for d in devices(url, token)}
            if all(
                now[name]["appliedRevision"] == head and now[name]["state"] == "in-sync"
                for name in online
            ):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"not applied within 30 s: {devices(url, token)}")
        applied = workdir / "agents" / "demo-gw-1" / "manifests" / "current" / "bundle.yaml"
        assert "demo/rollout" in applied.read_text()
    finally:
        demo.popen.send_signal(signal.SIGINT)
        try:
            code = demo.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            demo.stop()
            raise
        demo.stop()
    assert code == 0, demo.output
    assert processes_under(workdir) == []


def without_git_identity(home: Path) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "EMAIL"))}
    return {**env, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"}


def test_the_commands_the_demo_suggests_work_as_printed(tmp_path: Path) -> None:
    """Steps 1 to 3 of "What to try", in order, in a shell (the `cat` of an agent's folder
    aside: no agent runs here). Each edits or commits the fleet repo the demo made, on a
    machine where git knows no user (no global or system configuration, no identity in the
    environment): the repo has an identity of its own."""
    demo = cmd_demo.prepare(tmp_path / "demo")
    hints = cmd_demo.what_to_try(demo)
    commands = [
        line.strip()
        for line in hints.splitlines()
        if line.startswith(" " * 7) and not line.strip().startswith("cat ")
    ]
    assert len(commands) == 5
    for command in commands:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            capture_output=True,
            text=True,
            env=without_git_identity(tmp_path / "home"),
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, f"{command}\n{done.stderr}"
    assert gitserver.git(demo.repo, "status", "--porcelain") == ""
    disabled = [line for line in hints.splitlines() if " device disable " in line]
    device = disabled[0].split(" device disable ")[1].split()[0]
    tenant, name = device.split("/")
    device_file = demo.repo / "tenants" / tenant / "devices" / name / "device.yaml"
    assert "enabled: false" in device_file.read_text()
