"""Provisioning tokens: the secret, its hash, its expiry, and the file that holds the hash.

``rciots token create`` uses these to make a token; the enrollment API hashes what an agent
presents with ``hash_token`` and compares it with the ``secretHash`` in Git. The secret itself
is shown to the user once and never stored: only its hash goes into the fleet repo.

Pure functions, apart from ``generate_token``, which draws from the system's random source.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from rciots.controller import layout, timestamps, yamledit

__all__ = [
    "APPROVALS",
    "TOKEN_PREFIX",
    "Approval",
    "generate_token",
    "hash_token",
    "parse_expires",
    "render_token_file",
]

# A recognisable prefix lets secret scanners and people spot a leaked token.
TOKEN_PREFIX = "rciots-pt-"  # noqa: S105 -- a prefix, not a secret
Approval = Literal["auto", "manual"]
APPROVALS: tuple[Approval, ...] = ("auto", "manual")

_TOKEN_BYTES = 32  # 256 bits: out of reach of guessing, so a fast unsalted hash is enough


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
    when = timestamps.parse_timestamp(text)
    if when <= now:
        shown = timestamps.format_timestamp(now.replace(microsecond=0))
        raise ValueError(
            f"that is not in the future (it is now {shown}): give a later date or time"
        )
    return when


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
        spec["expires"] = yamledit.double_quoted(timestamps.format_timestamp(expires))
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
