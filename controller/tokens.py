"""Provisioning tokens: the secret, its hash, its expiry, and the file that holds the hash.

``rciots token create`` uses these to make a token; the enrollment API hashes what an agent
presents with ``hash_token`` and compares it with the ``secretHash`` in Git. The secret itself
is shown to the user once and never stored: only its hash goes into the fleet repo.

Pure functions, apart from ``generate_token``, which draws from the system's random source.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

from rciots.controller import layout, yamledit

__all__ = [
    "APPROVALS",
    "EXPIRES_HINT",
    "TOKEN_PREFIX",
    "Approval",
    "format_timestamp",
    "generate_token",
    "hash_token",
    "parse_expires",
    "render_token_file",
]

# A recognisable prefix lets secret scanners and people spot a leaked token.
TOKEN_PREFIX = "rciots-pt-"  # noqa: S105 -- a prefix, not a secret
Approval = Literal["auto", "manual"]
APPROVALS: tuple[Approval, ...] = ("auto", "manual")
EXPIRES_HINT = "write a date (2027-12-31) or an RFC 3339 time with zone (2027-12-31T18:00:00Z)"

_TOKEN_BYTES = 32  # 256 bits: out of reach of guessing, so a fast unsalted hash is enough
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_DATE_TIME = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"
    r"(?:\.(?P<fraction>\d+))?(?P<zone>[Zz]|[+-]\d{2}:\d{2})"
)
_NAIVE_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?")


def generate_token() -> str:
    """A new secret: the prefix and 43 URL-safe characters."""
    return TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)


def hash_token(token: str) -> str:
    """The form stored in Git as ``spec.secretHash``."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_expires(text: str, now: datetime) -> datetime:
    """When a token stops enrolling devices, as typed after ``--expires``; must be after ``now``.

    A date means 00:00 UTC that day; a time needs a zone (``Z`` or ``+hh:mm``), since a
    controller and the person who typed the time rarely share one. Raises ValueError with
    advice that reads well after "bad --expires 'TEXT': ".
    """
    when = _parse_timestamp(text)
    if when <= now:
        shown = format_timestamp(now.replace(microsecond=0))
        raise ValueError(
            f"that is not in the future (it is now {shown}): give a later date or time"
        )
    return when


def format_timestamp(when: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, e.g. ``2027-12-31T00:00:00Z``."""
    return when.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def render_token_file(
    name: str,
    secret_hash: str,
    *,
    approval: Approval,
    expires: datetime | None = None,
    max_devices: int | None = None,
    template: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Text of ``tenants/<tenant>/tokens/<name>.yaml``; optional fields only when given."""
    spec: dict[str, object] = {"secretHash": secret_hash, "approval": approval, "enabled": True}
    if expires is not None:
        # Quoted, so that YAML readers that know timestamps still hand over the string.
        spec["expires"] = yamledit.double_quoted(format_timestamp(expires))
    if max_devices is not None:
        spec["maxDevices"] = max_devices
    if template is not None:
        spec["template"] = template
    if labels:
        spec["labels"] = dict(labels)
    document = {
        "apiVersion": layout.API_VERSION,
        "kind": "ProvisioningToken",
        "metadata": {"name": name},
        "spec": spec,
    }
    header = (
        "Created by `rciots token create`.",
        "Only a hash of the secret is stored here; the token itself was shown once.",
    )
    return yamledit.render(document, header=header)


def _parse_timestamp(text: str) -> datetime:
    if _DATE.fullmatch(text):
        return _at_midnight_utc(text)
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        if _NAIVE_DATE_TIME.fullmatch(text):
            raise ValueError(
                "the time has no zone: add Z for UTC or an offset such as +02:00 "
                "(2027-12-31T18:00:00Z)"
            )
        raise ValueError(EXPIRES_HINT)
    try:
        return datetime(
            *_date_parts(match["date"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            _microseconds(match["fraction"]),
            tzinfo=_zone(match["zone"]),
        )
    except ValueError:
        raise ValueError(EXPIRES_HINT) from None


def _at_midnight_utc(text: str) -> datetime:
    try:
        return datetime(*_date_parts(text), tzinfo=UTC)
    except ValueError:
        raise ValueError(EXPIRES_HINT) from None


def _date_parts(text: str) -> tuple[int, int, int]:
    year, month, day = text.split("-")
    return int(year), int(month), int(day)


def _microseconds(fraction: str | None) -> int:
    # RFC 3339 allows any number of digits; a datetime keeps six.
    return int((fraction or "0")[:6].ljust(6, "0"))


def _zone(text: str) -> timezone:
    if text in ("Z", "z"):
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 23 or minutes > 59:
        raise ValueError(text)
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if text[0] == "-" else offset)
