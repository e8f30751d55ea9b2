"""End to end with real processes: `rciots controller` and `rciots-agent` processes over mutual
TLS on loopback, a fleet repo in Git, the directory and the podman appliers.

An agent enrolls with an automatic token, connects, applies, and its status lands on the status
branch as Applied; a template commit is applied again by every agent; a stopped and restarted
agent neither enrolls nor applies again; SIGINT stops every process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rciots.controller import tokens
from tests import fleetprocesses, gitserver, podmanhost
from tests.fleetcontroller import EXAMPLE
from tests.processes import Process

pytestmark = pytest.mark.e2e

TOKEN = tokens.generate_token()
TEMPLATE = "tenants/e2e/templates/app"

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: greeter
spec:
  replicas: 1
  selector:
    matchLabels: {{app: greeter}}
  template:
    metadata:
      labels: {{app: greeter}}
    spec:
      containers:
      - name: greeter
        image: {image}
        command: ["sh", "-c", "cat /config/GREETING; sleep 3600"]
        volumeMounts:
        - {{name: config, mountPath: /config}}
      volumes:
      - name: config
        configMap: {{name: greeting}}
"""


def kustomization(greeting: str) -> str:
    return (
        "resources:\n- deployment.yaml\nconfigMapGenerator:\n- name: greeting\n"
        f"  literals:\n  - GREETING={greeting}\n"
    )


def make_repo(folder: Path, image: str) -> Path:
    repo = folder / "fleet"
    shutil.copytree(EXAMPLE, repo)
    files = {
        "tenants/e2e/tenant.yaml": (
            "apiVersion: rciots.io/v1\nkind: Tenant\nmetadata:\n  name: e2e\nspec: {}\n"
        ),
        "tenants/e2e/tokens/fleet.yaml": tokens.render_token_file(
            "fleet", tokens.hash_token(TOKEN), approval="auto", template="app"
        ),
        f"{TEMPLATE}/kustomization.yaml": kustomization("hello"),
        f"{TEMPLATE}/deployment.yaml": DEPLOYMENT.format(image=image),
    }
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    gitserver.run_git(None, "init", "-q", "-b", "main", str(repo))
    gitserver.run_git(repo, "add", "-A")
    gitserver.run_git(repo, "commit", "-qm", "fleet")
    return repo


class Fleet:
    """A controller process on a repo, and agent processes enrolled with the e2e token."""

    def __init__(self, folder: Path, repo: Path) -> None:
        self.folder = folder
        self.repo = repo
        self.enroll_port = gitserver.free_port()
        self.connect_port = gitserver.free_port()
        self.state = folder / "state"
        self.controller = Process(
            fleetprocesses.controller_argv(
                repo,
                self.state,
                self.enroll_port,
                "--poll-interval",
                "0.3",
                "--connect-listen",
                f"127.0.0.1:{self.connect_port}",
                "--listen",
                "127.0.0.1:0",
            )
        )
        try:
            self.controller.wait_for("controller running on")
        except BaseException:
            self.controller.stop()  # never left running when it does not start
            raise

    def agent(self, name: str, applier: str, env: dict[str, str] | None = None) -> Process:
        return Process(
            fleetprocesses.agent_argv(
                name, self.folder / name, self.state, self.enroll_port, applier
            ),
            env={**(env or os.environ), "RCIOTS_TOKEN": TOKEN},
        )

    def status(self, name: str) -> str:
        path = f"rciots/status:status/e2e/{name}.yaml"
        try:
            return gitserver.run_git(self.repo, "show", path)
        except Exception:  # not written yet
            return ""

    def wait_applied(self, name: str, revision: str, within: float = 30.0) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            text = self.status(name)
            applied = re.search(r'lastAppliedRevision: "?([0-9a-f]{40})', text)
            if "result: Applied" in text and applied and applied.group(1) == revision:
                return text
            time.sleep(0.2)
        raise AssertionError(
            f"{name} did not apply {revision} within {within} s; status:\n{self.status(name)}\n"
            f"controller:\n{self.controller.output[-3000:]}"
        )

    def commit(self, path: str, text: str, message: str) -> str:
        (self.repo / path).write_text(text)
        gitserver.run_git(self.repo, "commit", "-qam", message)
        return gitserver.run_git(self.repo, "rev-parse", "HEAD").strip()

    def head(self) -> str:
        return gitserver.run_git(self.repo, "rev-parse", "main").strip()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    running = Fleet(tmp_path, make_repo(tmp_path, "localhost/none:0"))
    try:
        yield running
    finally:
        assert running.controller.stop() == 0, running.controller.output[-3000:]


def test_directory_agents_enroll_apply_update_and_restart(fleet: Fleet, tmp_path: Path) -> None:
    with fleet.agent("dir-1", "directory") as one, fleet.agent("dir-2", "directory") as two:
        first = fleet.head()
        for name in ("dir-1", "dir-2"):
            fleet.wait_applied(name, first)
        bundle = tmp_path / "dir-1" / "manifests" / "current" / "bundle.yaml"
        assert "GREETING: hello" in bundle.read_text()
        second = fleet.commit(f"{TEMPLATE}/kustomization.yaml", kustomization("again"), "again")
        for name in ("dir-1", "dir-2"):
            fleet.wait_applied(name, second)
        assert "GREETING: again" in bundle.read_text()
        assert one.stop() == 0
        assert "stopped" in one.output
        device = json.loads((tmp_path / "dir-1" / "identity" / "identity.json").read_text())
        applied_folder = (tmp_path / "dir-1" / "manifests" / "current").resolve()
    # a restarted agent: the same identity, nothing applied again
    with fleet.agent("dir-1", "directory") as again:
        again.wait_for("connected")
        time.sleep(1.5)  # a push, had there been one, would have been applied by now
        assert "enrolled as" not in again.output
        assert "applied sha256" not in again.output
        assert (tmp_path / "dir-1" / "manifests" / "current").resolve() == applied_folder
    assert two.popen.returncode == 0
    registry = gitserver.run_git(fleet.repo, "show", "rciots/status:registry/e2e/dir-1.yaml")
    assert device["deviceId"] in registry


@pytest.mark.podman
def test_a_podman_agent_runs_the_workload_and_follows_a_commit(tmp_path: Path) -> None:
    with podmanhost.running_podman(tmp_path / "podman") as host:
        running = Fleet(tmp_path, make_repo(tmp_path, host.image))
        try:
            name = f"pod-{host.suffix}"
            with running.agent(name, "podman", env=host.env):
                running.wait_applied(name, running.head(), within=60)
                pods = host.podman("pod", "ps", "--format", "{{.Name}} {{.Status}}")
                assert "greeter-pod" in pods
                second = running.commit(
                    f"{TEMPLATE}/kustomization.yaml", kustomization("podman"), "podman greeting"
                )
                running.wait_applied(name, second, within=60)
                # the replayed container starts on its own time: wait for what it prints
                assert "podman" in host.logs("greeter-pod-0-greeter", "podman")
        finally:
            assert running.controller.stop() == 0
            for pod in host.podman("pod", "ps", "--format", "{{.Name}}").split():
                if pod.startswith("greeter"):
                    host.podman("pod", "rm", "--force", "--time", "0", pod)
