"""Enrollment decisions: a provisioning token and a device's request -> who, if anyone, it is.

Position in the flow: enrollment API (HTTP, ``enroll_endpoint``) -> **enrollment** (decide, then
sign and record through ``Enroller``) -> registry -> status branch / connector. ``decide`` is
pure: the fleet model (tokens, tenants, Device files from Git), the registry's view and the
request in, one ``Decision`` out. ``Enroller`` carries it out: it signs with the CA and writes
the registry while holding the registry's lock, so that two concurrent enrollments can never
both take the last place under ``maxDevices``.

The answers, in the order they are checked (cheapest and least revealing first):

- 404 ``token not found``: unknown, malformed, or empty token. Every token hash of the model is
  compared, in constant time, so the answer's timing says nothing about which tokens or tenants
  exist.
- 403 tenant disabled, token disabled, token expired.
- 422 an invalid CSR (bad PEM, bad signature, weak key) or a device name that is no DNS label.
- 403 device disabled (its Device file says ``enabled: false``).
- 409 the name is enrolled with another key (no takeover), or the key belongs to another device
  (a cloned image), or the name is pending with another key.
- 202 pending (a manual token and no approved Device file yet); sending the same request again
  while pending answers the same and records the time of the poll.
- 429 too many pending requests for the token.
- 403 device limit reached (the token's or the tenant's ``maxDevices``).
- 200 identity: device id, device token (shown once; only its hash is kept), certificate chain,
  CA bundle, connector URL. The same name and key enrolling again (an agent that lost its
  answer) gets a new device token and certificate for the same device id.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal, Protocol

from cryptography import x509

from rciots.controller import ca, fleet, names, registry, tokens

__all__ = [
    "DEVICE_TOKEN_PREFIX",
    "Admit",
    "Answer",
    "Decision",
    "Denied",
    "Enroller",
    "Policy",
    "Request",
    "Wait",
    "decide",
    "generate_device_token",
    "hash_device_token",
]

log = logging.getLogger(__name__)

DEVICE_TOKEN_PREFIX = "rciots-dt-"  # noqa: S105 -- a prefix, not a secret
_NOT_FOUND = "token not found"


class RegistryView(Protocol):
    def by_name(self, tenant: str, name: str) -> registry.Registration | None: ...
    def by_key(self, key_fingerprint: str) -> registry.Registration | None: ...
    def count(self, tenant: str, token: str | None = None) -> int: ...
    def pending(self, tenant: str, name: str) -> registry.Pending | None: ...
    def pending_count(self, tenant: str, token: str) -> int: ...


@dataclass(frozen=True)
class Request:
    """What a device sent; ``token`` is a secret and is left out of repr."""

    token: str = field(repr=False)
    name: str
    csr_pem: bytes
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    system: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """The controller's settings for enrollment."""

    connector_url: str
    device_lifetime: timedelta = ca.DEFAULT_DEVICE_LIFETIME
    pending_ttl: timedelta = timedelta(days=7)
    max_pending_per_token: int = 100
    poll_after: int = 30  # seconds, the Retry-After of a pending answer


@dataclass(frozen=True)
class Denied:
    status: int
    reason: str
    retry_after: int | None = None


@dataclass(frozen=True)
class Wait:
    """Record (or refresh) a pending enrollment."""

    pending: registry.Pending


@dataclass(frozen=True)
class Admit:
    """Issue an identity: a new device, or the same one again (``existing``)."""

    tenant: str
    name: str
    token: fleet.ProvisioningToken
    csr: x509.CertificateSigningRequest
    key_fingerprint: str
    labels: Mapping[str, str]
    template: str | None
    existing: registry.Registration | None = None


Decision = Denied | Wait | Admit


def _find_token(model: fleet.FleetModel, token: str) -> fleet.ProvisioningToken | None:
    presented = tokens.hash_token(token).encode()
    found = None
    for tenant in model.tenants.values():
        for candidate in tenant.tokens.values():
            # every hash is compared, match or not: the time taken does not depend on which
            if hmac.compare_digest(presented, candidate.secret_hash.encode()):
                found = candidate
    return found


