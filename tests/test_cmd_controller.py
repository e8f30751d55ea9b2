"""``rciots controller``: its options, and the real process on a local fleet repo, stopped by
SIGINT, leaving device status on the status branch and the tracked branch as it was."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rciots.controller import cli
from tests import gitserver
from tests.processes import Process

EXAMPLE = Path(__file__).resolve().parent.parent / "fleet-repo-example"
RCIOTS = Path(sys.executable).parent / "rciots"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--password-file", "/nonexistent/password"], "cannot read the password file"),
        (["--worktree"], "--worktree needs a local directory"),
        (["--webhook-secret-file", "{empty}"], "the webhook secret file {empty} is empty"),
        (["--webhook-secret-file", "{secret}", "--listen", "8080"], "--listen takes HOST:PORT"),
        (["--enroll-listen", "8443"], "--enroll-listen takes HOST:PORT, such as 0.0.0.0:8443"),
        (["--listen", "8080"], "--listen takes HOST:PORT"),
        (["--repo-web-url", "https://forge/x/commit/"], "--repo-web-url takes an http(s) URL"),
        (["--admin-token-file", "{empty}"], "the admin token file {empty} is empty"),
        (["--admin-token-file", "/nonexistent/t"], "cannot read the admin token file"),
    ],
)
def test_bad_options_say_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    (tmp_path / "empty").write_text("")
    (tmp_path / "secret").write_text("s3cret-value\n")
    names = {"empty": str(tmp_path / "empty"), "secret": str(tmp_path / "secret")}
    options = [o.format(**names) for o in options]
    assert cli.main(["controller", "git://127.0.0.1:9/none.git", *options]) == 1
    err = capsys.readouterr().err
    assert message.format(**names) in err
    assert "s3cret-value" not in err


def test_a_status_branch_that_cannot_be_written_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "fleet"
    gitserver.run_git(None, "init", "-q", "-b", "main", str(repo))
    options = ["--state-dir", str(tmp_path / "state"), "--status-branch", "status..bad"]
    assert cli.main(["controller", str(repo), *options]) == 1
    err = capsys.readouterr().err
    assert "rciots: error: status branch name 'status..bad' is not a valid Git branch" in err
    assert "Traceback" not in err


def test_a_bad_interval_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["controller", ".", "--poll-interval", "0"])
    assert exited.value.code == 2
    assert "must be more than 0" in capsys.readouterr().err


def test_the_process_runs_until_interrupted_and_writes_status(tmp_path: Path) -> None:
    """Also runs docs/enrollment.md's curl and openssl block against it, as written but for
    the port, with the example's automatic token."""
    repo = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, repo)
    gitserver.run_git(None, "init", "-q", "-b", "main", str(repo))
    gitserver.run_git(repo, "add", "-A")
    gitserver.run_git(repo, "commit", "-qm", "fleet")
    head = gitserver.run_git(repo, "rev-parse", "HEAD").strip()
    port = gitserver.free_port()
    with Process(
        [
            str(RCIOTS),
            "controller",
            str(repo),
            "--state-dir",
            str(tmp_path / "state"),
            "--status-window",
            "0.2",
            "--enroll-listen",
            f"127.0.0.1:{port}",
            "--connect-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
        ]
    ) as process:
        process.wait_for("controller running on")
        enrolled = _enroll_as_documented(tmp_path, port)
        code = process.stop()
    assert code == 0, process.output
    assert "writing pending status" in process.output
    listed = gitserver.run_git(repo, "ls-tree", "-r", "--name-only", "rciots/status").split()
    assert "status/acme-sensors/berlin-gw-01.yaml" in listed
    assert gitserver.run_git(repo, "rev-parse", "HEAD").strip() == head
    assert gitserver.run_git(repo, "status", "--porcelain") == ""
    registration = gitserver.run_git(
        repo, "show", "rciots/status:registry/acme-sensors/warehouse-gw-17.yaml"
    )
    assert enrolled["deviceId"] in registration


def _enroll_as_documented(tmp_path: Path, port: int) -> dict[str, str]:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "enrollment.md").read_text()
    block = doc.split("<!-- enroll-with-curl", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    script = block.replace("https://127.0.0.1:8443", f"https://127.0.0.1:{port}")
    device = tmp_path / "device"
    device.mkdir()
    shutil.copy(tmp_path / "state" / "ca" / "root.pem", device / "root.pem")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=device,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "device.crt: OK" in done.stdout
    assert "enrolled as " in done.stdout
    assert "in acme-sensors; connect to wss://" in done.stdout
    identity: dict[str, str] = json.loads((device / "identity.json").read_text())
    return identity
