"""The fleet model loader: typed objects from a snapshot, and every kind of error with its place.

Snapshots are plain dicts here: the loader never touches files or Git.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from rciots.controller import fleet, loader
from rciots.controller.diagnostics import Diagnostic

HASH_A = "sha256:" + hashlib.sha256(b"a").hexdigest()
HASH_B = "sha256:" + hashlib.sha256(b"b").hexdigest()

TENANT = """\
apiVersion: rciots.io/v1
kind: Tenant
metadata:
  name: acme
spec:
  displayName: ACME
  limits:
    maxDevices: 10
"""
TOKEN = f"""\
apiVersion: rciots.io/v1
kind: ProvisioningToken
metadata:
  name: factory
spec:
  secretHash: {HASH_A}
  approval: manual
  expires: 2030-01-31
  maxDevices: 5
  template: edge
  labels:
    site: plant-a
"""
DEVICE = """\
apiVersion: rciots.io/v1
kind: Device
metadata:
  name: gw-1
  labels:
    site: plant-a
spec:
  approved: true
  template: edge
"""
FLEET = """\
apiVersion: rciots.io/v1
kind: Fleet
metadata:
  name: plant-a
spec:
  selector:
    matchLabels:
      site: plant-a
    matchExpressions:
      - key: role
        operator: NotIn
        values: [spare]
  template: edge
