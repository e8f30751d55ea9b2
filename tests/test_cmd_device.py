"""``rciots device approve|disable|enable`` on real files: edits in place, refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from rciots.controller import cli, schemas

TENANT = "apiVersion: rciots.io/v1\nkind: Tenant\nmetadata:\n  name: acme\n"
DEVICE_PATH = "tenants/acme/devices/gw-01/device.yaml"
COMMENTED = """\
# Gateway in the Berlin shop.
# Owner: platform team.

apiVersion: rciots.io/v1  # format v1
kind: Device
metadata:
  name: gw-01
  labels:
    site: 'berlin'

spec:
  # approved by the shop manager
  approved: false   # waiting for the manager
  enabled: true  # on
  template: web
# end of file
"""
NO_SPEC = "apiVersion: rciots.io/v1\nkind: Device\nmetadata:\n  name: gw-01  # from the label\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fleet repo with tenant ``acme`` and its templates ``web`` and ``shop``."""
    root = tmp_path / "fleet"
    for template in ("web", "shop"):
        (root / f"tenants/acme/templates/{template}").mkdir(parents=True)
        (root / f"tenants/acme/templates/{template}/kustomization.yaml").write_text("{}\n")
    (root / "tenants/acme/tenant.yaml").write_text(TENANT)
    return root


def device_file(repo: Path, text: str) -> Path:
    path = repo / DEVICE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def device(repo: Path, action: str, *args: str) -> int:
    return cli.main(["device", action, "--repo", str(repo), *args])


