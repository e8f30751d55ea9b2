"""Who is asking: the status page's credentials, and the admin credential's file.

Position in the flow: an HTTP request to the status page (``statuspage``) -> **auth** (its
credential -> a ``Principal``) -> the views it may see. The fleet model says who the viewers
are (``spec.viewers`` of each tenant.yaml: a name and the sha256 hash of a credential, as
``tokens.hash_token`` makes it); the controller's configuration gives the admin credential.

A viewer sees only their tenant; the admin sees every tenant. A credential is compared with
the admin credential and with every viewer hash, each in constant time and without stopping
at a match, so the time an answer takes says nothing about which credentials exist. No
credential is ever logged or shown; the admin credential file is created readable by its
owner only.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from rciots.controller import fleet, tokens

__all__ = [
    "ADMIN_FILE",
    "ADMIN_PREFIX",
    "MAX_CREDENTIAL_CHARS",
    "Principal",
    "identify",
    "load_or_create_admin_token",
    "read_admin_token",
]

log = logging.getLogger(__name__)

ADMIN_FILE = "admin-token"  # in the state directory, when none is configured
ADMIN_PREFIX = "rciots-adm-"
MAX_CREDENTIAL_CHARS = 512  # longer is no credential of ours: refused before hashing


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: the admin (``tenants`` None: all of them) or a viewer of
    some tenants."""

    name: str  # "admin", or the viewer's name
    tenants: frozenset[str] | None

    @property
    def admin(self) -> bool:
        return self.tenants is None

    def may_see(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


def identify(credential: str, admin_token: str | None, model: fleet.FleetModel) -> Principal | None:
    """The principal ``credential`` belongs to, or None."""
    if not credential or len(credential) > MAX_CREDENTIAL_CHARS:
        return None
    presented = credential.encode()
    is_admin = admin_token is not None and hmac.compare_digest(presented, admin_token.encode())
    hashed = tokens.hash_token(credential).encode()
    viewer: str | None = None
    viewed: set[str] = set()  # the tenants whose viewers hold this credential
    for tenant_name, tenant in model.tenants.items():
        for entry in tenant.tenant.viewers:
            # every hash is compared, a match or not: no early exit to time
            if hmac.compare_digest(hashed, entry.token_hash.encode()):
                viewer = entry.name
                viewed.add(tenant_name)
    if is_admin:
        return Principal("admin", None)
    if viewer is not None:
        return Principal(viewer, frozenset(viewed))
    return None


def read_admin_token(path: Path) -> str:
    """The admin credential in ``path`` (surrounding white space dropped); ValueError with a
    message that names the file, never its content."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the admin token file {path}: {exc.strerror}") from None
    if not text:
        raise ValueError(f"the admin token file {path} is empty")
    if len(text) > MAX_CREDENTIAL_CHARS:
        raise ValueError(f"the admin token in {path} is longer than {MAX_CREDENTIAL_CHARS}")
    return text


def load_or_create_admin_token(state_dir: Path) -> tuple[str, Path]:
    """The admin credential kept in ``state_dir``: made on first start (random, 256 bits),
    written readable by the owner only; read again on later starts. Logs where it is (never
    the credential)."""
    path = state_dir / ADMIN_FILE
    if path.exists():
        return read_admin_token(path), path
    state_dir.mkdir(parents=True, exist_ok=True)
    token = ADMIN_PREFIX + secrets.token_urlsafe(32)
    # O_EXCL: two controllers starting on one state directory never overwrite each other's
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_admin_token(path), path
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
        file.flush()
        os.fsync(file.fileno())
    log.info("made an admin credential for the status page: it is in %s", path)
    return token, path
