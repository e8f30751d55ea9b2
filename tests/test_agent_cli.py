"""``rciots-agent``: its help (every option of the configuration table, with its environment
variable), ``show`` (never a secret), usage errors, and the real process: it enrolls with a
controller process, connects, applies with the directory applier and stops on SIGINT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rciots.agent import cli, config
from rciots.agent.bundle import ApplyResult, Bundle, ResourceId, digest_of
from rciots.agent.state import DirectoryIdentity, Identity, StateDir
from tests import gitserver
from tests.processes import Process

EXAMPLE = Path(__file__).resolve().parent.parent / "fleet-repo-example"
AGENT = Path(sys.executable).parent / "rciots-agent"
WAREHOUSE = "rciots-pt-OaGmPNNo7h0cVwjIvurOdVdIHBCZRVnJKMlguG3KB3U"  # auto, acme-sensors
DEVICE_TOKEN = "rciots-dt-cli-test-device-token-never-shown"
KEY = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleQ==\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def empty_config(tmp_path: Path) -> Path:
    """An empty configuration file: the machine's own /etc/rciots/agent.toml stays out."""
    path = tmp_path / "agent.toml"
    path.write_text("")
    return path


@pytest.fixture(autouse=True)
def _no_agent_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in config.OPTIONS:
        monkeypatch.delenv(option.env, raising=False)


def help_text(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # as one line, whatever the wrapping


# -- help -------------------------------------------------------------------------------------


def test_the_help_names_every_option_with_its_environment_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_text(capsys)
    for option in config.OPTIONS:
        assert f"${option.env}" in text, option.name
        if option.secret:  # never on the command line
            assert f"--{option.name} " not in text
            assert f"--{option.name}]" not in text
        elif option.name == "labels":
            assert "--label KEY=VALUE" in text
        else:
            assert f"--{option.name.replace('_', '-')} " in text, option.name


def test_the_help_gives_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys)
    assert "(default /var/lib/rciots-agent); $RCIOTS_STATE_DIR" in text
    assert "(default directory); $RCIOTS_APPLIER" in text
    assert "(default 300.0); $RCIOTS_MAX_RECONNECT_DELAY" in text


# -- show -------------------------------------------------------------------------------------


