"""Enrolled devices in the model, and who may connect after each reconcile (pure)."""

from __future__ import annotations

from rciots.controller import enrolled, fleet
from tests import enrollfiles
from tests.enrollfiles import T
from tests.test_registry import registration

AUTO = enrolled.Enrolled("id-9", "auto", {"role": "gw", "site": "oslo"}, None)
MANUAL = enrolled.Enrolled("id-8", "manual", {"role": "gw"}, None)


def model(files: dict[str, bytes] | None = None) -> fleet.FleetModel:
    return enrollfiles.model(files or enrollfiles.repo())


def test_an_auto_enrolled_device_without_a_file_joins_the_model():
    merged = enrolled.merge(model(), {("acme", "gw-9"): AUTO})
    device = merged.tenants["acme"].devices["gw-9"]
    assert device.labels == {"role": "gw", "site": "oslo"}
    assert device.approved
    assert device.enabled
    assert merged.tenants["acme"].workload_of(device) is not None  # the fleet selects it


def test_a_device_file_wins_and_manual_or_unknown_tenants_add_nothing():
    loaded = model()
    merged = enrolled.merge(
        loaded,
        {
            ("acme", "gw-1"): AUTO,  # has a Device file: that decides
            ("acme", "gw-8"): MANUAL,  # manual: only with its Device file
            ("initech", "gw-7"): AUTO,  # no such tenant
        },
    )
    assert merged.tenants["acme"].devices == loaded.tenants["acme"].devices


def test_an_unchanged_tenant_stays_the_same_object():
    loaded = model()
    memo = enrolled.ModelMemo()
    first = enrolled.merge(loaded, {("acme", "gw-9"): AUTO}, memo)
    again = enrolled.merge(loaded, {("acme", "gw-9"): AUTO}, memo)
    assert again.tenants["acme"] is first.tenants["acme"]
    other = enrolled.merge(loaded, {("acme", "gw-9"): AUTO, ("acme", "gw-10"): AUTO}, memo)
    assert other.tenants["acme"] is not first.tenants["acme"]
    assert enrolled.merge(loaded, {}, memo).tenants["acme"] is loaded.tenants["acme"]


def access(files: dict[str, bytes], *entries) -> enrolled.Access:
    return enrolled.decide_access(list(entries), enrollfiles.model(files), files)


def test_access_follows_git():
    files = enrollfiles.repo()
    files[f"{T}/devices/off/device.yaml"] = enrollfiles.device_file(
        "off", "  approved: true\n  enabled: false\n"
    )
    files[f"{T}/devices/unapproved/device.yaml"] = enrollfiles.device_file(
        "unapproved", "  approved: false\n"
    )
    result = access(
        files,
        registration("gw-1", "1"),
        registration("off", "2"),
        registration("unapproved", "3", approval="manual"),
        registration("unapproved-auto", "4", approval="auto"),
    )
    assert result.denied == {
        "2": "device acme/off is disabled",
        "3": "device acme/unapproved is not approved",
    }
    assert result.removed == ()


def test_a_deleted_approval_or_tenant_removes_the_registration():
    files = enrollfiles.repo()
    result = access(
        files,
        registration("gone-manual", "1", approval="manual"),
        registration("gone-auto", "2", approval="auto"),
        registration("x", "3", tenant="initech"),
    )
    assert result.removed == ("1", "3")
    assert result.denied == {}


def test_a_file_that_no_longer_loads_keeps_access_as_it_was():
    files = enrollfiles.repo()
    files[f"{T}/devices/broken/device.yaml"] = b"kind: [\n"
    files["tenants/initech/tenant.yaml"] = b"kind: [\n"
    model_files = {k: v for k, v in files.items() if "broken" not in k and "initech" not in k}
    result = enrolled.decide_access(
        [
            registration("broken", "1", approval="manual"),
            registration("x", "2", tenant="initech"),
        ],
        enrollfiles.model(model_files),
        files,
    )
    assert result == enrolled.Access({}, ())


def test_a_disabled_tenant_denies_all_its_devices():
    files = enrollfiles.repo()
    files[f"{T}/tenant.yaml"] = files[f"{T}/tenant.yaml"].replace(
        b"spec: {}", b"spec:\n  enabled: false"
    )
    result = access(files, registration("gw-1", "1"))
    assert result.denied == {"1": "tenant acme is disabled"}
