"""The agent's configuration: a TOML file, environment variables, command-line options.

Position in the flow: ``rciots-agent`` start -> **config** -> enrollment, connection, applier.
Every option is declared once in ``OPTIONS`` (name, environment variable, default, meaning), so
that the command line, the environment, the file and the reference in docs/agent.md come from
the same table. Later sources win: defaults < file < environment < command line. Pure apart
from reading the file and the secret files it names.

Secrets (the provisioning token) come from a file or the environment, never from the command
line, where any user could read them with ``ps``.

``python -m rciots.agent.config --markdown`` prints the reference table of docs/agent.md.
"""

from __future__ import annotations

import math
import re
import socket
import sys
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rciots.agent.applier import KINDS

__all__ = ["OPTIONS", "AgentConfig", "ConfigError", "Option", "load", "reference_markdown"]

DEFAULT_CONFIG_FILE = Path("/etc/rciots/agent.toml")


class ConfigError(ValueError):
    """A configuration that cannot work; the message names the option and its source."""


@dataclass(frozen=True)
class Option:
    name: str  # in the file, and as --name-with-dashes on the command line
    env: str
    default: object
    help: str
    kind: type = str
    secret: bool = False
    metavar: str = ""  # the value's name in --help; default: the name's last word


OPTIONS: tuple[Option, ...] = (
    Option(
        "enroll_url",
        "RCIOTS_ENROLL_URL",
        None,
        "the controller's enrollment endpoint, such as https://controller.example:8443",
    ),
    Option(
        "token_file",
        "RCIOTS_TOKEN_FILE",
        None,
        "a file holding the provisioning token (or set RCIOTS_TOKEN); needed until enrolled",
    ),
    Option(
        "token",
        "RCIOTS_TOKEN",
        None,
        "the provisioning token itself; environment only, never on the command line",
        secret=True,
    ),
    Option(
        "device_name",
        "RCIOTS_DEVICE_NAME",
        None,
        "the device's name in the fleet, a DNS label (default: the host name's first label, "
        "in lower case)",
    ),
    Option(
        "ca_file",
        "RCIOTS_CA_FILE",
        None,
        "PEM file of the CA to trust for enrollment (the controller's root.pem); default: the "
        "system's trusted CAs",
    ),
    Option(
        "state_dir",
        "RCIOTS_STATE_DIR",
        "/var/lib/rciots-agent",
        "where the agent keeps its identity and last desired and applied state",
    ),
    Option(
        "identity_secret",
        "RCIOTS_IDENTITY_SECRET",
        None,
        "in a cluster: NAMESPACE/NAME of a Secret to keep the identity in, through kubectl",
        metavar="NAMESPACE/NAME",
    ),
    Option(
        "applier",
        "RCIOTS_APPLIER",
        "directory",
        "how manifests are applied: directory, podman, kubectl or oc",
        metavar="KIND",
    ),
    Option(
        "output_dir",
        "RCIOTS_OUTPUT_DIR",
        None,
        "the directory applier's folder (default: STATE-DIR/manifests)",
    ),
    Option(
        "kubectl",
        "RCIOTS_KUBECTL",
        None,
        "the kubectl or oc executable (default: on PATH)",
        metavar="PROGRAM",
    ),
    Option("podman", "RCIOTS_PODMAN", "podman", "the podman executable", metavar="PROGRAM"),
    Option(
        "connector_url",
        "RCIOTS_CONNECTOR_URL",
        None,
        "override the connector URL the controller gave at enrollment",
    ),
    Option(
        "labels",
        "RCIOTS_LABELS",
        "",
        "labels to ask for at enrollment, key=value separated by commas",
    ),
    Option(
        "max_reconnect_delay",
        "RCIOTS_MAX_RECONNECT_DELAY",
        300.0,
        "longest wait in seconds between connection attempts (exponential backoff, full jitter)",
        kind=float,
        metavar="SECONDS",
    ),
)


@dataclass(frozen=True)
class AgentConfig:
    enroll_url: str | None = None
    token: str | None = field(default=None, repr=False)
    device_name: str = field(default_factory=lambda: host_device_name(socket.gethostname()))
    ca_file: Path | None = None
    state_dir: Path = Path("/var/lib/rciots-agent")
    identity_secret: str | None = None
    applier: str = "directory"
    output_dir: Path | None = None
    kubectl: str | None = None
    podman: str = "podman"
    connector_url: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    max_reconnect_delay: float = 300.0

    @property
    def manifests_dir(self) -> Path:
        return self.output_dir or self.state_dir / "manifests"


_PATHS = {"ca_file", "state_dir", "output_dir"}
_URLS = (
    ("enroll_url", "https", "https://controller.example:8443"),
    ("connector_url", "wss", "wss://controller.example:8444/v1/connect"),
)
_TOKEN_OPTIONS = ("token_file", "token")
_SECRET_NAME = re.compile(r"[^/\s]+/[^/\s]+")


def load(
    file: Path | None,
    environ: Mapping[str, str],
    command_line: Mapping[str, object],
) -> AgentConfig:
    """The configuration from a TOML ``file`` (None: the default file, if it exists), the
    environment and the command line's options (name -> value; None values are unset)."""
    values: dict[str, object] = {}
    sources: dict[str, str] = {}

    def put(name: str, value: object, source: str) -> None:
        # token and token_file are one setting given two ways: a later source that gives
        # either replaces both (within one source, the token itself wins: it comes later)
        if name in _TOKEN_OPTIONS:
            for other in _TOKEN_OPTIONS:
                values.pop(other, None)
                sources.pop(other, None)
        values[name], sources[name] = value, source

    path = file if file is not None else DEFAULT_CONFIG_FILE
    if file is not None or path.exists():
        for name, value in _read_file(path).items():
            put(name, value, str(path))
    for option in OPTIONS:
        if option.env in environ and environ[option.env] != "":
            put(option.name, environ[option.env], option.env)
    for name, value in command_line.items():
        if value is not None:
            put(name, value, f"--{name.replace('_', '-')}")
    return _build(values, sources)


