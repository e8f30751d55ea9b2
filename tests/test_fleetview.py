"""The status page's view model (pure): each device's state, the rows, counts, filters, pages,
the approval commands, tokens and health views."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime, timedelta

import pytest

from rciots.agent.bundle import ApplyResult, Bundle, ResourceId, ResourceResult, digest_of
from rciots.controller import fleet, fleetview, observed, reconcile, registry
from rciots.controller.diagnostics import Diagnostic

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
REV = "a" * 40
OLD = "b" * 40
DIGEST = "sha256:" + "1" * 64
OLD_DIGEST = "sha256:" + "2" * 64


def desired(
    tenant: str = "acme",
    device: str = "gw-01",
    *,
    error: str | None = None,
    revision: str | None = REV,
    digest: str = DIGEST,
    manifests: str = "kind: ConfigMap\n",
) -> reconcile.DesiredState:
    return reconcile.DesiredState(
        tenant, device, revision, digest, manifests, attempted_revision=REV, error=error
    )


def seen(**fields: object) -> observed.Observed:
    return observed.Observed(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "observation", "pending", "expected"),
    [
        (desired(), seen(connected=True, applied_digest=DIGEST), False, "in-sync"),
        (desired(), seen(connected=True, applied_digest=OLD_DIGEST), False, "out-of-sync"),
        (desired(), seen(connected=True), False, "out-of-sync"),  # told, not applied yet
        (desired(), seen(connected=False, applied_digest=DIGEST), False, "offline"),
        (desired(), None, False, "offline"),  # never connected
        (desired(error="boom"), seen(connected=True, applied_digest=DIGEST), False, "failed"),
        (desired(error="boom"), None, False, "failed"),  # failed wins over offline
        (
            desired(),
            seen(connected=True, tried_digest=DIGEST, tried_ok=False, applied_digest=OLD_DIGEST),
            False,
            "failed",
        ),
        (
            desired(),  # the failure was of an older digest: the new one is on its way
            seen(connected=True, tried_digest=OLD_DIGEST, tried_ok=False),
            False,
            "out-of-sync",
        ),
        (
            desired(),
            seen(connected=False, tried_digest=DIGEST, tried_ok=False),
            False,
            "failed",
        ),
        (desired(), seen(connected=True, applied_digest=DIGEST), True, "pending-approval"),
        (None, None, True, "pending-approval"),
        (None, seen(connected=True, applied_digest=DIGEST), False, "out-of-sync"),
        (desired(revision=None, error="never rendered"), None, False, "failed"),
    ],
)
def test_the_state_of_a_device(
    state: reconcile.DesiredState | None,
    observation: observed.Observed | None,
    pending: bool,
    expected: str,
) -> None:
    assert fleetview.decide_state(state, observation, pending=pending) == expected


def test_a_device_that_runs_nothing_is_in_sync_once_it_applied_nothing() -> None:
    empty = desired(digest="", manifests="")
    applied = seen(connected=True, applied_digest=digest_of(""))
    assert fleetview.decide_state(empty, applied) == "in-sync"
    assert empty.bundle_digest == digest_of("")


def registration(
    tenant: str, name: str, labels: dict[str, str] | None = None
) -> registry.Registration:
    return registry.Registration(
        device_id=f"id-{name}",
        tenant=tenant,
        name=name,
        token="rollout",
        approval="auto",
        device_token_hash="sha256:" + "3" * 64,
        key_fingerprint=f"sha256:{name}",
        certificate_serial="01",
        certificate_fingerprint="sha256:" + "4" * 64,
        certificate_not_after=NOW + timedelta(days=90),
        enrolled_at=NOW - timedelta(days=1),
        labels=labels or {},
    )


def pending(tenant: str, name: str, **fields: object) -> registry.Pending:
    values: dict[str, object] = {
        "tenant": tenant,
        "name": name,
        "token": "commissioning",
        "key_fingerprint": "sha256:" + "5" * 64,
        "address": "192.0.2.7",
        "requested_at": NOW - timedelta(hours=2),
        "last_request_at": NOW,
    }
    values.update(fields)
    return registry.Pending(**values)  # type: ignore[arg-type]


def model(*devices: fleet.Device) -> fleet.FleetModel:
    tenants: dict[str, dict[str, fleet.Device]] = {}
    for device in devices:
        tenants.setdefault(device.tenant, {})[device.name] = device
    return fleet.FleetModel(
        {
            name: fleet.TenantModel(
                fleet.Tenant(name, f"tenants/{name}", f"{name.title()} Inc."), devices=found
            )
            for name, found in tenants.items()
        }
    )


def device(tenant: str, name: str, **labels: str) -> fleet.Device:
    return fleet.Device(tenant, name, f"tenants/{tenant}/devices/{name}/device.yaml", labels)


def test_rows_cover_the_table_registrations_and_pending_enrollments_sorted() -> None:
    table = {
        ("acme", "gw-02"): desired("acme", "gw-02"),
        ("acme", "gw-01"): desired("acme", "gw-01", error="render failed:\n  a missing file"),
    }
    rows = fleetview.build_rows(
        table,
        {("acme", "gw-02"): seen(connected=True, applied_digest=DIGEST, applied_revision=REV)},
        model(device("acme", "gw-01", site="lyon"), device("acme", "gw-02")),
        [registration("acme", "gw-02"), registration("beta", "orphan", {"from": "token"})],
        [pending("acme", "gw-03", labels={"asked": "yes"})],
    )
    assert [(r.tenant, r.name, r.state) for r in rows] == [
        ("acme", "gw-01", "failed"),
        ("acme", "gw-02", "in-sync"),
        ("acme", "gw-03", "pending-approval"),
        ("beta", "orphan", "offline"),
    ]
    failed, synced, waiting, orphan = rows
    assert failed.error == "render failed: a missing file"  # one line for a table cell
    assert failed.labels == {"site": "lyon"}  # the Device file's
    assert not failed.enrolled
    assert synced.online
    assert synced.enrolled
    assert synced.device_id == "id-gw-02"
    assert synced.applied_revision == REV
    assert synced.desired_digest == DIGEST
    assert waiting.labels == {"asked": "yes"}
    assert waiting.desired_revision is None
    assert orphan.labels == {"from": "token"}  # the registration's
    assert orphan.error is None


def test_the_error_of_a_failed_apply_names_its_first_resource() -> None:
    table = {("acme", "gw-01"): desired()}
    errors = (("Deployment/web", "image pull failed"), ("Service/web", "port taken"))
    observation = seen(connected=True, tried_digest=DIGEST, tried_ok=False, resource_errors=errors)
    [row] = fleetview.build_rows(table, {("acme", "gw-01"): observation}, model(), [], [])
    assert row.error == "Deployment/web: image pull failed (and 1 more)"


def test_counts_per_state_and_per_tenant() -> None:
    table = {
        ("acme", "a"): desired("acme", "a"),
        ("acme", "b"): desired("acme", "b"),
        ("beta", "c"): desired("beta", "c", error="x"),
    }
    rows = fleetview.build_rows(
        table,
        {("acme", "a"): seen(connected=True, applied_digest=DIGEST)},
        model(device("acme", "a"), device("acme", "b"), device("beta", "c")),
        [],
        [],
    )
    counts = fleetview.count(rows)
    assert (counts.total, counts.online) == (3, 1)
    assert dict(counts.states) == {
        "in-sync": 1,
        "out-of-sync": 0,
        "failed": 1,
        "offline": 1,
        "pending-approval": 0,
    }
    assert counts.share("in-sync") == pytest.approx(100 / 3)
    per_tenant = fleetview.count_by_tenant(rows, model(device("acme", "a"), device("gamma", "z")))
    assert [(t.tenant, t.display_name, t.counts.total) for t in per_tenant] == [
        ("acme", "Acme Inc.", 2),
        ("beta", "beta", 1),  # not in the model: its name stands in
        ("gamma", "Gamma Inc.", 0),  # in the model, no device yet
    ]


def row(
    name: str, state: fleetview.State = "offline", tenant: str = "acme", **labels: str
) -> fleetview.DeviceRow:
    return fleetview.DeviceRow(
        tenant, name, state, False, None, labels, None, None, None, None, False, True, None
    )


ROWS = [
    row("berlin-gw-01", "in-sync", site="berlin", hardware="rpi4"),
    row("berlin-gw-02", "failed", site="berlin"),
    row("lyon-gw-01", "offline", site="lyon", hardware="rpi4"),
    row("store-1", "in-sync", tenant="beta"),
]


@pytest.mark.parametrize(
    ("query", "names"),
    [
        (fleetview.Query(), ["berlin-gw-01", "berlin-gw-02", "lyon-gw-01", "store-1"]),
        (fleetview.Query(text="BERLIN"), ["berlin-gw-01", "berlin-gw-02"]),
        (fleetview.Query(text="beta"), ["store-1"]),  # the tenant's name matches too
        (fleetview.Query(label="hardware"), ["berlin-gw-01", "lyon-gw-01"]),
        (fleetview.Query(label="site=berlin"), ["berlin-gw-01", "berlin-gw-02"]),
        (fleetview.Query(label="site=paris"), []),
        (fleetview.Query(state="in-sync"), ["berlin-gw-01", "store-1"]),
        (fleetview.Query(state="in-sync", tenant="acme"), ["berlin-gw-01"]),
        (fleetview.Query(text="gw", label="hardware=rpi4", state="offline"), ["lyon-gw-01"]),
    ],
)
def test_filters(query: fleetview.Query, names: list[str]) -> None:
    assert [r.name for r in fleetview.filter_rows(ROWS, query)] == names


def test_a_query_from_an_address_is_forgiving() -> None:
    query = fleetview.parse_query("gw", "site=x", "sideways", "acme", "-3", "100000")
    assert query == fleetview.Query("gw", "site=x", None, "acme", 1, fleetview.MAX_PER_PAGE)
    assert fleetview.parse_query(page="x", per_page="0").per_page == 1
    assert fleetview.parse_query(state="failed").state == "failed"
    assert not fleetview.parse_query(page="3").filtered
    assert fleetview.parse_query(label="a").filtered


def test_links_keep_the_filters_and_drop_defaults() -> None:
    query = fleetview.Query(text="gw", state="failed", page=2)
    assert query.as_params() == {"q": "gw", "state": "failed", "page": "2"}
    assert query.as_params(page=1, state="") == {"q": "gw"}


def test_pages() -> None:
    rows = [row(f"d{n:03d}") for n in range(120)]
    first = fleetview.paginate(rows, 1, 50)
    assert (first.number, first.pages, first.total, first.first) == (1, 3, 120, 1)
    assert [r.name for r in first.rows][:2] == ["d000", "d001"]
    last = fleetview.paginate(rows, 99, 50)  # past the end: the last page
    assert (last.number, len(last.rows), last.first) == (3, 20, 101)
    empty = fleetview.paginate([], 1, 50)
    assert (empty.number, empty.pages, empty.total, empty.first, list(empty.rows)) == (
        1,
        1,
        0,
        0,
        [],
    )


def test_the_detail_of_a_device_holds_its_last_apply_per_resource() -> None:
    bundle = Bundle(REV, DIGEST, "kind: ConfigMap\n")
    result = ApplyResult(
        DIGEST,
        (
            ResourceResult(ResourceId("v1", "ConfigMap", "cfg"), "applied"),
            ResourceResult(ResourceId("apps/v1", "Deployment", "web", "edge"), "failed", "no"),
        ),
    )
    observation = observed.applied(seen(connected=True), bundle, result, NOW)
    state = desired()
    [the_row] = fleetview.build_rows(
        {("acme", "gw-01"): state}, {("acme", "gw-01"): observation}, model(), [], []
    )
    detail = fleetview.build_detail(
        the_row, state, observation, model(), registration("acme", "gw-01"), None, "disabled"
    )
    assert the_row.state == "failed"
    assert [(r.resource, r.action, r.ok) for r in detail.resources] == [
        ("ConfigMap/cfg", "applied", True),
        ("Deployment/edge/web", "failed", False),
    ]
    assert (detail.tried_revision, detail.tried_digest, detail.tried_at) == (REV, DIGEST, NOW)
    assert detail.denied == "disabled"
    assert detail.registration is not None
    assert detail.registration.device_id == "id-gw-01"


def test_commit_links_only_with_a_template_and_a_revision() -> None:
    template = "https://forge.example/x/fleet/commit/{revision}"
    assert fleetview.commit_url(template, REV) == f"https://forge.example/x/fleet/commit/{REV}"
    assert fleetview.commit_url(None, REV) is None
    assert fleetview.commit_url(template, None) is None


def test_approving_commands_quote_what_the_device_sent() -> None:
    entry = pending("acme", "gw-09", labels={"site": "$(touch /tmp/x)", "room": "b12"})
    commands = fleetview.approve_commands(entry, "main")
    assert commands[0] == "git switch -c approve-acme-gw-09 origin/main"
    assert shlex.split(commands[1]) == [
        "rciots",
        "device",
        "approve",
        "acme/gw-09",
        "--label",
        "room=b12",
        "--label",
        "site=$(touch /tmp/x)",
    ]
    assert commands[2] == "git add tenants/acme/devices/gw-09/device.yaml"
    assert shlex.split(commands[3])[-1] == f"Approve acme/gw-09 (key {entry.key_fingerprint})"
    assert commands[4] == "git push -u origin approve-acme-gw-09"
    views = fleetview.build_pending(
        [entry, pending("acme", "gw-01", requested_at=NOW - timedelta(days=1))], "main"
    )
    assert [v.entry.name for v in views] == ["gw-01", "gw-09"]  # the oldest request first
    assert views[1].device_file == "tenants/acme/devices/gw-09/device.yaml"


def test_tokens_show_use_against_their_limit_and_never_a_secret() -> None:
    token = fleet.ProvisioningToken(
        "acme",
        "rollout",
        "tenants/acme/tokens/rollout.yaml",
        "sha256:" + "9" * 64,
        approval="auto",
        expires=NOW - timedelta(days=1),
        max_devices=4,
    )
    unlimited = fleet.ProvisioningToken(
        "acme", "open", "tenants/acme/tokens/open.yaml", "sha256:" + "8" * 64
    )
    fleet_model = fleet.FleetModel(
        {
            "acme": fleet.TenantModel(
                fleet.Tenant("acme", "tenants/acme", "Acme"),
                tokens={"rollout": token, "open": unlimited},
            ),
            "beta": fleet.TenantModel(fleet.Tenant("beta", "tenants/beta", "Beta")),
        }
    )
    views = fleetview.build_tokens(
        fleet_model,
        [registration("acme", "a"), registration("acme", "b"), registration("beta", "c")],
        [pending("acme", "d", token="open")],
        NOW,
    )
    assert [(v.name, v.used, v.pending, v.expired, v.usage) for v in views] == [
        ("open", 0, 1, False, None),
        ("rollout", 2, 0, True, 50.0),
    ]
    assert not any("9" * 64 in repr(v) for v in views)
    assert fleetview.build_tokens(fleet_model, [], [], NOW, tenants={"beta"}) == []


def test_render_failures_and_repo_errors_per_tenant() -> None:
    table = {
        ("acme", "b"): desired("acme", "b", error="x"),
        ("acme", "a"): desired("acme", "a", error="y"),
        ("beta", "c"): desired("beta", "c", error="z"),
        ("beta", "d"): desired("beta", "d"),
    }
    assert fleetview.render_failures(table) == {"acme": ["a", "b"], "beta": ["c"]}
    assert fleetview.render_failures(table, {"beta"}) == {"beta": ["c"]}
    diagnostics = [
        Diagnostic("tenants/acme/tenant.yaml", 1, 1, "bad"),
        Diagnostic("tenants/acme-two/tenant.yaml", 1, 1, "not acme's"),
        Diagnostic("tenants/beta/devices/x/device.yaml", 2, 3, "worse"),
    ]
    assert fleetview.visible_diagnostics(diagnostics, None) == diagnostics
    assert fleetview.visible_diagnostics(diagnostics, {"acme"}) == diagnostics[:1]
    assert fleetview.visible_diagnostics(diagnostics, None, limit=2) == diagnostics[:2]


def test_the_device_list_json_is_what_the_declared_model_gives() -> None:
    """statusapi serializes the device list without building models (it is made for 10,000
    devices per change): its bytes must say what the OpenAPI model says."""
    from rciots.controller import statusapi

    rows = fleetview.build_rows(
        {("acme", "gw-01"): desired(), ("acme", "gw-02"): desired("acme", "gw-02", error="x")},
        {("acme", "gw-01"): seen(connected=True, last_seen=NOW, applied_digest=DIGEST)},
        model(device("acme", "gw-01", site="lyon")),
        [registration("acme", "gw-01")],
        [pending("acme", "gw-03")],
    )
    dumped = json.loads(statusapi.dump_devices(rows))
    declared = [statusapi.device_of(r).model_dump(mode="json", by_alias=True) for r in rows]
    assert dumped == declared
    assert dumped[0]["lastSeen"] == "2027-03-01T12:00:00Z"


def test_a_repo_error_and_a_token_in_the_api_say_what_their_views_say() -> None:
    from rciots.controller import statusapi

    error = statusapi.repo_error_of(Diagnostic("tenants/acme/x.yaml", 3, 4, "odd", "warning"))
    assert error.model_dump(by_alias=True) == {
        "path": "tenants/acme/x.yaml",
        "line": 3,
        "column": 4,
        "message": "odd",
        "severity": "warning",
    }
    view = fleetview.TokenView(
        tenant="acme",
        name="rollout",
        approval="manual",
        enabled=True,
        expires=NOW,
        expired=False,
        max_devices=2,
        used=1,
        pending=3,
        template="edge",
        labels={"site": "lyon"},
    )
    assert statusapi.token_of(view).model_dump(mode="json", by_alias=True) == {
        "tenant": "acme",
        "name": "rollout",
        "approval": "manual",
        "enabled": True,
        "expires": "2027-03-01T12:00:00Z",
        "expired": False,
        "maxDevices": 2,
        "used": 1,
        "pending": 3,
        "template": "edge",
        "labels": {"site": "lyon"},
    }
