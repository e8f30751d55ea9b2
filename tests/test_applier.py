"""The appliers' common surface: the factory, the inventory, and what every applier does with
a missing tool or an inconsistent bundle."""

from __future__ import annotations

import pytest

from rciots.agent import applier
from rciots.agent.applier_directory import DirectoryApplier
from rciots.agent.applier_kubectl import KubectlApplier
from rciots.agent.applier_podman import PodmanApplier
from rciots.agent.bundle import ApplyResult, Bundle, ResourceId, ResourceResult, digest_of

CM = ResourceId("v1", "ConfigMap", "cfg", "edge")
DEPLOY = ResourceId("apps/v1", "Deployment", "web", "edge")
OLD = ResourceId("v1", "Service", "old", "edge")

CONFIG = """\
apiVersion: v1
data:
  password: visible-config
kind: ConfigMap
metadata:
  name: cfg
"""


def test_the_factory_makes_each_applier_by_name(tmp_path):
    assert isinstance(applier.create("directory", root=tmp_path), DirectoryApplier)
    assert isinstance(applier.create("podman", root=tmp_path), PodmanApplier)
    kubectl = applier.create("kubectl", env={"PATH": ""}, timeout=5)
    assert isinstance(kubectl, KubectlApplier)
    assert (kubectl.executable, kubectl.timeout) == ("kubectl", 5)
    oc = applier.create("oc")
    assert isinstance(oc, KubectlApplier)
    assert (oc.kind, oc.executable) == ("oc", "oc")


def test_the_factory_refuses_unknown_names_and_missing_folders():
    with pytest.raises(ValueError, match="unknown applier 'helm'"):
        applier.create("helm")
    with pytest.raises(ValueError, match="root folder"):
        applier.create("directory")
    with pytest.raises(ValueError, match="state folder"):
        applier.create("podman")


def test_the_inventory_keeps_all_but_the_pruned():
    result = ApplyResult(
        "sha256:x",
        (
            ResourceResult(CM, "applied"),
            ResourceResult(DEPLOY, "failed", "no"),
            ResourceResult(OLD, "failed", "could not delete"),
            ResourceResult(ResourceId("v1", "Secret", "gone"), "pruned"),
        ),
    )
    assert applier.inventory_after([OLD], result) == (CM, DEPLOY, OLD)


def test_an_apply_that_did_nothing_keeps_the_previous_inventory():
    result = ApplyResult("sha256:x", error="kubectl not found on PATH")
    assert applier.inventory_after([OLD, CM], result) == (OLD, CM)


def test_a_missing_tool_is_a_result_error_not_an_exception(tmp_path):
    bundle = Bundle("rev", digest_of(CONFIG), CONFIG, (CM,))
    empty = {"PATH": str(tmp_path)}
    for made in (
        applier.create("kubectl", env=empty),
        applier.create("oc", env=empty),
        applier.create("podman", root=tmp_path / "state", env=empty),
    ):
        result = made.apply(bundle, [OLD])
        assert result.error == f"{made.kind} not found on PATH (is it installed?)"
        assert result.resources == ()
        assert applier.inventory_after([OLD], result) == (OLD,)


def test_an_inconsistent_bundle_is_refused_by_every_applier(tmp_path):
    bundle = Bundle("rev", digest_of(CONFIG), CONFIG, (CM, DEPLOY))
    for made in (
        applier.create("directory", root=tmp_path / "out"),
        applier.create("kubectl", env={"PATH": ""}),
        applier.create("podman", root=tmp_path / "state", env={"PATH": ""}),
    ):
        result = made.apply(bundle, [])
        assert result.error == "1 document(s) in the manifests but 2 resource id(s)"