"""
KUSTOMIZATION = "resources:\n  - deployment.yaml\n"


def snapshot(tenant: str = "acme", /, **overrides: str | None) -> dict[str, bytes]:
    """A valid one-tenant repo; overrides replace (or, with None, remove) files by path
    relative to the tenant directory."""
    files: dict[str, str | None] = {
        "tenant.yaml": TENANT.replace("name: acme", f"name: {tenant}"),
        "tokens/factory.yaml": TOKEN,
        "devices/gw-1/device.yaml": DEVICE,
        "devices/gw-2/device.yaml": DEVICE.replace("gw-1", "gw-2").replace(
            "  template: edge\n", ""
        ),
        "fleets/plant-a.yaml": FLEET,
        "templates/edge/kustomization.yaml": KUSTOMIZATION,
        "templates/edge/deployment.yaml": "kind: Deployment\n",
    }
    files.update(overrides)
    return {
        f"tenants/{tenant}/{path}": text.encode()
        for path, text in files.items()
        if text is not None
    }


def errors_of(files: dict[str, bytes]) -> list[Diagnostic]:
    return [d for d in loader.load(files).diagnostics if d.severity == "error"]


def only_error(files: dict[str, bytes]) -> Diagnostic:
    (error,) = errors_of(files)
    return error


def test_valid_repo_loads_typed_objects() -> None:
    result = loader.load(snapshot())
    assert result.diagnostics == []
    model = result.model.tenants["acme"]
    assert model.tenant == fleet.Tenant("acme", "tenants/acme/tenant.yaml", "ACME", True, (), 10)
    token = model.tokens["factory"]
    assert token.approval == "manual"
    assert token.expires == datetime(2030, 1, 31, tzinfo=UTC)
    assert token.labels == {"site": "plant-a"}
    assert token.is_expired(datetime(2030, 1, 31, tzinfo=UTC))
    assert not token.is_expired(datetime(2030, 1, 30, 23, 59, tzinfo=UTC))
    assert model.devices["gw-1"].approved is True
    assert model.devices["gw-2"].approved is True
    assert model.devices["gw-1"].enabled is True
    assert model.templates["edge"].kustomization == "tenants/acme/templates/edge/kustomization.yaml"
    assert result.model.counts() == {
        "tenants": 1,
        "tokens": 1,
        "devices": 2,
        "fleets": 1,
        "templates": 1,
    }
    assert result.model.token_by_hash(HASH_A) is token


def test_workload_choice_overlay_then_template_then_fleet() -> None:
    files = snapshot(
        **{
            "devices/gw-3/device.yaml": DEVICE.replace("gw-1", "gw-3").replace(
                "  template: edge\n", ""
            ),
            "devices/gw-3/kustomization.yaml": KUSTOMIZATION,
        }
    )
    model = loader.load(files).model.tenants["acme"]
    assert model.workload_of(model.devices["gw-1"]) == fleet.Workload(
        "tenants/acme/templates/edge", "device"
    )
    assert model.workload_of(model.devices["gw-2"]) == fleet.Workload(
        "tenants/acme/templates/edge", "fleet", "plant-a"
    )
    assert model.workload_of(model.devices["gw-3"]) == fleet.Workload(
        "tenants/acme/devices/gw-3", "overlay"
    )


@pytest.mark.parametrize(
    ("labels", "selected"),
    [
        ({"site": "plant-a"}, True),
        ({"site": "plant-a", "role": "spare"}, False),
        ({"site": "plant-b"}, False),
        ({}, False),
    ],
)
def test_fleet_selector(labels: dict[str, str], selected: bool) -> None:
    plant = loader.load(snapshot()).model.tenants["acme"].fleets["plant-a"]
    assert plant.selector.matches(labels) is selected


def test_selector_exists_and_does_not_exist() -> None:
    selector = fleet.Selector(
        match_expressions=(
            fleet.Requirement("gpu", "Exists"),
            fleet.Requirement("legacy", "DoesNotExist"),
        )
    )
    assert selector.matches({"gpu": ""})
    assert not selector.matches({"gpu": "x", "legacy": "1"})
    assert not selector.matches({})


def test_yaml_syntax_error_names_file_and_line() -> None:
    error = only_error(snapshot(**{"devices/gw-1/device.yaml": DEVICE + "  bad: [\n"}))
    assert error.path == "tenants/acme/devices/gw-1/device.yaml"
    assert error.line == 11
    assert error.message.startswith("invalid YAML: ")


def test_unknown_field_points_at_the_key() -> None:
    error = only_error(snapshot(**{"devices/gw-1/device.yaml": DEVICE + "  colour: red\n"}))
    assert error == Diagnostic(
        "tenants/acme/devices/gw-1/device.yaml",
        10,
        3,
        "unknown field 'colour' in spec; allowed fields: approved, description, enabled, template",
    )


def test_wrong_type_says_what_is_expected() -> None:
    text = DEVICE.replace("approved: true", "approved: yes")
    error = only_error(snapshot(**{"devices/gw-1/device.yaml": text}))
    assert error == Diagnostic(
        "tenants/acme/devices/gw-1/device.yaml",
        8,
        13,
        "spec.approved must be a boolean (true or false), not the string 'yes'",
    )


def test_missing_required_field() -> None:
    text = TOKEN.replace(f"  secretHash: {HASH_A}\n", "")
    error = only_error(snapshot(**{"tokens/factory.yaml": text}))
    assert (error.path, error.line, error.column) == ("tenants/acme/tokens/factory.yaml", 6, 3)
    assert error.message == "spec is missing the required field 'secretHash'"


def test_bad_name_gives_the_dns_label_rule() -> None:
    text = FLEET.replace("name: plant-a", "name: Plant_A")
    errors = errors_of(snapshot(**{"fleets/plant-a.yaml": text}))
    assert [(e.line, e.column) for e in errors] == [(4, 9)]
    assert "metadata.name is not valid: the string 'Plant_A'; use a DNS-1123 label" in (
        errors[0].message
    )


def test_name_must_match_the_path() -> None:
    error = only_error(
        snapshot(**{"tokens/factory.yaml": TOKEN.replace("name: factory", "name: other")})
    )
    assert (error.path, error.line, error.column) == ("tenants/acme/tokens/factory.yaml", 4, 9)
    assert error.message == (
        "metadata.name is 'other' but the path names 'factory': make them equal "
        "(rename the file or fix metadata.name)"
    )


def test_a_file_cannot_declare_an_object_of_another_tenant() -> None:
    text = DEVICE.replace("  name: gw-1\n", "  name: gw-1\n  tenant: globex\n")
    globex = snapshot("globex", **{"tokens/factory.yaml": TOKEN.replace(HASH_A, HASH_B)})
    files = snapshot(**{"devices/gw-1/device.yaml": text}) | globex
    result = loader.load(files)
    (error,) = result.diagnostics
    assert (error.path, error.line, error.column) == (
        "tenants/acme/devices/gw-1/device.yaml",
        5,
        11,
    )
    assert "metadata.tenant is 'globex' but the file is in tenant 'acme'" in error.message
    assert "gw-1" not in result.model.tenants["acme"].devices
    assert "gw-1" in result.model.tenants["globex"].devices


def test_wrong_kind_for_the_place() -> None:
    error = only_error(snapshot(**{"fleets/plant-a.yaml": DEVICE}))
    assert (error.path, error.line) == ("tenants/acme/fleets/plant-a.yaml", 2)
    assert error.message.startswith(
        "this file declares kind 'Device'; files at this place declare kind: Fleet"
    )


def test_empty_file_and_two_documents() -> None:
    files = snapshot(**{"fleets/plant-a.yaml": "", "tokens/factory.yaml": TOKEN + "---\n" + TOKEN})
    errors = errors_of(files)
    assert [(e.path, e.line, e.message) for e in errors] == [
        ("tenants/acme/fleets/plant-a.yaml", 1, "found no object: the file must declare one Fleet"),
        (
            "tenants/acme/tokens/factory.yaml",
            14,
            "found 2 documents: the file must declare one ProvisioningToken",
        ),
    ]


def test_not_a_mapping() -> None:
    error = only_error(snapshot(**{"fleets/plant-a.yaml": "- a\n- b\n"}))
    assert error.message == "the file must be a mapping declaring Fleet"


def test_invalid_selector_expressions() -> None:
    text = FLEET.replace(
        "        operator: NotIn\n        values: [spare]\n",
        "        operator: Exists\n        values: [spare]\n"
        "      - key: zone\n        operator: In\n",
    )
    errors = errors_of(snapshot(**{"fleets/plant-a.yaml": text}))
    assert [(e.line, e.column, e.message) for e in errors] == [
        (
            12,
            17,
            "spec.selector.matchExpressions[0].values is not valid; "
            "Exists and DoesNotExist take no values: remove the values list",
        ),
        (
            13,
            9,
            "spec.selector.matchExpressions[1] is missing the required field 'values'; "
            "In and NotIn need a non-empty list of values",
        ),
    ]


def test_empty_selector_is_refused() -> None:
    text = FLEET.split("  selector:")[0] + "  selector: {}\n  template: edge\n"
    error = only_error(snapshot(**{"fleets/plant-a.yaml": text}))
    assert error.line == 6
    assert error.message.startswith("spec.selector is not valid; give matchLabels")


def test_invalid_label_key_and_value() -> None:
    text = DEVICE.replace("    site: plant-a\n", "    bad key: x\n    site: 'plant a'\n")
    errors = errors_of(snapshot(**{"devices/gw-1/device.yaml": text}))
    assert [(e.line, e.column) for e in errors] == [(6, 5), (7, 11)]
    assert errors[0].message.startswith(
        "key 'bad key' in metadata.labels is not valid; use a Kubernetes label key"
    )
    assert errors[1].message.startswith(
        "metadata.labels.site is not valid: the string 'plant a'; use a Kubernetes label value"
    )


@pytest.mark.parametrize("expires", ["2030-02-30", "2030-01-31T10:00:00", "tomorrow"])
def test_bad_expiry(expires: str) -> None:
    text = TOKEN.replace("expires: 2030-01-31", f"expires: '{expires}'")
    error = only_error(snapshot(**{"tokens/factory.yaml": text}))
    assert error.line == 8
    assert error.message.startswith(
        f"spec.expires is not valid: the string '{expires}'; write a date"
    )


def test_expiry_with_zone_is_accepted() -> None:
    text = TOKEN.replace("expires: 2030-01-31", "expires: '2030-01-31T10:00:00+02:00'")
    token = loader.load(snapshot(**{"tokens/factory.yaml": text})).model.tenants["acme"].tokens
    assert token["factory"].expires == datetime(2030, 1, 31, 8, tzinfo=UTC)


def test_missing_template_reference() -> None:
    text = TOKEN.replace("template: edge", "template: core")
    error = only_error(snapshot(**{"tokens/factory.yaml": text}))
    assert (error.path, error.line, error.column) == ("tenants/acme/tokens/factory.yaml", 10, 13)
    assert error.message == (
        "template 'core' does not exist in this tenant (templates: edge); add "
        "templates/core/kustomization.yaml or fix the name"
    )


def test_overlay_and_template_together() -> None:
    error = only_error(snapshot(**{"devices/gw-1/kustomization.yaml": KUSTOMIZATION}))
    assert (error.path, error.line) == ("tenants/acme/devices/gw-1/device.yaml", 9)
    assert error.message.startswith(
        "spec.template is set but the device has its own "
        "tenants/acme/devices/gw-1/kustomization.yaml"
    )


def test_device_selected_by_two_fleets() -> None:
    files = snapshot(**{"fleets/all-a.yaml": FLEET.replace("name: plant-a", "name: all-a")})
    error = only_error(files)
    assert (error.path, error.line) == ("tenants/acme/devices/gw-2/device.yaml", 6)
    assert error.message == (
        "device 'gw-2' is selected by 2 fleets (tenants/acme/fleets/all-a.yaml, "
        "tenants/acme/fleets/plant-a.yaml); set spec.template on the device or make the "
        "fleets' selectors exclusive"
    )


def test_device_with_no_workload_is_a_warning() -> None:
    result = loader.load(snapshot(**{"fleets/plant-a.yaml": None}))
    (warning,) = result.diagnostics
    assert warning.severity == "warning"
    assert warning.path == "tenants/acme/devices/gw-2/device.yaml"
    assert result.ok


def test_device_files_without_device_yaml() -> None:
    error = only_error(snapshot(**{"devices/gw-9/kustomization.yaml": KUSTOMIZATION}))
    assert error.path == "tenants/acme/devices/gw-9/kustomization.yaml"
    assert error.message == (
        "device 'gw-9' has files but no device.yaml: add tenants/acme/devices/gw-9/device.yaml "
        "declaring kind: Device"
    )


def test_template_without_kustomization() -> None:
    error = only_error(snapshot(**{"templates/core/deployment.yaml": "kind: Deployment\n"}))
    assert error.path == "tenants/acme/templates/core/deployment.yaml"
    assert error.message.startswith("template 'core' has no kustomization.yaml")


def test_object_declared_twice_yaml_and_yml() -> None:
    error = only_error(snapshot(**{"tokens/factory.yml": TOKEN}))
    assert error.path == "tenants/acme/tokens/factory.yml"
    assert error.message == (
        "ProvisioningToken declared twice: also by tenants/acme/tokens/factory.yaml; "
        "remove one of the files"
    )


def test_device_declared_twice_in_one_tenant() -> None:
    error = only_error(snapshot(**{"devices/gw-1/device.yml": DEVICE}))
    assert error.message.startswith("Device declared twice")


def test_the_same_secret_in_two_tenants() -> None:
    files = snapshot() | snapshot("globex")
    error = only_error(files)
    assert error.path == "tenants/globex/tokens/factory.yaml"
    assert error.message.startswith(
        "token has the same secretHash as tenants/acme/tokens/factory.yaml"
    )


def test_a_broken_tenant_never_stops_another() -> None:
    other = snapshot("globex", **{"tokens/factory.yaml": TOKEN.replace(HASH_A, HASH_B)})
    broken = snapshot(
        **{"tenant.yaml": TENANT + "  colour: red\n", "devices/gw-1/device.yaml": "kind: [\n"}
    )
    result = loader.load(other | broken)
    assert [(d.path, d.line) for d in result.diagnostics] == [
        ("tenants/acme/devices/gw-1/device.yaml", 2),
        ("tenants/acme/tenant.yaml", 9),
    ]
    assert list(result.model.tenants) == ["globex"]
    assert set(result.model.tenants["globex"].devices) == {"gw-1", "gw-2"}


def test_broken_device_leaves_the_rest_of_its_tenant() -> None:
    result = loader.load(snapshot(**{"devices/gw-1/device.yaml": "kind: [\n"}))
    assert set(result.model.tenants["acme"].devices) == {"gw-2"}


def test_missing_tenant_yaml() -> None:
    error = only_error(snapshot(**{"tenant.yaml": None}))
    assert error.path == "tenants/acme/tenant.yaml"
    assert error.message.startswith("missing: tenant 'acme' has files but no tenant.yaml")


def test_bad_tenant_directory_name() -> None:
    files = {k.replace("tenants/acme/", "tenants/Acme/"): v for k, v in snapshot().items()}
    error = only_error(files)
    assert error.path.startswith("tenants/Acme/")
    assert "tenant directory name 'Acme' is not valid" in error.message


def test_yaml_bomb_in_one_device_is_an_error_for_that_file_only() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8)
    )
    result = loader.load(snapshot(**{"devices/gw-1/device.yaml": bomb}))
    (error,) = result.diagnostics
    assert error.path == "tenants/acme/devices/gw-1/device.yaml"
    assert "after alias expansion" in error.message
    assert set(result.model.tenants["acme"].devices) == {"gw-2"}


def test_oversize_file() -> None:
    huge = DEVICE + "# " + "x" * (1024 * 1024) + "\n"
    error = only_error(snapshot(**{"devices/gw-1/device.yaml": huge}))
    assert error.message == (
        f"file is {len(huge.encode())} bytes, over the limit of 1048576; split it up"
    )


def test_unexpected_files_warn_and_markdown_is_ignored() -> None:
    files = snapshot(**{"README.md": "# acme\n", "notes.yaml": "a: 1\n", "tokens/x.txt": "x"})
    files["tenants/stray.yaml"] = b"a: 1\n"
    result = loader.load(files)
    assert result.ok
    assert [(d.path, d.severity) for d in result.diagnostics] == [
        ("tenants/acme/notes.yaml", "warning"),
        ("tenants/acme/tokens/x.txt", "warning"),
        ("tenants/stray.yaml", "warning"),
    ]


def test_no_tenants_at_all() -> None:
    error = only_error({"README.md": b"hello"})
    assert error.path == "tenants"
    assert error.message.startswith("no tenants")


def test_approval_defaults_to_manual() -> None:
    text = TOKEN.replace("  approval: manual\n", "")
    model = loader.load(snapshot(**{"tokens/factory.yaml": text})).model
    assert model.tenants["acme"].tokens["factory"].approval == "manual"


@pytest.mark.parametrize("selector", ["matchLabels: {}", "matchExpressions: []"])
def test_empty_selector_parts_are_refused(selector: str) -> None:
    text = FLEET.split("  selector:")[0] + f"  selector:\n    {selector}\n  template: edge\n"
    error = only_error(snapshot(**{"fleets/plant-a.yaml": text}))
    assert error.line == 7
    assert error.message.endswith("or leave " + selector.split(":")[0] + " out")


# -- incremental loading (LoadMemo) -------------------------------------------------------


def test_memo_gives_the_same_result_as_a_fresh_load_through_a_series_of_changes() -> None:
    memo = loader.LoadMemo()
    steps: list[dict[str, bytes]] = []
    files = snapshot()
    steps.append(files)
    changed = dict(files)
    changed["tenants/acme/devices/gw-1/device.yaml"] = DEVICE.replace("true", "false").encode()
    steps.append(changed)
    broken = dict(changed)
    broken["tenants/acme/fleets/plant-a.yaml"] = b"kind: [\n"
    steps.append(broken)
    steps.append(dict(broken))  # unchanged: the broken file is still reported
    added = dict(broken)
    added["tenants/acme/devices/gw-2/device.yaml"] = DEVICE.replace("gw-1", "gw-2").encode()
    added["tenants/acme/devices/gw-2/kustomization.yaml"] = b"resources:\n- ../../templates/edge\n"
    steps.append(added)
    removed = {k: v for k, v in added.items() if "/gw-1/" not in k}
    steps.append(removed)
    steps.append(snapshot("other"))  # every file of tenant acme gone
    for step in steps:
        incremental = loader.load(step, memo=memo)
        fresh = loader.load(step)
        assert incremental.model == fresh.model
        assert incremental.diagnostics == fresh.diagnostics
    assert set(memo.tenants) == {"other"}
    assert all(key[0].startswith("tenants/other/") for key in memo.objects)


def test_memo_does_not_parse_unchanged_files_again() -> None:
    memo = loader.LoadMemo()
    files = snapshot()
    first = loader.load(files, memo=memo)
    overlay_changed = dict(files)
    overlay_changed["tenants/acme/templates/edge/kustomization.yaml"] = b"resources: []\n"
    again = loader.load(overlay_changed, memo=memo)
    # the same objects: neither parsed nor assembled again
    assert again.model.tenants["acme"] is first.model.tenants["acme"]
    device_changed = dict(files)
    device_changed["tenants/acme/devices/gw-1/device.yaml"] = DEVICE.replace(
        "plant-a", "plant-b"
    ).encode()
    third = loader.load(device_changed, memo=memo)
    assert third.model.tenants["acme"] is not first.model.tenants["acme"]
    assert (
        third.model.tenants["acme"].tokens["factory"]
        is first.model.tenants["acme"].tokens["factory"]
    )
