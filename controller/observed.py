"""What the controller observed of each device: connected or not, when last seen, what it
applied and how that went; and the device status that results.

Position in the flow: connector (sessions: connect, applied, status, disconnect) ->
**observed** -> status documents (status branch) and the status page. Pure: every change is a
function from one ``Observed`` to the next, with the time passed in.

The result of a device (``statusdocs``' reasons):

- ``RenderFailed``: the last attempted commit did not render for it;
- ``Applied``: it reported the desired digest applied with success;
- ``ApplyFailed``: it reported the desired digest tried, with errors;
- ``Pending``: anything else (offline, not yet told, applying).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from rciots.agent.bundle import ApplyResult, Bundle
from rciots.controller import reconcile, statusdocs

__all__ = [
    "Observed",
    "applied",
    "connected",
    "device_status",
    "disconnected",
    "seen",
]


@dataclass(frozen=True)
class Observed:
    connected: bool = False
    last_seen: datetime | None = None
    applied_revision: str | None = None  # of the last bundle applied with success
    applied_digest: str | None = None
    tried_digest: str | None = None  # of the last bundle the device reported on
    tried_ok: bool = True
    tried_error: str | None = None
    resource_errors: tuple[tuple[str, str], ...] = ()  # of the last report
    # the last report in full, for the status page: when, at which revision, and each
    # resource's (Kind/name, action, message); failed ones are also in resource_errors
    tried_revision: str | None = None
    tried_at: datetime | None = None
    results: tuple[tuple[str, str, str], ...] = ()


def connected(before: Observed | None, now: datetime, applied_digest: str | None) -> Observed:
    """A session opened; the hello said what it runs (its revision is not known from the
    digest alone, unless it is the one already recorded)."""
    base = before or Observed()
    revision = base.applied_revision if applied_digest == base.applied_digest else None
    return replace(
        base,
        connected=True,
        last_seen=now,
        applied_digest=applied_digest,
        applied_revision=revision,
    )


def disconnected(before: Observed | None, now: datetime) -> Observed:
    return replace(before or Observed(), connected=False, last_seen=now)


def seen(before: Observed | None, now: datetime) -> Observed:
    return replace(before or Observed(), last_seen=now)


def applied(
    before: Observed | None, bundle: Bundle, result: ApplyResult, now: datetime
) -> Observed:
    base = before or Observed()
    errors = tuple(
        (r.resource.label(), r.message or r.action) for r in result.resources if not r.ok
    )
    changed = replace(
        base,
        last_seen=now,
        tried_digest=bundle.digest,
        tried_ok=result.ok,
        tried_error=result.error,
        resource_errors=errors,
        tried_revision=bundle.revision,
        tried_at=now,
        results=tuple((r.resource.label(), r.action, r.message) for r in result.resources),
    )
    if result.ok:
        changed = replace(changed, applied_revision=bundle.revision, applied_digest=bundle.digest)
    return changed


def device_status(
    state: reconcile.DesiredState, observed: Observed | None
) -> statusdocs.DeviceStatus:
    seen_ = observed or Observed()
    target = state.bundle_digest
    if state.failing:
        result = statusdocs.RENDER_FAILED
    elif target is not None and seen_.tried_digest == target and not seen_.tried_ok:
        result = statusdocs.APPLY_FAILED
    elif target is not None and seen_.applied_digest == target:
        result = statusdocs.APPLIED
    else:
        result = statusdocs.PENDING
    errors = list(seen_.resource_errors)
    if seen_.tried_error and result == statusdocs.APPLY_FAILED:
        errors.append(("(apply)", seen_.tried_error))
    return statusdocs.DeviceStatus(
        tenant=state.tenant,
        device=state.device,
        result=result,
        desired_revision=state.revision,
        desired_digest=target,
        attempted_revision=state.attempted_revision,
        render_error=state.error,
        applied_revision=seen_.applied_revision,
        applied_digest=seen_.applied_digest,
        resource_errors=tuple(errors) if result == statusdocs.APPLY_FAILED else (),
        last_seen=seen_.last_seen,
        connected=seen_.connected,
    )
