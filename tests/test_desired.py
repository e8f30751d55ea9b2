"""Desired state per device: the identity ConfigMap, the policy hook, and which devices a
change affects. Snapshots are plain dicts: nothing here touches Git or files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rciots.controller import desired, loader, snapshots
from tests.fleetfiles import APP, FLEET, T, device, repo


def test_templates_read_the_device_identity_through_replacements() -> None:
    files = repo()
    renders = desired.render_devices(
        files, loader.load(files).model, device_ids={("acme", "gw-1"): "id-1"}
    )
    one, two = renders[("acme", "gw-1")], renders[("acme", "gw-2")]
    assert one.ok
    assert two.ok
    assert "value: gw-1" in one.yaml
    assert "site: lyon" in one.yaml
    assert "value: gw-2" in two.yaml
    assert "site: oslo" in two.yaml
    # the identity ConfigMap feeds the build and is not deployed
    assert "rciots-device-identity" not in one.yaml
    assert one.digest != two.digest
    # the provided folder is no input: it can never be part of a commit's changed paths
    assert not any("device-identity" in path for path in one.inputs)
    assert f"{T}/templates/app/app.yaml" in one.inputs


def test_the_identity_folder_cannot_be_committed() -> None:
    files = repo()
    files[f"{T}/device-identity/identity.yaml"] = b"kind: ConfigMap\n"
    (error,) = [d for d in loader.load(files).diagnostics if d.severity == "error"]
    assert error.path == f"{T}/device-identity/identity.yaml"
    assert "provided by the controller" in error.message


def test_a_policy_violation_fails_that_device_only() -> None:
    files = repo()
    files[f"{T}/devices/gw-2/kustomization.yaml"] = (
        b"resources:\n- ../../templates/app\n- crb.yaml\n"
    )
    files[f"{T}/devices/gw-2/crb.yaml"] = (
        b"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n"
        b"metadata:\n  name: own-the-cluster\n"
    )

    def no_cluster_bindings(tenant: str, resources: Sequence[Mapping[str, Any]]) -> list[str]:
        return [
            f"{tenant}: {r['kind']}/{r['metadata']['name']} is not allowed"
            for r in resources
            if r["kind"] == "ClusterRoleBinding"
        ]

    renders = desired.render_devices(files, loader.load(files).model, policy=no_cluster_bindings)
    assert renders[("acme", "gw-1")].ok
    failed = renders[("acme", "gw-2")]
    assert failed.error == "policy: acme: ClusterRoleBinding/own-the-cluster is not allowed"
    assert failed.error_path == f"{T}/devices/gw-2/kustomization.yaml"
    assert failed.digest == ""


def changed(files: dict[str, bytes], **updates: bytes | None) -> tuple[dict[str, bytes], set[str]]:
    """A copy of ``files`` with paths (relative to the tenant, '__' for '/') replaced or removed."""
    after = dict(files)
    paths = set()
    for name, data in updates.items():
        path = f"{T}/{name.replace('__', '/')}"
        paths.add(path)
        if data is None:
            after.pop(path, None)
        else:
            after[path] = data
    return after, paths


def affected_after(files: dict[str, bytes], **updates: bytes | None) -> set[tuple[str, str]]:
    memo = loader.LoadMemo()
    model = loader.load(files, memo=memo).model
    before = desired.render_devices(files, model)
    after, paths = changed(files, **updates)
    return desired.affected(before, model, loader.load(after, memo=memo).model, paths)


def test_a_template_file_change_affects_the_devices_that_read_it() -> None:
    updates = {"templates__app__app.yaml": APP.replace(b"app:1", b"app:2")}
    assert affected_after(repo(), **updates) == {("acme", "gw-1"), ("acme", "gw-2")}


def test_a_device_file_change_affects_that_device() -> None:
    updates = {"devices__gw-1__device.yaml": device("gw-1", "paris")}
    assert affected_after(repo(), **updates) == {("acme", "gw-1")}


def test_a_fleet_change_affects_the_devices_whose_workload_moves() -> None:
    files = repo()
    files[f"{T}/templates/other/kustomization.yaml"] = b"resources:\n- ../app\n"
    narrower = FLEET.replace(b"role: gw", b"site: lyon")
    other = FLEET.replace(b"name: all", b"name: oslo").replace(b"role: gw", b"site: oslo")
    updates = {
        "fleets__all.yaml": narrower,
        "fleets__oslo.yaml": other.replace(b"template: app", b"template: other"),
    }
    assert affected_after(files, **updates) == {("acme", "gw-2")}


def test_a_failed_device_is_rendered_again_on_every_change() -> None:
    files = repo()
    files[f"{T}/devices/gw-2/kustomization.yaml"] = b"resources:\n- missing.yaml\n"
    assert affected_after(files, **{"README.md": b"hello"}) == {("acme", "gw-2")}


def test_a_template_added_later_reaches_the_device_that_named_it() -> None:
    files = repo()
    files[f"{T}/devices/gw-2/device.yaml"] = device("gw-2", "oslo", "  template: later\n")
    updates = {"templates__later__kustomization.yaml": b"resources:\n- ../app\n"}
    assert affected_after(files, **updates) == {("acme", "gw-2")}


def test_unrelated_files_affect_nothing_in_the_example_repo() -> None:
    files, _ = snapshots.read_worktree(Path(__file__).parents[1] / "fleet-repo-example")
    memo = loader.LoadMemo()
    model = loader.load(files, memo=memo).model
    before = desired.render_devices(files, model)
    assert all(render.ok for render in before.values())
    overlay = "tenants/acme-sensors/devices/berlin-gw-01/kustomization.yaml"
    after = dict(files)
    after[overlay] = files[overlay] + b"\n"
    assert desired.affected(before, model, loader.load(after, memo=memo).model, [overlay]) == {
        ("acme-sensors", "berlin-gw-01")
    }
    assert desired.affected(before, model, model, ["README.md"]) == set()
