"""``rciots controller``: its options, and the real process on a local fleet repo, stopped by
SIGINT, leaving device status on the status branch and the tracked branch as it was."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rciots.controller import cli
from tests import gitserver

EXAMPLE = Path(__file__).resolve().parent.parent / "fleet-repo-example"
RCIOTS = Path(sys.executable).parent / "rciots"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--password-file", "/nonexistent/password"], "cannot read the password file"),
        (["--worktree"], "--worktree needs a local directory"),
        (["--webhook-secret-file", "{empty}"], "the webhook secret file {empty} is empty"),
        (["--webhook-secret-file", "{secret}", "--listen", "8080"], "--listen takes HOST:PORT"),
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
    repo = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, repo)
    gitserver.run_git(None, "init", "-q", "-b", "main", str(repo))
    gitserver.run_git(repo, "add", "-A")
    gitserver.run_git(repo, "commit", "-qm", "fleet")
    head = gitserver.run_git(repo, "rev-parse", "HEAD").strip()
    process = subprocess.Popen(
        [
            str(RCIOTS),
            "controller",
            str(repo),
            "--state-dir",
            str(tmp_path / "state"),
            "--status-window",
            "0.2",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 20
        for line in process.stderr:
            if "controller running on" in line or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert "writing pending status" in rest
    listed = gitserver.run_git(repo, "ls-tree", "-r", "--name-only", "rciots/status").split()
    assert "status/acme-sensors/berlin-gw-01.yaml" in listed
    assert gitserver.run_git(repo, "rev-parse", "HEAD").strip() == head
    assert gitserver.run_git(repo, "status", "--porcelain") == ""
