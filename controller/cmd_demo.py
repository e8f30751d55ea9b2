"""``rciots demo``: a working fleet on this machine, in one command.

Position in the flow: the newcomer's entry point. In a work folder it makes a Git fleet repo
from fleet-repo-example, starts ``rciots controller`` on it (enrollment, connector and status
page on localhost ports, a CA created on first start), then N ``rciots-agent`` processes
enrolled with the example's automatic token, plus one with its manual token that stays
pending. It prints the status page's URL, the admin token and the fleet repo's path, waits
until the agents are in sync, says what to try, and on SIGINT or SIGTERM stops every process
it started. Everything it runs is a real process of this installation; nothing is simulated.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]

# the example's demo tokens (fleet-repo-example/README.md): public demo values, never real ones
AUTO_TOKEN = "rciots-pt-OaGmPNNo7h0cVwjIvurOdVdIHBCZRVnJKMlguG3KB3U"  # noqa: S105
MANUAL_TOKEN = "rciots-pt-3dzFbyrIHcOEA9kNYdNbW047Cv6LcrudEarkV1iTZlc"  # noqa: S105
TENANT = "acme-sensors"
MANUAL_TOKEN_FILE = f"tenants/{TENANT}/tokens/plant-commissioning.yaml"
_READY_WITHIN = 90.0
_STOP_WITHIN = 5.0


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="run a demo fleet on this machine: controller, real agents, status page",
        description=(
            "Make a Git fleet repo from fleet-repo-example in DIR, run the controller on it "
            "(a CA is created on first start) with the status page on localhost, and N agents "
            "as separate processes enrolled with the example's automatic token, plus one "
            "enrolled with its manual token and left pending. Stop with Ctrl-C: every process "
            "the demo started stops within a few seconds. DIR is kept for you to look at."
        ),
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="where the fleet repo, the controller's state and the agents live (default: a "
        "new folder under the system's temporary folder)",
    )
    parser.add_argument(
        "--agents", type=int, default=3, metavar="N", help="agents with the automatic token (3)"
    )
    parser.add_argument(
        "--applier",
        choices=["directory", "podman"],
        default="directory",
        help="how the agents apply their manifests (default directory: files in each agent's "
        "folder; podman runs the workloads, whose images must be reachable)",
    )
    parser.add_argument(
        "--no-browser", action="store_true", help="do not open the status page in a browser"
    )
    parser.set_defaults(func=run)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Demo:
    workdir: Path
    repo: Path
    admin_token: str = field(repr=False)
    ports: dict[str, int]
    children: list[Child] = field(default_factory=list)

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['page']}/"

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as output:
            process = subprocess.Popen(
                argv,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # Ctrl-C in the terminal is the demo's to pass on
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def stop(self) -> None:
        """SIGINT to every child, agents first; what has not ended after a few seconds is
        killed (by its own pid)."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + _STOP_WITHIN
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()