def decide(
    request: Request,
    model: fleet.FleetModel,
    view: RegistryView,
    now: datetime,
    policy: Policy,
) -> Decision:
    token = _find_token(model, request.token)
    if token is None:
        return Denied(404, _NOT_FOUND)
    tenant = model.tenants[token.tenant]
    if not tenant.tenant.enabled:
        return Denied(403, f"tenant {token.tenant} is disabled")
    if not token.enabled:
        return Denied(403, "this provisioning token is disabled")
    if token.is_expired(now):
        return Denied(403, "this provisioning token has expired")
    if not names.is_dns_label(request.name):
        return Denied(422, f"device name {request.name!r} is not valid: {names.DNS_LABEL_HINT}")
    try:
        csr = ca.check_csr(request.csr_pem)
    except ca.CsrRejected as rejected:
        return Denied(422, str(rejected))
    key_fingerprint = ca.key_fingerprint(csr.public_key())
    device = tenant.devices.get(request.name)
    if device is not None and not device.enabled:
        return Denied(403, f"device {request.name} is disabled")

    existing = view.by_name(token.tenant, request.name)
    if existing is not None and existing.key_fingerprint != key_fingerprint:
        return Denied(409, f"device {request.name} is already enrolled with another key")
    owner = view.by_key(key_fingerprint)
    if owner is not None and owner.key != (token.tenant, request.name):
        return Denied(409, "this key is already enrolled for another device (a cloned image?)")
    labels = {**request.labels, **token.labels}
    admit = Admit(
        token.tenant, request.name, token, csr, key_fingerprint, labels, token.template, existing
    )
    if existing is not None:
        return admit  # the same device asking again: it holds the key
    waiting = view.pending(token.tenant, request.name)
    if waiting is not None and now - waiting.requested_at >= policy.pending_ttl:
        waiting = None  # expired: this request starts a new one
    if waiting is not None and waiting.key_fingerprint != key_fingerprint:
        # an approval is for the key that asked for it, whoever else knows the name
        return Denied(409, f"device {request.name} is already waiting with another key")
    approved = device is not None and device.approved
    if token.approval == "manual" and not approved:
        return _wait(request, token, key_fingerprint, waiting, view, now, policy)
    return _within_limits(admit, tenant, view)


def _wait(
    request: Request,
    token: fleet.ProvisioningToken,
    key_fingerprint: str,
    waiting: registry.Pending | None,
    view: RegistryView,
    now: datetime,
    policy: Policy,
) -> Decision:
    if waiting is not None:
        return Wait(replace(waiting, last_request_at=now, address=request.address))
    if view.pending_count(token.tenant, token.name) >= policy.max_pending_per_token:
        return Denied(
            429,
            f"{policy.max_pending_per_token} enrollments with this token already wait for "
            "approval; approve or let them expire, then try again",
            retry_after=3600,
        )
    return Wait(
        registry.Pending(
            tenant=token.tenant,
            name=request.name,
            token=token.name,
            key_fingerprint=key_fingerprint,
            address=request.address,
            requested_at=now,
            last_request_at=now,
            labels=dict(request.labels),
            system=dict(request.system),
        )
    )


def _within_limits(admit: Admit, tenant: fleet.TenantModel, view: RegistryView) -> Decision:
    token = admit.token
    if token.max_devices is not None and view.count(admit.tenant, token.name) >= token.max_devices:
        return Denied(
            403, f"this provisioning token's device limit ({token.max_devices}) is reached"
        )
    limit = tenant.tenant.max_devices
    if limit is not None and view.count(admit.tenant) >= limit:
        return Denied(403, f"tenant {admit.tenant}'s device limit ({limit}) is reached")
    return admit


def generate_device_token() -> str:
    return DEVICE_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_device_token(token: str) -> str:
    return tokens.hash_token(token)


@dataclass(frozen=True)
class Answer:
    """What the HTTP layer sends: a status, a JSON body and extra headers. The body may hold
    the device token, shown once: it is left out of repr."""

    status: int
    body: Mapping[str, object] = field(repr=False)
    retry_after: int | None = None
    outcome: Literal["enrolled", "re-enrolled", "pending", "denied"] = "denied"


