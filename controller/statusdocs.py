"""Status documents: the bytes of each file the controller writes on the status branch.

Position in the flow: desired state (render) and connector sessions -> **status documents** ->
status writer (``statuswriter``, batching) -> status branch (``statusbranch``, Git). Pure: a
``DeviceStatus`` in, stable YAML bytes out, so that the writer can compare bytes and commit only
when a document really changed.

"Only on meaningful change, never per heartbeat" is decided here: ``lastSeen`` is written at a
coarse granularity while a device is connected (``written_last_seen``), so a heartbeat every
20 s leaves the file as it was, while a connect or disconnect changes it.

Secrets never reach these documents: ``DeviceStatus`` carries revisions, digests, a result,
error texts and times by design, never manifests, Secret data or device tokens. As a second
line of defence, error texts lose any ``user:password@`` in URLs (``redaction.redact``) and
are capped in length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rciots.controller import layout, names, redaction, timestamps

__all__ = [
    "APPLIED",
    "APPLY_FAILED",
    "DEFAULT_LAST_SEEN_GRANULARITY",
    "KIND",
    "MAX_ERROR_BYTES",
    "MAX_RESOURCE_ERRORS",
    "PENDING",
    "README",
    "README_PATH",
    "RENDER_FAILED",
    "DeviceStatus",
    "cap_text",
    "render_status",
    "status_path",
    "written_last_seen",
]

KIND = "DeviceStatus"

# Results: stated facts with CamelCase reasons, as Flux writes them. Others may be added by the
# parts that decide a device's result; render_status accepts any CamelCase word.
PENDING = "Pending"  # the desired state has not been applied (yet) by the device
APPLIED = "Applied"  # the device applied the desired digest
APPLY_FAILED = "ApplyFailed"  # the device tried the desired digest and reported errors
RENDER_FAILED = "RenderFailed"  # the last attempted revision did not render for this device

DEFAULT_LAST_SEEN_GRANULARITY = timedelta(hours=1)
MAX_ERROR_BYTES = 2048  # per error text, in UTF-8 bytes, truncation note included
MAX_RESOURCE_ERRORS = 50  # per device; the rest are counted, not listed
_MAX_RESOURCE_NAME_BYTES = 512

_CAMEL_CASE = re.compile(r"[A-Z][A-Za-z0-9]*")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

README_PATH = "README.md"
README = b"""\
# RCIoTs status branch

This branch is written by the RCIoTs controller. It records what the controller observed:
enrolled device identities, pending enrollments and the status of every device. Do not edit
it by hand and do not open pull requests against it: the controller commits here on its own,
and a change made here is overwritten the next time the controller writes the same file.

The fleet itself (tenants, tokens, devices, templates) lives on the tracked branch, which the
controller only reads.

```
registry/<tenant>/<device>.yaml   enrolled device identities (no secrets: hashes only)
pending/<tenant>/<name>.yaml      enrollments waiting for approval in a pull request
status/<tenant>/<device>.yaml     kind: DeviceStatus: desired, attempted and applied revision,
                                  result, errors, last seen, connected
```

