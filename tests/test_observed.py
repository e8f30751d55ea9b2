"""What the controller observed of a device, and the status (the status branch's ``result``)
that follows from it and its desired state."""

from __future__ import annotations

from datetime import UTC, datetime

from rciots.agent.bundle import ApplyResult, ResourceId, ResourceResult, digest_of
from rciots.controller import observed, reconcile, statusdocs

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
REV = "a" * 40
NOTHING = reconcile.DesiredState("acme", "gw-01", REV, "", "", attempted_revision=REV)
DEPLOYMENT = ResourceId("apps/v1", "Deployment", "app")


def test_a_device_that_runs_nothing_has_applied_once_it_applied_nothing() -> None:
    """Its desired table entry has no digest (""); the bundle it is sent, and so the digest
    it reports, is that of no manifests."""
    bundle = NOTHING.bundle()
    assert bundle is not None
    seen = observed.connected(None, NOW, None)
    seen = observed.applied(seen, bundle, ApplyResult(digest=bundle.digest), NOW)
    status = observed.device_status(NOTHING, seen)
    assert status.result == statusdocs.APPLIED
    assert status.desired_digest == status.applied_digest == digest_of("")


def test_a_device_that_runs_nothing_and_fails_to_remove_what_it_ran_has_apply_failed() -> None:
    bundle = NOTHING.bundle()
    assert bundle is not None
    failed = ApplyResult(
        digest=bundle.digest,
        resources=(ResourceResult(DEPLOYMENT, "failed", "cannot delete"),),
    )
    seen = observed.applied(observed.connected(None, NOW, None), bundle, failed, NOW)
    status = observed.device_status(NOTHING, seen)
    assert status.result == statusdocs.APPLY_FAILED
    assert status.resource_errors == (("Deployment/app", "cannot delete"),)


def test_before_a_first_good_render_nothing_is_desired() -> None:
    never = reconcile.DesiredState("acme", "gw-01", None, "", "", REV, error="boom")
    status = observed.device_status(never, None)
    assert status.result == statusdocs.RENDER_FAILED
    assert status.desired_digest is None