def run(args: argparse.Namespace) -> int:
    if args.agents < 0:
        print("rciots demo: error: --agents must be 0 or more", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rciots-demo-"))
    try:
        demo = prepare(workdir)
    except (OSError, ValueError) as exc:
        print(f"rciots demo: error: {exc}", file=sys.stderr)
        return 1
    try:
        return _run(demo, args, stop)
    finally:
        demo.stop()
        say(f"stopped; everything is kept in {demo.workdir}")


def _run(demo: Demo, args: argparse.Namespace, stop: threading.Event) -> int:
    controller = start_controller(demo)
    if not wait_until(stop, lambda: _ready(demo), 30.0, controller):
        return _failed(controller, "the controller did not start")
    say(f"status page: {demo.page_url}")
    say(f"admin token: {demo.admin_token}")
    say(f"fleet repo: {demo.repo}")
    for index in range(1, args.agents + 1):
        start_agent(demo, f"demo-gw-{index}", AUTO_TOKEN, args.applier)
    start_agent(demo, "demo-plant-1", MANUAL_TOKEN, args.applier)
    if not args.no_browser:
        webbrowser.open(demo.page_url)
    say(f"waiting for {args.agents} agent(s) to apply their manifests ...")
    expected = args.agents

    def in_sync() -> bool:
        counts = device_states(demo)
        return counts.get("in-sync", 0) >= expected and counts.get("pending-approval", 0) >= 1

    if not wait_until(stop, in_sync, _READY_WITHIN, controller):
        if stop.is_set():
            return 0
        return _failed(controller, f"the agents were not in sync within {_READY_WITHIN:g} s")
    counts = device_states(demo)
    say(
        f"ready: {counts.get('in-sync', 0)} device(s) in sync, "
        f"{counts.get('pending-approval', 0)} waiting for approval"
    )
    say(what_to_try(demo))
    while not stop.wait(0.5):
        if controller.process.poll() is not None:
            return _failed(controller, "the controller stopped")
    return 0


def say(text: str) -> None:
    print(text, flush=True)


def _failed(controller: Child, why: str) -> int:
    print(f"rciots demo: error: {why}; its log, {controller.log}, ends with:", file=sys.stderr)
    lines = controller.log.read_text(errors="replace").splitlines()[-20:]
    print("\n".join(lines), file=sys.stderr)
    return 1


# -- setting up -------------------------------------------------------------------------------


def example_folder() -> Path:
    """fleet-repo-example: shipped inside the package, or beside it in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "examplefleet", here.parent / "fleet-repo-example"):
        if (candidate / "tenants").is_dir():
            return candidate
    raise ValueError("fleet-repo-example was not found next to the installed package")


def prepare(workdir: Path) -> Demo:
    workdir.mkdir(parents=True, exist_ok=True)
    repo = workdir / "fleet"
    if repo.exists():
        raise ValueError(f"{repo} exists already: give --workdir an empty or new folder")
    shutil.copytree(example_folder(), repo, ignore=shutil.ignore_patterns("*.pyc"))
    _refresh_manual_token(repo)
    _git_init(repo)
    ports = {name: _free_port() for name in ("page", "enroll", "connect")}
    return Demo(workdir, repo, "rciots-admin-" + secrets.token_urlsafe(24), ports)


def _refresh_manual_token(repo: Path) -> None:
    """The example's manual token expires (a date in its file); past it, the demo writes the
    same token anew without an expiry, so that the demo keeps working."""
    from rciots.controller import timestamps, tokens

    text = (repo / MANUAL_TOKEN_FILE).read_text()
    for line in text.splitlines():
        if line.strip().startswith("expires:"):
            value = line.split(":", 1)[1].split("#")[0].strip().strip("\"'")
            if timestamps.parse_timestamp(value) <= datetime.now(UTC):
                (repo / MANUAL_TOKEN_FILE).write_text(
                    tokens.render_token_file(
                        "plant-commissioning",
                        tokens.hash_token(MANUAL_TOKEN),
                        approval="manual",
                        template="mqtt-edge",
                    )
                )
            return


def _git_init(repo: Path) -> None:
    import pygit2

    git = pygit2.init_repository(str(repo), initial_head="main")
    # the commits the demo suggests must work on a machine where git knows no user
    git.config["user.name"] = "rciots demo"
    git.config["user.email"] = "demo@localhost"
    git.index.add_all()
    git.index.write()
    tree = git.index.write_tree()
    who = pygit2.Signature("rciots demo", "demo@localhost")
    git.create_commit("HEAD", who, who, "fleet repo from fleet-repo-example", tree, [])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_controller(demo: Demo) -> Child:
    return demo.start(
        "controller",
        [
            sys.executable,
            "-m",
            "rciots.controller.cli",
            "controller",
            str(demo.repo),
            "--state-dir",
            str(demo.workdir / "state"),
            "--poll-interval",
            "2",
            "--status-window",
            "1",
            "--listen",
            f"127.0.0.1:{demo.ports['page']}",
            "--enroll-listen",
            f"127.0.0.1:{demo.ports['enroll']}",
            "--connect-listen",
            f"127.0.0.1:{demo.ports['connect']}",
            "--server-name",
            "127.0.0.1",
            "--server-name",
            "localhost",
            "--agent-status-interval",
            "5",
        ],
        env={"RCIOTS_ADMIN_TOKEN": demo.admin_token},
    )


def start_agent(demo: Demo, name: str, token: str, applier: str) -> Child:
    return demo.start(
        name,
        [
            sys.executable,
            "-m",
            "rciots.agent.cli",
            "--enroll-url",
            f"https://127.0.0.1:{demo.ports['enroll']}",
            "--ca-file",
            str(demo.workdir / "state" / "ca" / "root.pem"),
            "--state-dir",
            str(demo.workdir / "agents" / name),
            "--device-name",
            name,
            "--applier",
            applier,
            "--max-reconnect-delay",
            "5",
        ],
        env={"RCIOTS_TOKEN": token},
    )


# -- watching ---------------------------------------------------------------------------------


def wait_until(
    stop: threading.Event, check: Callable[[], bool], within: float, controller: Child
) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not stop.is_set():
        if controller.process.poll() is not None:
            return False
        try:
            if check():
                return True
        except (OSError, ValueError):
            pass  # not answering yet
        stop.wait(0.5)
    return False


def _ready(demo: Demo) -> bool:
    root = demo.workdir / "state" / "ca" / "root.pem"
    with urllib.request.urlopen(f"{demo.page_url}readyz", timeout=2) as answer:  # noqa: S310
        return bool(answer.status == 200 and root.exists())


def device_states(demo: Demo) -> dict[str, int]:
    """Devices per state, from the status page's API."""
    request = urllib.request.Request(  # noqa: S310 -- http://127.0.0.1, the demo's own
        f"{demo.page_url}api/v1/devices",
        headers={"Authorization": f"Bearer {demo.admin_token}"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
        devices: list[dict[str, Any]] = json.loads(answer.read())
    counts: dict[str, int] = {}
    for device in devices:
        counts[device["state"]] = counts.get(device["state"], 0) + 1
    return counts


def what_to_try(demo: Demo) -> str:
    repo = demo.repo
    beside = Path(sys.executable).parent / "rciots"
    rciots = str(beside) if beside.exists() else "rciots"
    template = f"{repo}/tenants/{TENANT}/templates/mqtt-edge-small/kustomization.yaml"
    return f"""
What to try:
  1. Change a template and commit: the agents apply it within seconds.
       printf 'commonAnnotations:\\n  demo/rollout: "2"\\n' >> {template}
       git -C {repo} commit -qam "roll out"
     Watch the page, or the manifests an agent applied:
       cat {demo.workdir}/agents/demo-gw-1/manifests/current/bundle.yaml
  2. Approve the pending device (the pull request a reviewer would merge):
       {rciots} device approve {TENANT}/demo-plant-1 --repo {repo} --template mqtt-edge
       git -C {repo} add -A && git -C {repo} commit -qm "approve demo-plant-1"
  3. Disable the device you approved and see it disconnected (a device enrolled with the
     automatic token has no Device file to disable until one is added):
       {rciots} device disable {TENANT}/demo-plant-1 --repo {repo} && git -C {repo} commit -qam off
  4. Read what the controller recorded: git -C {repo} log --stat rciots/status
Logs: {demo.workdir}/logs/. Stop with Ctrl-C."""
