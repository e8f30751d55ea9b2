"""The reconcile pass: snapshots in, the desired table out; incremental, failures contained
per device, last good state kept. Snapshots are built in memory: no Git here."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from rciots.controller import enrolled, reconcile, snapshots
from tests.fleetfiles import APP, T, device, repo


class Revisions:
    """Successive snapshots with the changed paths a Git source would report."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.count = 0

    def next(self, files: dict[str, bytes]) -> snapshots.Snapshot:
        before, self.files = self.files, dict(files)
        self.count += 1
        changed = {p for p in before.keys() | files.keys() if before.get(p) != files.get(p)}
        return snapshots.Snapshot(
            f"rev{self.count}", dict(files), (), frozenset(changed) if self.count > 1 else None
        )


@pytest.fixture
def revs() -> Revisions:
    return Revisions()


GW1, GW2 = ("acme", "gw-1"), ("acme", "gw-2")
OVERLAY = f"{T}/devices/gw-2/kustomization.yaml"


def with_overlay(files: dict[str, bytes], text: bytes) -> dict[str, bytes]:
    return {**files, OVERLAY: text}


def test_first_snapshot_renders_every_device(revs: Revisions) -> None:
    reconciler = reconcile.Reconciler()
    outcome = reconciler.apply(revs.next(repo()))
    assert outcome.rendered == (GW1, GW2)
    assert outcome.changed == (GW1, GW2)
    assert outcome.failed == ()
    state = reconciler.table[GW1]
    assert state.revision == "rev1"
    assert state.attempted_revision == "rev1"
    assert state.digest.startswith("sha256:")
    assert "value: gw-1" in state.manifests


def test_one_overlay_change_renders_that_device_only(revs: Revisions) -> None:
    reconciler = reconcile.Reconciler()
    base = with_overlay(repo(), b"resources:\n- ../../templates/app\n")
    reconciler.apply(revs.next(base))
    first_gw1 = reconciler.table[GW1]
    outcome = reconciler.apply(revs.next(with_overlay(base, base[OVERLAY] + b"namePrefix: x-\n")))
    assert outcome.rendered == (GW2,)
    assert outcome.changed == (GW2,)
    assert reconciler.table[GW2].revision == "rev2"
    assert reconciler.table[GW1] is first_gw1  # untouched: still rev1


def test_a_change_that_does_not_change_the_output_keeps_the_revision(revs: Revisions) -> None:
    reconciler = reconcile.Reconciler()
    base = with_overlay(repo(), b"resources:\n- ../../templates/app\n")
    reconciler.apply(revs.next(base))
    outcome = reconciler.apply(revs.next(with_overlay(base, base[OVERLAY] + b"# a comment\n")))
    assert outcome.rendered == (GW2,)
    assert outcome.changed == ()
    assert reconciler.table[GW2].revision == "rev1"
    assert reconciler.table[GW2].attempted_revision == "rev2"


def test_a_failed_render_keeps_the_last_good_state_and_others_proceed(revs: Revisions) -> None:
    reconciler = reconcile.Reconciler()
    base = with_overlay(repo(), b"resources:\n- ../../templates/app\n")
    reconciler.apply(revs.next(base))
    good = reconciler.table[GW2]
    broken = with_overlay(base, b"resources:\n- ../../templates/app\n- missing.yaml\n")
    broken[f"{T}/templates/app/app.yaml"] = APP.replace(b"app:1", b"app:2")
    outcome = reconciler.apply(revs.next(broken))
    assert outcome.failed == (GW2,)
    assert outcome.changed == (GW1,)
    state = reconciler.table[GW2]
    assert (state.revision, state.digest, state.manifests) == (
        good.revision,
        good.digest,
        good.manifests,
    )
    assert state.attempted_revision == "rev2"
    assert state.error is not None
    assert "missing.yaml" in state.error
    assert "image: app:2" in reconciler.table[GW1].manifests
    # the fix lands: the device proceeds, its error is gone
    fixed = reconciler.apply(revs.next(with_overlay(broken, base[OVERLAY])))
    assert fixed.changed == (GW2,)
    assert reconciler.table[GW2].error is None
    assert "image: app:2" in reconciler.table[GW2].manifests


