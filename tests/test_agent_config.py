"""The agent's configuration (``rciots.agent.config``): defaults, the order of sources (file <
environment < command line), the provisioning token kept out of the file, the command line and
repr, and errors that name the option and where its value came from."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rciots.agent import config

TOKEN = "rciots-pt-agent-config-test-token-000000000000000000000"


def toml(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(
    tmp_path: Path,
    text: str = "",
    environ: dict[str, str] | None = None,
    command_line: dict[str, object] | None = None,
) -> config.AgentConfig:
    return config.load(toml(tmp_path, text), environ or {}, command_line or {})


def refused(
    tmp_path: Path,
    text: str = "",
    environ: dict[str, str] | None = None,
    command_line: dict[str, object] | None = None,
) -> str:
    with pytest.raises(config.ConfigError) as raised:
        load(tmp_path, text, environ, command_line)
    return str(raised.value)


# -- defaults ---------------------------------------------------------------------------------


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    loaded = load(tmp_path)
    assert loaded == config.AgentConfig(
        enroll_url=None,
        token=None,
        device_name=socket.gethostname(),
        ca_file=None,
        state_dir=Path("/var/lib/rciots-agent"),
        identity_secret=None,
        applier="directory",
        output_dir=None,
        kubectl=None,
        podman="podman",
        connector_url=None,
        labels={},
        max_reconnect_delay=300.0,
    )
    assert loaded.manifests_dir == Path("/var/lib/rciots-agent/manifests")


def test_the_defaults_of_the_options_table_are_those_of_the_config() -> None:
    """The table documents the defaults: they must be what an AgentConfig has."""
    made = config.AgentConfig()
    for option in config.OPTIONS:
        if option.name in ("token_file", "device_name"):
            continue  # no field of its own; the host name, which the table cannot hold
        value = getattr(made, option.name)
        if option.name == "labels":
            assert value == {}
            assert option.default == ""
        elif isinstance(value, Path):
            assert str(value) == option.default, option.name
        else:
            assert value == option.default, option.name


def test_output_dir_replaces_the_manifests_folder(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'state_dir = "/srv/agent"\noutput_dir = "/srv/out"\n')
    assert loaded.manifests_dir == Path("/srv/out")
    assert load(tmp_path, 'state_dir = "/srv/agent"\n').manifests_dir == Path(
        "/srv/agent/manifests"
    )


def test_the_default_file_is_read_when_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = toml(tmp_path, 'applier = "podman"\n', "default.toml")
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", default)
    assert config.load(None, {}, {}).applier == "podman"


def test_a_missing_default_file_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", tmp_path / "absent.toml")
    assert config.load(None, {}, {}) == config.load(toml(tmp_path, ""), {}, {})


def test_a_missing_named_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as raised:
        config.load(tmp_path / "absent.toml", {}, {})
    assert str(raised.value) == (
        f"cannot read the configuration file {tmp_path / 'absent.toml'}: No such file or directory"
    )


def test_a_file_that_is_no_toml_names_itself(tmp_path: Path) -> None:
    message = refused(tmp_path, "applier = podman\n")
    assert message.startswith(f"{tmp_path / 'agent.toml'}: Invalid value (at line 1, column 11)")


# -- sources ----------------------------------------------------------------------------------


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'applier = "podman"\n', {"RCIOTS_APPLIER": "kubectl"})
    assert loaded.applier == "kubectl"


def test_the_command_line_wins_over_the_environment_and_the_file(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'applier = "podman"\nstate_dir = "/from/file"\n',
        {"RCIOTS_APPLIER": "kubectl", "RCIOTS_STATE_DIR": "/from/env"},
        {"applier": "oc", "state_dir": None},
    )
    assert loaded.applier == "oc"
    assert loaded.state_dir == Path("/from/env")  # None on the command line: not given


def test_an_empty_environment_variable_is_unset(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'applier = "podman"\n', {"RCIOTS_APPLIER": ""})
    assert loaded.applier == "podman"


def test_every_option_is_read_from_its_environment_variable(tmp_path: Path) -> None:
    values = {
        "RCIOTS_ENROLL_URL": "https://controller.example:8443",
        "RCIOTS_DEVICE_NAME": "gw-01",
        "RCIOTS_CA_FILE": "/etc/rciots/root.pem",
        "RCIOTS_STATE_DIR": "/srv/agent",
        "RCIOTS_IDENTITY_SECRET": "edge/rciots-agent-identity",
        "RCIOTS_APPLIER": "oc",
        "RCIOTS_OUTPUT_DIR": "/srv/out",
        "RCIOTS_KUBECTL": "/usr/local/bin/oc",
        "RCIOTS_PODMAN": "/usr/bin/podman",
        "RCIOTS_CONNECTOR_URL": "wss://controller.example:8444/v1/connect",
        "RCIOTS_LABELS": "site=lyon",
        "RCIOTS_MAX_RECONNECT_DELAY": "12.5",
        "RCIOTS_TOKEN": TOKEN,
    }
    assert {o.env for o in config.OPTIONS} - set(values) == {"RCIOTS_TOKEN_FILE"}
    assert load(tmp_path, environ=values) == config.AgentConfig(
        enroll_url="https://controller.example:8443",
        token=TOKEN,
        device_name="gw-01",
        ca_file=Path("/etc/rciots/root.pem"),
        state_dir=Path("/srv/agent"),
        identity_secret="edge/rciots-agent-identity",
        applier="oc",
        output_dir=Path("/srv/out"),
        kubectl="/usr/local/bin/oc",
        podman="/usr/bin/podman",
        connector_url="wss://controller.example:8444/v1/connect",
        labels={"site": "lyon"},
        max_reconnect_delay=12.5,
    )


def test_unknown_options_in_the_file_name_the_file_and_the_known_ones(tmp_path: Path) -> None:
    message = refused(tmp_path, 'aplier = "podman"\nretries = 3\n')
    assert message == (
        f"{tmp_path / 'agent.toml'}: unknown option(s) aplier, retries; known: applier, "
        "ca_file, connector_url, device_name, enroll_url, identity_secret, kubectl, labels, "
        "max_reconnect_delay, output_dir, podman, state_dir, token_file"
    )


# -- the provisioning token -------------------------------------------------------------------


def test_the_token_in_the_file_is_refused_with_advice(tmp_path: Path) -> None:
    message = refused(tmp_path, f'token = "{TOKEN}"\n')
    assert message == (
        f"{tmp_path / 'agent.toml'}: write the token into a file of its own and name it with "
        "token_file, so that the configuration can be shown without the secret"
    )
    assert TOKEN not in message


def test_the_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(f"  {TOKEN}\n\n")
    loaded = load(tmp_path, f'token_file = "{secret}"\n')
    assert loaded.token == TOKEN


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("\n  \n")
    message = refused(tmp_path, environ={"RCIOTS_TOKEN_FILE": str(secret)})
    assert message == "token_file (from RCIOTS_TOKEN_FILE): the file is empty"


def test_a_missing_token_file_names_the_option_and_its_source(tmp_path: Path) -> None:
    message = refused(tmp_path, command_line={"token_file": str(tmp_path / "absent")})
    assert message == "token_file (from --token-file): cannot read it: No such file or directory"


def test_the_token_from_the_environment(tmp_path: Path) -> None:
    assert load(tmp_path, environ={"RCIOTS_TOKEN": TOKEN}).token == TOKEN


def test_the_token_from_the_environment_is_stripped(tmp_path: Path) -> None:
    """As a token file is: a value copied with its newline must not be a wrong token."""
    assert load(tmp_path, environ={"RCIOTS_TOKEN": f" {TOKEN}\n"}).token == TOKEN


def test_a_token_file_on_the_command_line_wins_over_the_token_in_the_environment(
    tmp_path: Path,
) -> None:
    """token and token_file are one setting given two ways: the later source wins."""
    secret = tmp_path / "token"
    secret.write_text(TOKEN)
    loaded = load(
        tmp_path, environ={"RCIOTS_TOKEN": "rciots-pt-older"}, command_line={"token_file": secret}
    )
    assert loaded.token == TOKEN


def test_the_token_in_the_environment_wins_over_a_token_file_in_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("rciots-pt-older")
    loaded = load(tmp_path, f'token_file = "{secret}"\n', {"RCIOTS_TOKEN": TOKEN})
    assert loaded.token == TOKEN


def test_the_token_wins_over_a_token_file_from_the_same_source(tmp_path: Path) -> None:
    environ = {"RCIOTS_TOKEN": TOKEN, "RCIOTS_TOKEN_FILE": str(tmp_path / "absent")}
    assert load(tmp_path, environ=environ).token == TOKEN


def test_the_token_never_shows_in_the_repr(tmp_path: Path) -> None:
    loaded = load(tmp_path, environ={"RCIOTS_TOKEN": TOKEN})
    assert loaded.token == TOKEN
    assert TOKEN not in repr(loaded)
    assert TOKEN not in str(loaded)


# -- values -----------------------------------------------------------------------------------


def test_a_bad_applier_names_the_option_and_its_source(tmp_path: Path) -> None:
    assert refused(tmp_path, environ={"RCIOTS_APPLIER": "docker"}) == (
        "applier (from RCIOTS_APPLIER): must be one of directory, podman, kubectl, oc"
    )
    assert refused(tmp_path, 'applier = "helm"\n') == (
        f"applier (from {tmp_path / 'agent.toml'}): must be one of directory, podman, kubectl, oc"
    )


def test_a_number_that_is_none_names_the_option_and_its_source(tmp_path: Path) -> None:
    assert refused(tmp_path, environ={"RCIOTS_MAX_RECONNECT_DELAY": "soon"}) == (
        "max_reconnect_delay (from RCIOTS_MAX_RECONNECT_DELAY): not a number: 'soon'"
    )
    assert refused(tmp_path, "max_reconnect_delay = true\n") == (
        f"max_reconnect_delay (from {tmp_path / 'agent.toml'}): not a number: True"
    )


def test_a_number_from_the_file_may_be_an_integer(tmp_path: Path) -> None:
    assert load(tmp_path, "max_reconnect_delay = 30\n").max_reconnect_delay == 30.0


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_delay_must_be_more_than_zero(tmp_path: Path, value: str) -> None:
    message = refused(tmp_path, command_line={"max_reconnect_delay": value})
    assert message == "max_reconnect_delay (from --max-reconnect-delay): must be more than 0"


def test_labels_are_key_value_pairs_separated_by_commas(tmp_path: Path) -> None:
    loaded = load(tmp_path, environ={"RCIOTS_LABELS": "site=lyon, hardware=rpi4,,empty="})
    assert loaded.labels == {"site": "lyon", "hardware": "rpi4", "empty": ""}


def test_labels_from_the_file_may_be_a_table(tmp_path: Path) -> None:
    loaded = load(tmp_path, '[labels]\nsite = "lyon"\nfloor = 2\n')
    assert loaded.labels == {"site": "lyon", "floor": "2"}


@pytest.mark.parametrize(("text", "item"), [("site=lyon,rpi4", "'rpi4'"), ("=lyon", "'=lyon'")])
def test_a_label_without_a_key_and_a_value_is_refused(tmp_path: Path, text: str, item: str) -> None:
    message = refused(tmp_path, command_line={"labels": text})
    assert message == f"labels (from --labels): {item} is not key=value"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_a_delay_must_be_a_finite_number(tmp_path: Path, value: str) -> None:
    """NaN passed the 'more than 0' check and inf waited for ever between attempts."""
    message = refused(tmp_path, environ={"RCIOTS_MAX_RECONNECT_DELAY": value})
    assert message == (
        f"max_reconnect_delay (from RCIOTS_MAX_RECONNECT_DELAY): not a finite number: {value!r}"
    )


def test_a_file_that_is_no_utf8_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(b'applier = "podman"\ndevice_name = "caf\xe9"\n')
    with pytest.raises(config.ConfigError) as raised:
        config.load(path, {}, {})
    assert str(raised.value) == f"{path}: not UTF-8 text (byte 0xe9 at offset 37)"


def test_a_token_file_that_is_no_utf8_names_the_option(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_bytes(b"\xff\xfetoken")
    message = refused(tmp_path, environ={"RCIOTS_TOKEN_FILE": str(secret)})
    assert message == "token_file (from RCIOTS_TOKEN_FILE): not UTF-8 text"


@pytest.mark.parametrize(
    "url", ["http://controller.example:8443", "controller.example:8443", "https://", "https://h:x"]
)
def test_the_enrollment_url_must_be_https(tmp_path: Path, url: str) -> None:
    """Found only at the first request before, and then retried for ever as 'unreachable'."""
    message = refused(tmp_path, environ={"RCIOTS_ENROLL_URL": url})
    assert message == (
        "enroll_url (from RCIOTS_ENROLL_URL): must be an https:// URL with a host, such as "
        f"https://controller.example:8443, not {url!r}"
    )


def test_the_connector_url_must_be_wss(tmp_path: Path) -> None:
    message = refused(tmp_path, 'connector_url = "ws://controller.example:8444/v1/connect"\n')
    assert message == (
        f"connector_url (from {tmp_path / 'agent.toml'}): must be a wss:// URL with a host, such "
        "as wss://controller.example:8444/v1/connect, not "
        "'ws://controller.example:8444/v1/connect'"
    )


@pytest.mark.parametrize("value", ["rciots-identity", "/name", "edge/", "edge/a/b"])
def test_the_identity_secret_must_be_namespace_and_name(tmp_path: Path, value: str) -> None:
    """Found only when the agent started, as a ValueError, before."""
    message = refused(tmp_path, command_line={"identity_secret": value})
    assert message == (
        "identity_secret (from --identity-secret): must be NAMESPACE/NAME, such as "
        f"edge/rciots-agent-identity, not {value!r}"
    )


def test_good_urls_and_secret_names_pass(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'enroll_url = "HTTPS://[::1]:8443/"\nconnector_url = "wss://10.0.0.1:8444/v1/connect"\n'
        'identity_secret = "edge/rciots-agent-identity"\n',
    )
    assert loaded.enroll_url == "HTTPS://[::1]:8443/"
    assert loaded.connector_url == "wss://10.0.0.1:8444/v1/connect"
    assert loaded.identity_secret == "edge/rciots-agent-identity"


@pytest.mark.parametrize(
    ("hostname", "name"),
    [
        ("gw-17", "gw-17"),
        ("GW-17.plant.example.com", "gw-17"),
        ("my_box", "my-box"),
        ("-odd-", "odd"),
        ("ünï", "n"),
        ("ü", "device"),
        ("a" * 80, "a" * 63),
    ],
)
def test_the_default_device_name_is_a_dns_label_from_the_host_name(hostname, name):
    assert config.host_device_name(hostname) == name
