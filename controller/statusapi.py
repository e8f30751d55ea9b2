"""The status page's JSON API: its response models (the OpenAPI contract) and the conversion
of the view model into them.

Position in the flow: ``fleetview`` (pure views) -> **statusapi** (pydantic models, camelCase
JSON) -> ``statuspage`` (routes, which declare these models so that FastAPI documents them in
``/openapi.json``). Large lists are serialized here once per change of the fleet and served as
bytes (``dump_devices``), as a declared model validated per request would cost ~10 ms per
thousand rows.

The contract external checks rely on: ``GET /api/v1/devices`` returns a list of ``Device``
with at least ``tenant``, ``name``, ``online``, ``state`` (``fleetview.STATES``),
``desiredRevision`` and ``appliedRevision``; ``GET /api/v1/enrollments?state=pending`` a list
of ``Enrollment``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from rciots.controller import fleetview, registry, statushistory
from rciots.controller.diagnostics import Diagnostic

__all__ = [
    "Counts",
    "Device",
    "DeviceDetail",
    "Enrollment",
    "Health",
    "HistoryEntry",
    "Overview",
    "Resource",
    "TenantCounts",
    "Token",
    "counts_of",
    "detail_of",
    "device_of",
    "dump_devices",
    "enrollment_of",
    "registration_of",
    "token_of",
]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class Device(_Model):
    """One device, as in the fleet overview."""

    tenant: str
    name: str
    online: bool
    state: fleetview.State
    desired_revision: str | None
    desired_digest: str | None
    applied_revision: str | None
    applied_digest: str | None
    last_seen: datetime | None
    labels: dict[str, str]
    enrolled: bool
    enabled: bool
    device_id: str | None
    error: str | None


class Resource(_Model):
    resource: str
    action: str
    ok: bool
    message: str


class HistoryEntry(_Model):
    commit: str
    at: datetime
    subject: str
    result: str | None
    connected: bool | None
    desired_revision: str | None
    applied_revision: str | None
    deleted: bool


class Enrollment(_Model):
    """A pending enrollment (``state: pending``) or an enrolled identity (``enrolled``)."""

    state: Literal["pending", "enrolled"]
    tenant: str
    name: str
    token: str
    key_fingerprint: str
    address: str | None = None  # pending: where the request came from
    requested_at: datetime | None = None  # pending: the first request
    last_request_at: datetime | None = None  # pending: the latest one (the agent polls)
    labels: dict[str, str]
    system: dict[str, str] = {}
    device_file: str | None = None  # pending: the file the approving pull request adds
    approve_commands: list[str] = []  # pending: the commands that make that pull request
    device_id: str | None = None  # enrolled
    enrolled_at: datetime | None = None  # enrolled
    certificate_not_after: datetime | None = None  # enrolled
    approval: Literal["auto", "manual"] | None = None  # enrolled: the token's, then


class DeviceDetail(_Model):
    """Everything the device page shows."""

    device: Device
    description: str
    template: str | None
    attempted_revision: str | None
    render_error: str | None
    last_apply_revision: str | None
    last_apply_digest: str | None
    last_apply_at: datetime | None
    apply_error: str | None
    resources: list[Resource]
    denied: str | None
    approved: bool | None
    enrollment: Enrollment | None
    desired_revision_url: str | None
    applied_revision_url: str | None
    history: list[HistoryEntry]


class Counts(_Model):
    total: int
    online: int
    in_sync: int
    out_of_sync: int
    failed: int
    offline: int
    pending_approval: int


class TenantCounts(_Model):
    tenant: str
    display_name: str
    counts: Counts


class Overview(_Model):
    """The fleet overview: counts, per tenant, and one page of the (filtered) devices."""

    counts: Counts
    tenants: list[TenantCounts]
    matching: int  # devices that match the filters
    page: int
    pages: int
    per_page: int
    devices: list[Device]


class Token(_Model):
    """A provisioning token: never its secret, nor its hash."""

    tenant: str
    name: str
    approval: Literal["auto", "manual"]
    enabled: bool
    expires: datetime | None
    expired: bool
    max_devices: int | None
    used: int
    pending: int
    template: str | None
    labels: dict[str, str]


class RepoError(_Model):
    path: str
    line: int
    column: int
    message: str
    severity: str


class Health(_Model):
    """The controller itself: its source, its last reconcile pass, its agents."""

    ready: bool
    tracked_branch: str
    revision: str | None
    revision_url: str | None
    last_fetch_at: datetime | None
    last_success_at: datetime | None
    stale_since: datetime | None
    last_error: str | None
    fetch_failures: int
    last_pass_seconds: float | None
    last_pass_rendered: int | None
    last_pass_failed: int | None
    render_failures: dict[str, list[str]]  # tenant -> devices whose render failed
    repo_errors: list[RepoError]
    connected_agents: int
    status_branch: str
    status_writer_running: bool
    status_files_pending: int


def device_of(row: fleetview.DeviceRow) -> Device:
    return Device.model_validate(_device_json(row))


def dump_devices(rows: Sequence[fleetview.DeviceRow]) -> bytes:
    """``rows`` as the JSON of ``GET /api/v1/devices``: what ``Device`` models would give
    (``device_of`` validates the same dictionaries; a test holds the two together), at a
    third of the cost, as a list of 10,000 objects is made once per change of the fleet."""
    return pydantic_core.to_json([_device_json(row) for row in rows])


def _device_json(row: fleetview.DeviceRow) -> dict[str, object]:
    return {
        "tenant": row.tenant,
        "name": row.name,
        "online": row.online,
        "state": row.state,
        "desiredRevision": row.desired_revision,
        "desiredDigest": row.desired_digest,
        "appliedRevision": row.applied_revision,
        "appliedDigest": row.applied_digest,
        "lastSeen": row.last_seen,
        "labels": dict(row.labels),
        "enrolled": row.enrolled,
        "enabled": row.enabled,
        "deviceId": row.device_id,
        "error": row.error,
    }


def counts_of(counts: fleetview.Counts) -> Counts:
    return Counts(
        total=counts.total,
        online=counts.online,
        in_sync=counts.of("in-sync"),
        out_of_sync=counts.of("out-of-sync"),
        failed=counts.of("failed"),
        offline=counts.of("offline"),
        pending_approval=counts.of("pending-approval"),
    )


def enrollment_of(view: fleetview.PendingView) -> Enrollment:
    entry = view.entry
    return Enrollment(
        state="pending",
        tenant=entry.tenant,
        name=entry.name,
        token=entry.token,
        key_fingerprint=entry.key_fingerprint,
        address=entry.address,
        requested_at=entry.requested_at,
        last_request_at=entry.last_request_at,
        labels=dict(entry.labels),
        system=dict(entry.system),
        device_file=view.device_file,
        approve_commands=list(view.commands),
    )


def registration_of(entry: registry.Registration) -> Enrollment:
    return Enrollment(
        state="enrolled",
        tenant=entry.tenant,
        name=entry.name,
        token=entry.token,
        key_fingerprint=entry.key_fingerprint,
        labels=dict(entry.labels),
        device_id=entry.device_id,
        enrolled_at=entry.enrolled_at,
        certificate_not_after=entry.certificate_not_after,
        approval=entry.approval,
    )


def detail_of(
    detail: fleetview.DeviceDetail,
    history: Sequence[statushistory.HistoryEntry],
    pending: fleetview.PendingView | None,
    repo_web_url: str | None,
) -> DeviceDetail:
    row = detail.row
    enrollment = None
    if pending is not None:
        enrollment = enrollment_of(pending)
    elif detail.registration is not None:
        enrollment = registration_of(detail.registration)
    return DeviceDetail(
        device=device_of(row),
        description=detail.description,
        template=detail.template,
        attempted_revision=detail.attempted_revision,
        render_error=detail.render_error,
        last_apply_revision=detail.tried_revision,
        last_apply_digest=detail.tried_digest,
        last_apply_at=detail.tried_at,
        apply_error=detail.apply_error,
        resources=[
            Resource(resource=r.resource, action=r.action, ok=r.ok, message=r.message)
            for r in detail.resources
        ],
        denied=detail.denied,
        approved=detail.approved,
        enrollment=enrollment,
        desired_revision_url=fleetview.commit_url(repo_web_url, row.desired_revision),
        applied_revision_url=fleetview.commit_url(repo_web_url, row.applied_revision),
        history=[HistoryEntry.model_validate(h, from_attributes=True) for h in history],
    )


def token_of(view: fleetview.TokenView) -> Token:
    return Token.model_validate(view, from_attributes=True)


def repo_error_of(diagnostic: Diagnostic) -> RepoError:
    return RepoError.model_validate(diagnostic, from_attributes=True)