def test_show_before_enrollment(
    tmp_path: Path, empty_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--config", str(empty_config), "--state-dir", str(tmp_path / "state")]
    assert cli.main([*argv, "--device-name", "gw-01", "show"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "enrolled": False,
        "deviceId": None,
        "tenant": None,
        "name": "gw-01",
        "connectorUrl": None,
        "appliedRevision": None,
        "appliedDigest": None,
        "appliedOk": None,
        "applier": "directory",
    }
    assert not (tmp_path / "state").exists()  # looking creates nothing


def test_show_after_enrollment_holds_no_secret(
    tmp_path: Path,
    empty_config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = tmp_path / "state"
    DirectoryIdentity(state / "identity").save(
        Identity(
            device_id="7d1f0c52-9a55-4a8e-9a5e-0f1c2a3b4c5d",
            tenant="acme-sensors",
            name="gw-01",
            connector_url="wss://controller.example:8444/v1/connect",
            device_token=DEVICE_TOKEN,
            key_pem=KEY,
            certificate_pem=b"-----BEGIN CERTIFICATE-----\nY2VydA==\n-----END CERTIFICATE-----\n",
            ca_pem=b"-----BEGIN CERTIFICATE-----\ncm9vdA==\n-----END CERTIFICATE-----\n",
        )
    )
    manifests = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: edge\n"
    bundle = Bundle(
        "8f14e45f", digest_of(manifests), manifests, (ResourceId("v1", "Namespace", "edge"),)
    )
    StateDir(state).save_applied(bundle, ApplyResult(bundle.digest))
    monkeypatch.setenv("RCIOTS_TOKEN", WAREHOUSE)
    assert cli.main(["--config", str(empty_config), "--state-dir", str(state), "show"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == {
        "enrolled": True,
        "deviceId": "7d1f0c52-9a55-4a8e-9a5e-0f1c2a3b4c5d",
        "tenant": "acme-sensors",
        "name": "gw-01",
        "connectorUrl": "wss://controller.example:8444/v1/connect",
        "appliedRevision": "8f14e45f",
        "appliedDigest": bundle.digest,
        "appliedOk": True,
        "applier": "directory",
    }
    for secret in (DEVICE_TOKEN, WAREHOUSE, "c2VjcmV0LWtleQ", "PRIVATE KEY"):
        assert secret not in out


# -- usage errors -----------------------------------------------------------------------------


def test_a_bad_option_value_exits_2_naming_the_option(
    empty_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--config", str(empty_config), "--applier", "docker", "show"]) == 2
    assert capsys.readouterr().err == (
        "rciots-agent: error: applier (from --applier): must be one of directory, podman, "
        "kubectl, oc\n"
    )


def test_a_bad_environment_variable_exits_2_naming_it(
    empty_config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RCIOTS_MAX_RECONNECT_DELAY", "soon")
    assert cli.main(["--config", str(empty_config), "show"]) == 2
    assert capsys.readouterr().err == (
        "rciots-agent: error: max_reconnect_delay (from RCIOTS_MAX_RECONNECT_DELAY): "
        "not a number: 'soon'\n"
    )


@pytest.mark.parametrize("argv", [["--token", WAREHOUSE], [f"--token={WAREHOUSE}"]])
def test_a_token_on_the_command_line_is_refused_without_repeating_it(
    argv: list[str], empty_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse took --token for an abbreviation of --token-file before: the token became a
    file name, and the error spoke of a token file that does not exist."""
    assert cli.main(["--config", str(empty_config), *argv, "show"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "rciots-agent: error: the token is never taken from the command line, where other "
        "users can read it: name a file holding it with --token-file, or set $RCIOTS_TOKEN\n"
    )


def test_a_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", str(tmp_path / "absent.toml"), "show"]) == 2
    assert capsys.readouterr().err == (
        f"rciots-agent: error: cannot read the configuration file {tmp_path / 'absent.toml'}: "
        "No such file or directory\n"
    )


def test_show_with_an_unreadable_identity_exits_1_saying_why(
    tmp_path: Path, empty_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "state" / "identity").mkdir(parents=True)
    (tmp_path / "state" / "identity" / "identity.json").write_text("{not json")
    argv = ["--config", str(empty_config), "--state-dir", str(tmp_path / "state"), "show"]
    assert cli.main(argv) == 1
    assert capsys.readouterr().err.startswith(
        f"rciots-agent: error: the identity in {tmp_path / 'state' / 'identity'} cannot be read: "
    )


def test_run_with_a_ca_file_that_is_missing_exits_1_saying_why(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(WAREHOUSE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCIOTS_")}
    env["RCIOTS_TOKEN_FILE"] = str(tmp_path / "token")
    (tmp_path / "agent.toml").write_text(
        'enroll_url = "https://127.0.0.1:9"\n'
        f'ca_file = "{tmp_path / "root.pem"}"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
    )
    done = subprocess.run(
        [str(AGENT), "--config", str(tmp_path / "agent.toml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=20,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.rstrip().endswith(
        f"ERROR rciots.agent: the CA file {tmp_path / 'root.pem'} cannot be loaded: "
        "No such file or directory"
    )
    assert "Traceback" not in done.stderr
    assert WAREHOUSE not in done.stderr + str(done.args)


# -- the real process -------------------------------------------------------------------------

CONTROLLER = """
import asyncio, signal, sys
from pathlib import Path
from rciots.controller import connector, service

async def main() -> None:
    source, state = sys.argv[1], Path(sys.argv[2])
    enroll_port, connector_port = int(sys.argv[3]), int(sys.argv[4])
    running = service.Controller(service.Settings(
        source=source, state_dir=state, poll_interval=0.2, status_window=0.1,
        enrollment=service.EnrollmentSettings(
            listen=("127.0.0.1", enroll_port),
            connector_url=f"wss://127.0.0.1:{connector_port}{connector.PATH}",
        ),
        agents=connector.ConnectorSettings(listen=("127.0.0.1", connector_port)),
    ))
    await running.start()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await running.stop()

asyncio.run(main())
"""


def test_the_agent_process_enrolls_applies_and_stops_on_sigint(tmp_path: Path) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", source=EXAMPLE)
    enroll_port, connector_port = gitserver.free_port(), gitserver.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCIOTS_")}
    env["PYTHONUNBUFFERED"] = "1"
    controller = Process(
        [
            sys.executable,
            "-c",
            CONTROLLER,
            remote.bare.as_uri(),
            str(tmp_path / "controller"),
            str(enroll_port),
            str(connector_port),
        ],
        env,
        with_stdout=True,
    )
    agent: Process | None = None
    try:
        controller.wait_for("ready", within=20)
        (tmp_path / "token").write_text(WAREHOUSE + "\n")
        (tmp_path / "agent.toml").write_text(
            f'enroll_url = "https://127.0.0.1:{enroll_port}"\n'
            f'token_file = "{tmp_path / "token"}"\n'
            f'ca_file = "{tmp_path / "controller" / "ca" / "root.pem"}"\n'
        )
        argv = [str(AGENT), "--config", str(tmp_path / "agent.toml")]
        argv += ["--state-dir", str(tmp_path / "agent"), "--device-name", "cli-e2e"]
        agent = Process([*argv, "--applier", "directory"], env, with_stdout=True)
        agent.wait_for("enrolled as ", within=20)
        agent.wait_for("connected to /v1/connect", within=20)
        applied = agent.wait_for(": ok", within=20)
        index = json.loads(
            (tmp_path / "agent" / "manifests" / "current" / "index.json").read_text()
        )
        assert f"applied {index['digest'][:19]}: ok" in applied
        assert any(r["kind"] == "Deployment" for r in index["resources"])

        started = time.monotonic()
        assert agent.stop(within=10) == 0
        assert time.monotonic() - started < 5
        log = agent.output
        assert log.rstrip().endswith("INFO rciots.agent: stopped")
        assert WAREHOUSE not in log
        assert "rciots-dt-" not in log
        assert "Traceback" not in log

        shown = subprocess.run(
            [*argv, "show"], capture_output=True, text=True, env=env, check=True, timeout=20
        )
        about = json.loads(shown.stdout)
        assert about["enrolled"] is True
        assert (about["tenant"], about["name"]) == ("acme-sensors", "cli-e2e")
        assert about["appliedDigest"] == index["digest"]
        assert WAREHOUSE not in shown.stdout
        assert "rciots-dt-" not in shown.stdout
        assert controller.stop(within=20) == 0
    finally:
        if agent is not None:
            agent.stop()
        controller.stop()