def error_of(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_approve_creates_the_device_file(repo: Path) -> None:
    assert device(repo, "approve", "acme/gw-01") == 0
    assert (repo / DEVICE_PATH).read_text() == (
        "apiVersion: rciots.io/v1\n"
        "kind: Device\n"
        "metadata:\n"
        "  name: gw-01\n"
        "spec:\n"
        "  approved: true\n"
        "  enabled: true\n"
    )


def test_approve_writes_template_labels_and_description(repo: Path) -> None:
    args = ["acme/gw-01", "--template", "web", "--label", "site=berlin", "--description", "Till"]
    device(repo, "approve", *args)
    assert (repo / DEVICE_PATH).read_text() == (
        "apiVersion: rciots.io/v1\n"
        "kind: Device\n"
        "metadata:\n"
        "  name: gw-01\n"
        "  labels:\n"
        "    site: berlin\n"
        "spec:\n"
        "  approved: true\n"
        "  enabled: true\n"
        "  template: web\n"
        "  description: Till\n"
    )


def test_new_device_file_matches_the_device_schema(repo: Path) -> None:
    device(repo, "approve", "acme/gw-01", "--template", "web", "--label", "ready=true")
    document = YAML(typ="safe", pure=True).load((repo / DEVICE_PATH).read_text())
    assert schemas.validate("Device", document) == []


def test_approve_says_what_it_wrote(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    device(repo, "approve", "acme/gw-01")
    assert capsys.readouterr().err == (
        "approved tenants/acme/devices/gw-01/device.yaml (new file); commit it and open a pull "
        "request\n"
    )


def test_approve_changes_only_the_approved_value(repo: Path) -> None:
    path = device_file(repo, COMMENTED)
    device(repo, "approve", "acme/gw-01")
    assert path.read_text() == COMMENTED.replace(
        "  approved: false   # waiting", "  approved: true   # waiting"
    )


def test_approve_of_existing_file_says_what_it_changed(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device_file(repo, COMMENTED)
    device(repo, "approve", "acme/gw-01")
    assert capsys.readouterr().err == (
        "approved tenants/acme/devices/gw-01/device.yaml; commit it and open a pull request\n"
    )


def test_approve_sets_template_and_label_in_existing_file(repo: Path) -> None:
    path = device_file(repo, COMMENTED)
    device(repo, "approve", "acme/gw-01", "--template", "shop", "--label", "tier=edge")
    assert path.read_text() == (
        COMMENTED.replace("  approved: false   # waiting", "  approved: true   # waiting")
        .replace("  template: web\n", "  template: shop\n")
        .replace("    site: 'berlin'\n", "    site: 'berlin'\n    tier: edge\n")
    )


def test_approve_adds_spec_to_a_file_without_one(repo: Path) -> None:
    path = device_file(repo, NO_SPEC)
    device(repo, "approve", "acme/gw-01")
    assert path.read_text() == NO_SPEC + "spec:\n  approved: true\n"


def test_disable_changes_only_the_enabled_value(repo: Path) -> None:
    path = device_file(repo, COMMENTED)
    assert device(repo, "disable", "acme/gw-01") == 0
    assert path.read_text() == COMMENTED.replace("  enabled: true  # on", "  enabled: false  # on")


def test_disable_says_what_it_changed(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    device_file(repo, COMMENTED)
    device(repo, "disable", "acme/gw-01")
    assert capsys.readouterr().err == (
        "disabled tenants/acme/devices/gw-01/device.yaml; commit it and open a pull request\n"
    )


def test_disable_adds_spec_to_a_file_without_one(repo: Path) -> None:
    path = device_file(repo, NO_SPEC)
    device(repo, "disable", "acme/gw-01")
    assert path.read_text() == NO_SPEC + "spec:\n  enabled: false\n"


def test_disable_twice_gives_the_same_bytes(repo: Path) -> None:
    path = device_file(repo, COMMENTED)
    device(repo, "disable", "acme/gw-01")
    once = path.read_bytes()
    device(repo, "disable", "acme/gw-01")
    assert path.read_bytes() == once


def test_disable_of_disabled_device_says_nothing_changed(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device_file(repo, COMMENTED.replace("enabled: true", "enabled: false"))
    assert device(repo, "disable", "acme/gw-01") == 0
    assert capsys.readouterr().err == (
        "tenants/acme/devices/gw-01/device.yaml is already disabled; nothing to commit\n"
    )


def test_enable_changes_only_the_enabled_value(repo: Path) -> None:
    disabled = COMMENTED.replace("  enabled: true  # on", "  enabled: false  # on")
    path = device_file(repo, disabled)
    assert device(repo, "enable", "acme/gw-01") == 0
    assert path.read_text() == COMMENTED


def test_edit_keeps_the_file_mode(repo: Path) -> None:
    path = device_file(repo, COMMENTED)
    path.chmod(0o600)
    device(repo, "disable", "acme/gw-01")
    assert path.stat().st_mode & 0o777 == 0o600


def test_edit_leaves_no_temporary_file(repo: Path) -> None:
    path = device_file(repo, COMMENTED)
    device(repo, "disable", "acme/gw-01")
    assert sorted(p.name for p in path.parent.iterdir()) == ["device.yaml"]


def test_disable_of_missing_device(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert device(repo, "disable", "acme/gw-01") == 1
    assert error_of(capsys) == (
        "rciots: error: device 'acme/gw-01' does not exist: tenants/acme/devices/gw-01/"
        "device.yaml is missing (approve it first with `rciots device approve acme/gw-01`)\n"
    )


def test_enable_of_missing_device(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert device(repo, "enable", "acme/gw-01") == 1
    assert "device 'acme/gw-01' does not exist" in error_of(capsys)


@pytest.mark.parametrize("text", ["gw-01", "acme/gw/01", "acme/gw-01/"])
def test_device_argument_must_be_tenant_slash_name(
    repo: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    assert device(repo, "approve", text) == 1
    assert error_of(capsys) == (
        f"rciots: error: bad device {text!r}: write it as TENANT/NAME, e.g. acme/gw-01\n"
    )


def test_device_argument_with_empty_tenant(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert device(repo, "approve", "/gw-01") == 1
    assert error_of(capsys).startswith(
        "rciots: error: bad tenant '' in '/gw-01': use a DNS-1123 label"
    )


def test_disable_argument_without_slash(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert device(repo, "disable", "gw-01") == 1
    assert error_of(capsys) == (
        "rciots: error: bad device 'gw-01': write it as TENANT/NAME, e.g. acme/gw-01\n"
    )


def test_device_name_must_be_a_dns_label(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert device(repo, "approve", "acme/GW_01") == 1
    assert error_of(capsys) == (
        "rciots: error: bad device name 'GW_01' in 'acme/GW_01': use a DNS-1123 label: "
        "lowercase letters, digits and '-', starting and ending with a letter or digit, at "
        "most 63 characters\n"
    )


def test_unknown_tenant(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert device(repo, "approve", "other/gw-01") == 1
    assert error_of(capsys) == (
        "rciots: error: unknown tenant 'other': tenants/other/tenant.yaml does not exist "
        "(create the tenant first)\n"
    )


def test_unknown_template(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert device(repo, "approve", "acme/gw-01", "--template", "till") == 1
    assert error_of(capsys) == (
        "rciots: error: unknown template 'till': tenants/acme/templates/till/ has no "
        "kustomization.yaml, kustomization.yml or Kustomization (create the template first or "
        "choose another --template)\n"
    )


def test_bad_label(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert device(repo, "approve", "acme/gw-01", "--label", "=x") == 1
    assert error_of(capsys).startswith("rciots: error: bad --label '=x': label key '' is not valid")


def test_template_refused_for_device_with_own_overlay(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device_file(repo, NO_SPEC)
    (repo / "tenants/acme/devices/gw-01/kustomization.yml").write_text("resources: []\n")
    assert device(repo, "approve", "acme/gw-01", "--template", "web") == 1
    assert error_of(capsys) == (
        "rciots: error: device acme/gw-01 has its own overlay "
        "tenants/acme/devices/gw-01/kustomization.yml: leave out --template and choose its "
        "bases in that file\n"
    )


def test_device_with_own_overlay_is_approved_without_template(repo: Path) -> None:
    path = device_file(repo, NO_SPEC)
    (repo / "tenants/acme/devices/gw-01/kustomization.yaml").write_text("resources: []\n")
    assert device(repo, "approve", "acme/gw-01") == 0
    assert path.read_text() == NO_SPEC + "spec:\n  approved: true\n"


def test_broken_device_file_is_reported_with_line_and_column(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device_file(repo, "kind: Device\nspec:\n  enabled: true: x\n")
    assert device(repo, "disable", "acme/gw-01") == 1
    assert error_of(capsys) == (
        "rciots: error: tenants/acme/devices/gw-01/device.yaml: line 3, column 16: mapping "
        "values are not allowed here (fix the file, then run this again)\n"
    )


def test_symlinked_device_file_is_refused(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "elsewhere.yaml"
    target.write_text(COMMENTED)
    (repo / "tenants/acme/devices/gw-01").mkdir(parents=True)
    (repo / DEVICE_PATH).symlink_to(target)
    assert device(repo, "disable", "acme/gw-01") == 1
    assert error_of(capsys) == (
        "rciots: error: refusing to write tenants/acme/devices/gw-01/device.yaml: "
        "tenants/acme/devices/gw-01/device.yaml is a symbolic link (fleet repo files are "
        "never read or written through links; replace it with the real file or directory)\n"
    )
    assert target.read_text() == COMMENTED


def test_symlinked_devices_folder_is_refused(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo / "tenants/acme/devices").symlink_to(outside)
    assert device(repo, "approve", "acme/gw-01") == 1
    assert "tenants/acme/devices is a symbolic link" in error_of(capsys)
    assert list(outside.iterdir()) == []


def test_edit_does_not_touch_a_hard_linked_copy(repo: Path, tmp_path: Path) -> None:
    # Replacing by rename, not writing into the file, keeps other names of it unchanged.
    path = device_file(repo, COMMENTED)
    os.link(path, tmp_path / "copy.yaml")
    device(repo, "disable", "acme/gw-01")
    assert (tmp_path / "copy.yaml").read_text() == COMMENTED