def _read_file(path: Path) -> dict[str, object]:
    try:
        data = tomllib.loads(path.read_bytes().decode())
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8; the locale's encoding does not matter
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    known = {option.name for option in OPTIONS}
    unknown = sorted(set(data) - known)
    if unknown:
        offered = sorted(option.name for option in OPTIONS if not option.secret)
        raise ConfigError(
            f"{path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(offered)}"
        )
    if "token" in data:
        raise ConfigError(
            f"{path}: write the token into a file of its own and name it with token_file, so "
            "that the configuration can be shown without the secret"
        )
    return dict(data)


def _build(values: dict[str, object], sources: Mapping[str, str]) -> AgentConfig:
    def where(name: str) -> str:
        return f"{name} (from {sources.get(name, 'the default')})"

    settings: dict[str, Any] = {
        option.name: _typed(option, values[option.name], where(option.name))
        for option in OPTIONS
        if option.name in values and option.name not in _TOKEN_OPTIONS
    }
    _check(settings, where)
    return AgentConfig(**settings, token=_token(values, where))


def _typed(option: Option, value: object, where: str) -> object:
    """The value of one option as AgentConfig holds it; ConfigError when it has none."""
    if option.name == "labels":
        return _labels(value, where)
    if option.kind is float:
        try:
            number = float(str(value))
        except ValueError:
            raise ConfigError(f"{where}: not a number: {value!r}") from None
        # NaN passes every comparison and inf would wait for ever
        if not math.isfinite(number):
            raise ConfigError(f"{where}: not a finite number: {value!r}")
        if number <= 0:
            raise ConfigError(f"{where}: must be more than 0")
        return number
    if option.name in _PATHS:
        return Path(str(value))
    return str(value)


def _check(settings: Mapping[str, Any], where: Callable[[str], str]) -> None:
    """The rules between the typed values: found at start, since waiting mends none of them."""
    if settings.get("applier", "directory") not in KINDS:
        raise ConfigError(f"{where('applier')}: must be one of {', '.join(KINDS)}")
    # found here, not at the first request: a bad URL is no reason to retry
    for name, scheme, example in _URLS:
        url = settings.get(name)
        if url is not None and not _is_url(url, scheme):
            raise ConfigError(
                f"{where(name)}: must be a{'n' if scheme == 'https' else ''} {scheme}:// URL with "
                f"a host, such as {example}, not {url!r}"
            )
    secret = settings.get("identity_secret")
    if secret is not None and not _SECRET_NAME.fullmatch(secret):
        raise ConfigError(
            f"{where('identity_secret')}: must be NAMESPACE/NAME, such as "
            f"edge/rciots-agent-identity, not {secret!r}"
        )


def _token(values: Mapping[str, object], where: Callable[[str], str]) -> str | None:
    """The provisioning token: given itself, or read from ``token_file``; None without."""
    token = values.get("token")
    if token is not None:  # copied with its newline, as a token file often is
        token = str(token).strip()
    token_file = values.get("token_file")
    if token_file is not None and token is None:
        try:
            token = Path(str(token_file)).read_bytes().decode().strip()
        except OSError as exc:
            raise ConfigError(f"{where('token_file')}: cannot read it: {exc.strerror}") from None
        except UnicodeDecodeError:  # no byte of it in the message: it is a secret
            raise ConfigError(f"{where('token_file')}: not UTF-8 text") from None
        if not token:
            raise ConfigError(f"{where('token_file')}: the file is empty")
    return str(token) if token else None


def _labels(value: object, where: str) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    labels: dict[str, str] = {}
    for item in str(value).split(","):
        if not item.strip():
            continue
        key, equals, label = item.strip().partition("=")
        if not equals or not key:
            raise ConfigError(f"{where}: {item!r} is not key=value")
        labels[key] = label
    return labels


def _is_url(text: str, scheme: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 -- raises ValueError for a port that is no number
    except ValueError:
        return False
    return parts.scheme.lower() == scheme and bool(parts.hostname)


def host_device_name(hostname: str) -> str:
    """A device name the controller accepts (a DNS-1123 label) from a host name: its first
    label, in lower case, with anything but letters, digits and '-' made '-'."""
    label = hostname.split(".", 1)[0].lower()
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in label)
    return cleaned.strip("-")[:63].strip("-") or "device"


def reference_markdown() -> str:
    """The configuration reference in docs/agent.md: a Markdown table made from ``OPTIONS``,
    one row per option (a test fails when the page and this differ)."""
    rows = [
        "| option (file) | command line | environment | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for option in OPTIONS:
        if option.secret:  # neither in the file nor on the command line
            in_file, flag = "—", "—"
        else:
            in_file = f"`{option.name}`"
            flag = f"`--{option.name.replace('_', '-')}`"
        if option.name == "labels":
            flag = "`--label KEY=VALUE`, repeated"
        default = "—" if option.default in (None, "") else f"`{option.default}`"
        rows.append(f"| {in_file} | {flag} | `{option.env}` | {default} | {option.help} |")
    return "\n".join(rows) + "\n"


def _main(argv: Sequence[str]) -> int:
    if list(argv) != ["--markdown"]:
        print("usage: python -m rciots.agent.config --markdown", file=sys.stderr)
        return 2
    sys.stdout.write(reference_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
