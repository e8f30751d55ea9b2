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

from rciots.controller import layout, names, redaction, timestamps, yamlwrite

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
        f"  tenant: {yamlwrite.scalar(status.tenant)}",
        f"  name: {yamlwrite.scalar(status.device)}",
        "status:",
        f"  result: {yamlwrite.scalar(status.result)}",
        f"  connected: {'true' if status.connected else 'false'}",
        yamlwrite.entry(
            2, "lastSeen", None if last_seen is None else timestamps.format_timestamp(last_seen)
        ),
        yamlwrite.entry(2, "desiredRevision", status.desired_revision),
        yamlwrite.entry(2, "desiredDigest", status.desired_digest),
        yamlwrite.entry(2, "lastAttemptedRevision", status.attempted_revision),
        yamlwrite.entry(2, "renderError", error_text(status.render_error)),
        yamlwrite.entry(2, "lastAppliedRevision", status.applied_revision),
        yamlwrite.entry(2, "lastAppliedDigest", status.applied_digest),
    ]
    if errors:
        lines.append("  resourceErrors:")
        for resource, message in errors:
            lines.append(yamlwrite.entry(2, "- resource", resource))
            lines.append(yamlwrite.entry(4, "message", message))
    else:
        lines.append("  resourceErrors: []")
    if omitted:
        lines.append(f"  resourceErrorsOmitted: {omitted}")
    return ("\n".join(lines) + "\n").encode("utf-8")