def test_a_device_that_never_rendered_has_no_good_state(revs: Revisions) -> None:
    reconciler = reconcile.Reconciler()
    outcome = reconciler.apply(revs.next(with_overlay(repo(), b"resources:\n- nope.yaml\n")))
    assert outcome.failed == (GW2,)
    state = reconciler.table[GW2]
    assert (state.revision, state.digest, state.manifests) == (None, "", "")


def test_a_broken_device_file_keeps_the_device_with_the_loader_error(revs: Revisions) -> None:
    reconciler = reconcile.Reconciler()
    reconciler.apply(revs.next(repo()))
    good = reconciler.table[GW2]
    broken = {**repo(), f"{T}/devices/gw-2/device.yaml": device("gw-2", "oslo", "  approved: [\n")}
    outcome = reconciler.apply(revs.next(broken))
    assert outcome.failed == (GW2,)
    assert outcome.removed == ()
    state = reconciler.table[GW2]
    assert state.digest == good.digest
    assert state.error is not None
    assert state.error.startswith(f"{T}/devices/gw-2/device.yaml:")


def test_a_broken_tenant_file_keeps_its_devices(revs: Revisions) -> None:
    reconciler = reconcile.Reconciler()
    reconciler.apply(revs.next(repo()))
    outcome = reconciler.apply(revs.next({**repo(), f"{T}/tenant.yaml": b"kind: Tenant\n"}))
    assert outcome.failed == (GW1, GW2)
    assert all(
        s.error and s.error.startswith(f"{T}/tenant.yaml:") for s in reconciler.table.values()
    )


def test_a_deleted_device_is_removed(revs: Revisions) -> None:
    reconciler = reconcile.Reconciler()
    reconciler.apply(revs.next(repo()))
    files = {p: d for p, d in repo().items() if "/gw-2/" not in p}
    outcome = reconciler.apply(revs.next(files))
    assert outcome.removed == (GW2,)
    assert set(reconciler.table) == {GW1}


def test_policy_violations_are_render_failures(revs: Revisions) -> None:
    def deny_deployments(tenant: str, resources: Sequence[Mapping[str, Any]]) -> list[str]:
        return [f"{r['kind']} denied" for r in resources if r["kind"] == "Deployment"]

    reconciler = reconcile.Reconciler(policy=deny_deployments)
    outcome = reconciler.apply(revs.next(repo()))
    assert outcome.failed == (GW1, GW2)
    assert reconciler.table[GW1].error == "policy: Deployment denied"


def test_an_enrollment_renders_only_the_device_it_changed(revs: Revisions) -> None:
    """The same snapshot again with a new enrolled device (no Device file) and an id for
    gw-1: those two are rendered, gw-2 is not."""
    reconciler = reconcile.Reconciler()
    snapshot = revs.next(repo())
    reconciler.apply(snapshot)
    added = {
        GW1: enrolled.Enrolled("id-1", "manual"),
        ("acme", "gw-9"): enrolled.Enrolled("id-9", "auto", {"role": "gw", "site": "rome"}),
    }
    again = dataclasses.replace(snapshot, changed=frozenset())
    outcome = reconciler.apply(again, added)
    assert sorted(outcome.rendered) == [GW1, ("acme", "gw-9")]
    assert reconciler.table[("acme", "gw-9")].digest != ""
    # the template copies the device name into the Deployment; the label site came along
    assert "value: gw-9" in reconciler.table[("acme", "gw-9")].manifests
    assert "site: rome" in reconciler.table[("acme", "gw-9")].manifests
    # nothing changed: nothing rendered
    assert reconciler.apply(again, added).rendered == ()
    # the enrolled device goes away with its registration
    gone = reconciler.apply(again, {GW1: added[GW1]})
    assert gone.removed == (("acme", "gw-9"),)


def test_each_desired_state_is_a_bundle_with_one_id_per_document(revs: Revisions) -> None:
    reconciler = reconcile.Reconciler()
    reconciler.apply(revs.next(repo()))
    for state in reconciler.table.values():
        bundle = state.bundle()
        assert bundle is not None
        bundle.check()  # the digest is the manifests', and every document has its id
        assert [r.label() for r in bundle.resources] == ["Deployment/app"]