class Enroller:
    """Carries out decisions: signs, records, and words the answer; and renews the
    certificates of enrolled devices."""

    def __init__(
        self,
        authority: ca.Authority,
        store: registry.Registry,
        policy: Policy,
    ) -> None:
        self.authority = authority
        self.store = store
        self.policy = policy

    def enroll(self, request: Request, model: fleet.FleetModel, now: datetime) -> Answer:
        with self.store.atomic():
            decision = decide(request, model, self.store, now, self.policy)
            if isinstance(decision, Denied):
                return Answer(
                    decision.status, {"error": decision.reason}, retry_after=decision.retry_after
                )
            if isinstance(decision, Wait):
                self.store.put_pending(decision.pending)
                return Answer(
                    202,
                    {
                        "status": "pending",
                        "message": "waiting for approval: a pull request must add "
                        f"tenants/{decision.pending.tenant}/devices/{decision.pending.name}/"
                        "device.yaml with spec.approved: true",
                        "keyFingerprint": decision.pending.key_fingerprint,
                    },
                    retry_after=self.policy.poll_after,
                    outcome="pending",
                )
            return self._admit(decision, now)

    def _admit(self, admit: Admit, now: datetime) -> Answer:
        existing = admit.existing
        device_id = existing.device_id if existing else str(uuid.uuid4())
        issued = ca.issue_device_certificate(
            self.authority, admit.csr, admit.tenant, device_id, now, self.policy.device_lifetime
        )
        device_token = generate_device_token()
        registration = registry.Registration(
            device_id=device_id,
            tenant=admit.tenant,
            name=admit.name,
            token=existing.token if existing else admit.token.name,
            approval=existing.approval if existing else admit.token.approval,
            device_token_hash=hash_device_token(device_token),
            key_fingerprint=admit.key_fingerprint,
            certificate_serial=issued.serial,
            certificate_fingerprint=issued.fingerprint,
            certificate_not_after=issued.not_after,
            enrolled_at=existing.enrolled_at if existing else now,
            labels=existing.labels if existing else admit.labels,
            template=existing.template if existing else admit.template,
            previous_certificate_serial=existing.certificate_serial if existing else None,
        )
        self.store.put(registration)
        self.store.remove_pending(admit.tenant, admit.name)
        return Answer(
            200,
            {
                "deviceId": device_id,
                "tenant": admit.tenant,
                "name": admit.name,
                "deviceToken": device_token,
                "certificateChain": issued.chain_pem.decode(),
                "certificateNotAfter": issued.not_after.isoformat(),
                "caBundle": self.authority.ca_bundle_pem().decode(),
                "connectorUrl": self.policy.connector_url,
            },
            outcome="re-enrolled" if existing else "enrolled",
        )

    def renew(self, device_id: str, csr_pem: bytes, now: datetime) -> ca.Issued:
        """A new certificate for an enrolled device's CSR (the connector asks for it before
        the old one expires); the registry then holds it, and keeps the old one as the
        previous (accepted until it expires, in case the device never stored the new one).
        CsrRejected or ValueError say why not."""
        csr = ca.check_csr(csr_pem)
        key_fingerprint = ca.key_fingerprint(csr.public_key())
        with self.store.atomic():
            owner = self.store.by_key(key_fingerprint)
            if owner is not None and owner.device_id != device_id:
                raise ValueError("this key is enrolled for another device")
            current = self.store.get(device_id)
            if current is None:
                raise ValueError("the device is no longer registered")
            issued = ca.issue_device_certificate(
                self.authority,
                csr,
                current.tenant,
                current.device_id,
                now,
                self.policy.device_lifetime,
            )
            self.store.put(
                replace(
                    current,
                    key_fingerprint=key_fingerprint,
                    certificate_serial=issued.serial,
                    certificate_fingerprint=issued.fingerprint,
                    certificate_not_after=issued.not_after,
                    previous_certificate_serial=current.certificate_serial,
                )
            )
        return issued

    def expire_pending(self, now: datetime) -> list[registry.Pending]:
        """Remove pending enrollments older than the policy's time to live (under the registry's
        lock: a poll that replaces an expired entry meanwhile keeps its new one)."""
        with self.store.atomic():
            expired = [
                p
                for p in self.store.all_pending()
                if now - p.requested_at >= self.policy.pending_ttl
            ]
            for entry in expired:
                self.store.remove_pending(entry.tenant, entry.name)
        return expired