The meaning of every file and field is documented in docs/status-branch.md of RCIoTs.
"""


@dataclass(frozen=True)
class DeviceStatus:
    """What the controller knows about one device, as written to ``status/<t>/<d>.yaml``.

    Revisions are fleet repo commit ids; digests are the ``sha256:`` digests of rendered
    manifests. ``resource_errors`` holds ``("Kind/name", message)`` pairs reported by the
    device's applier. No field holds manifests or Secret data, by design.
    """

    tenant: str
    device: str
    result: str = PENDING
    desired_revision: str | None = None
    desired_digest: str | None = None
    attempted_revision: str | None = None
    render_error: str | None = None
    applied_revision: str | None = None
    applied_digest: str | None = None
    resource_errors: Sequence[tuple[str, str]] = field(default_factory=tuple)
    last_seen: datetime | None = None
    connected: bool = False


def status_path(tenant: str, device: str) -> str:
    """``status/<tenant>/<device>.yaml``; ValueError when a name could escape that folder."""
    for what, name in (("tenant", tenant), ("device", device)):
        if not names.is_dns_label(name):
            raise ValueError(
                f"status of {tenant}/{device}: {what} name {name!r} is not valid: "
                f"{names.DNS_LABEL_HINT}"
            )
    return f"status/{tenant}/{device}.yaml"


def written_last_seen(
    last_seen: datetime | None,
    connected: bool,
    granularity: timedelta = DEFAULT_LAST_SEEN_GRANULARITY,
) -> datetime | None:
    """The ``lastSeen`` value to write: the only place that decides how often it changes.

    While connected, the time is rounded down to ``granularity`` (since 1970-01-01 UTC), so
    heartbeats change the file at most once per granularity. Once disconnected, nothing updates
    it any more, so it is written to the second: when a device went away is what a reader
    needs then, and it costs one change per disconnect.
    """
    if last_seen is None:
        return None
    if last_seen.tzinfo is None:
        raise ValueError(f"last_seen {last_seen.isoformat()} has no time zone: pass an aware time")
    if granularity <= timedelta(0):
        raise ValueError(f"last-seen granularity must be positive, not {granularity}")
    when = last_seen.astimezone(UTC).replace(microsecond=0)
    if not connected:
        return when
    return when - (when - _EPOCH) % granularity


def cap_text(text: str, max_bytes: int = MAX_ERROR_BYTES) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes, with a note saying it was cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return text
    note = f" ... [truncated: {len(data)} bytes in all]"
    keep = max(0, max_bytes - len(note))
    # "ignore" drops a character cut in half at the end
    return data[:keep].decode("utf-8", "ignore") + note


def render_status(
    status: DeviceStatus,
    *,
    granularity: timedelta = DEFAULT_LAST_SEEN_GRANULARITY,
    max_error_bytes: int = MAX_ERROR_BYTES,
    max_resource_errors: int = MAX_RESOURCE_ERRORS,
) -> bytes:
    """The YAML document for ``status``: the same input always gives the same bytes.

    Keys come in a fixed order and every key is always present (``null`` when unknown), so
    that a diff on the status branch shows exactly what changed. Resource errors are sorted.
    """
    status_path(status.tenant, status.device)  # the names check
    if not _CAMEL_CASE.fullmatch(status.result):
        raise ValueError(
            f"status of {status.tenant}/{status.device}: result {status.result!r} is not a "
            f"CamelCase reason such as {APPLIED} or {RENDER_FAILED}"
        )
    last_seen = written_last_seen(status.last_seen, status.connected, granularity)
    errors = sorted(
        (
            cap_text(redaction.redact(resource), _MAX_RESOURCE_NAME_BYTES),
            cap_text(redaction.redact(message), max_error_bytes),
        )
        for resource, message in status.resource_errors
    )
    omitted = max(0, len(errors) - max_resource_errors)
    errors = errors[:max_resource_errors]

    def error_text(text: str | None) -> str | None:
        return None if text is None else cap_text(redaction.redact(text), max_error_bytes)

    lines = [
        f"apiVersion: {layout.API_VERSION}",
        f"kind: {KIND}",
        "metadata:",
        f"  tenant: {_scalar(status.tenant)}",
        f"  name: {_scalar(status.device)}",
        "status:",
        f"  result: {_scalar(status.result)}",
        f"  connected: {'true' if status.connected else 'false'}",
        _entry(
            2, "lastSeen", None if last_seen is None else timestamps.format_timestamp(last_seen)
        ),
        _entry(2, "desiredRevision", status.desired_revision),
        _entry(2, "desiredDigest", status.desired_digest),
        _entry(2, "lastAttemptedRevision", status.attempted_revision),
        _entry(2, "renderError", error_text(status.render_error)),
        _entry(2, "lastAppliedRevision", status.applied_revision),
        _entry(2, "lastAppliedDigest", status.applied_digest),
    ]
    if errors:
        lines.append("  resourceErrors:")
        for resource, message in errors:
            lines.append(_entry(2, "- resource", resource))
            lines.append(_entry(4, "message", message))
    else:
        lines.append("  resourceErrors: []")
    if omitted:
        lines.append(f"  resourceErrorsOmitted: {omitted}")
    return ("\n".join(lines) + "\n").encode("utf-8")


# -- a small YAML scalar emitter: exact round trip through any YAML 1.1 or 1.2 reader ---------

# Plain (unquoted) only when no YAML reader could take it for anything but this string.
# A letter first; then letters, digits, spaces and some punctuation; a colon only inside a
# word (": " would start a mapping); no "#" (" #" would start a comment); no trailing space.
_PLAIN = re.compile(r"[A-Za-z](?:[A-Za-z0-9._/+(),' -]|:(?=[^\s]))*(?<! )")
_WORDS_OF_OTHER_TYPES = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", '"': '\\"', "\\": "\\\\", "\0": "\\0"}


def _entry(indent: int, key: str, value: str | None) -> str:
    """``key: value`` at ``indent``; a multi-line text as a literal block, readable in diffs."""
    pad = " " * indent
    if value is None:
        return f"{pad}{key}: null"
    if _fits_literal_block(value):
        # content is indented two past the key; for "- resource" that is past the dash too
        content_pad = " " * (indent + 2 + (2 if key.startswith("- ") else 0))
        body = value[:-1] if value.endswith("\n") else value
        chomp = "+" if value.endswith("\n\n") else ("" if value.endswith("\n") else "-")
        lines = [f"{content_pad}{line}" if line else "" for line in body.split("\n")]
        return f"{pad}{key}: |{chomp}\n" + "\n".join(lines)
    return f"{pad}{key}: {_scalar(value)}"


def _scalar(text: str) -> str:
    if _PLAIN.fullmatch(text) and text.lower() not in _WORDS_OF_OTHER_TYPES:
        return text
    return '"' + "".join(_escape(char) for char in text) + '"'


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if _printable(char):
        return char
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"  # a lone surrogate cannot be written in UTF-8 (nor escaped in YAML)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _printable(char: str) -> bool:
    # YAML's printable set, minus what some reader treats as a line break or a byte order
    # mark (NEL, LS, PS, BOM): those are escaped instead.
    code = ord(char)
    return (
        0x20 <= code <= 0x7E
        or 0xA0 <= code <= 0xD7FF
        or (0xE000 <= code <= 0xFFFD and code not in (0xFEFF,))
        or 0x10000 <= code <= 0x10FFFF
    ) and code not in (0x2028, 0x2029)


def _fits_literal_block(text: str) -> bool:
    # A literal block keeps every character as written; it cannot hold what must be escaped,
    # and its indentation is taken from the first line, which must therefore not start blank.
    return (
        "\n" in text
        and text[0] not in " \t\n"
        and all(char == "\n" or _printable(char) for char in text)
    )
