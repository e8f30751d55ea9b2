"""The directory applier: a bundle written into a folder, atomically, with per-resource files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from rciots.agent import applier, applier_directory
from rciots.agent.bundle import ApplyResult, Bundle, ResourceId, digest_of

CM = ResourceId("v1", "ConfigMap", "cfg", "edge")
DEPLOY = ResourceId("apps/v1", "Deployment", "web", "edge")
NS = ResourceId("v1", "Namespace", "edge")

CM_TEXT = (
    "apiVersion: v1\ndata:\n  a: b\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: edge\n"
)
DEPLOY_TEXT = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: edge\n"
NS_TEXT = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: edge\n"


def bundle_of(*pairs: tuple[ResourceId, str], revision: str = "rev1") -> Bundle:
    manifests = "---\n".join(text for _, text in pairs)
    return Bundle(revision, digest_of(manifests), manifests, tuple(r for r, _ in pairs))


def actions(result: ApplyResult) -> list[tuple[ResourceId, str]]:
    return [(r.resource, r.action) for r in result.resources]


def test_a_bundle_is_written_with_one_file_per_resource_and_an_index(tmp_path):
    bundle = bundle_of((NS, NS_TEXT), (CM, CM_TEXT), (DEPLOY, DEPLOY_TEXT))
    result = applier.create("directory", root=tmp_path).apply(bundle, [])
    assert result.ok
    assert actions(result) == [(NS, "applied"), (CM, "applied"), (DEPLOY, "applied")]

    current = tmp_path / "current"
    assert current.is_symlink()
    assert (current / "bundle.yaml").read_text() == bundle.manifests
    assert sorted(p.name for p in (current / "resources").iterdir()) == [
        "apps_Deployment_edge_web.yaml",
        "core_ConfigMap_edge_cfg.yaml",
        "core_Namespace__edge.yaml",
    ]
    assert (current / "resources" / "core_ConfigMap_edge_cfg.yaml").read_text() == CM_TEXT
    index = json.loads((current / "index.json").read_text())
    assert index == {
        "revision": "rev1",
        "digest": bundle.digest,
        "resources": [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "name": "edge",
                "file": "resources/core_Namespace__edge.yaml",
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": "cfg",
                "namespace": "edge",
                "file": "resources/core_ConfigMap_edge_cfg.yaml",
            },
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "web",
                "namespace": "edge",
                "file": "resources/apps_Deployment_edge_web.yaml",
            },
        ],
    }


def test_files_are_for_the_owner_only(tmp_path):
    applier.create("directory", root=tmp_path).apply(bundle_of((CM, CM_TEXT)), [])
    target = (tmp_path / "current").resolve()
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    for path in [target / "bundle.yaml", target / "index.json", *target.glob("resources/*")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_new_bundle_replaces_the_folder_and_prunes_what_left(tmp_path):
    directory = applier.create("directory", root=tmp_path)
    first = bundle_of((NS, NS_TEXT), (CM, CM_TEXT), (DEPLOY, DEPLOY_TEXT))
    directory.apply(first, [])
    old_target = (tmp_path / "current").resolve()

    changed = CM_TEXT.replace("a: b", "a: c")
    second = bundle_of((NS, NS_TEXT), (CM, changed), revision="rev2")
    result = directory.apply(second, list(first.resources))
    assert actions(result) == [(NS, "unchanged"), (CM, "applied"), (DEPLOY, "pruned")]
    assert applier.inventory_after(first.resources, result) == (NS, CM)

    current = tmp_path / "current"
    assert sorted(p.name for p in (current / "resources").iterdir()) == [
        "core_ConfigMap_edge_cfg.yaml",
        "core_Namespace__edge.yaml",
    ]
    assert (current / "resources" / "core_ConfigMap_edge_cfg.yaml").read_text() == changed
    # only the current bundle's folder is kept
    assert [p.name for p in (tmp_path / "bundles").iterdir()] == [current.resolve().name]
    assert not old_target.exists()


def test_the_same_bundle_again_writes_nothing(tmp_path):
    directory = applier.create("directory", root=tmp_path)
    bundle = bundle_of((CM, CM_TEXT), (DEPLOY, DEPLOY_TEXT))
    directory.apply(bundle, [])
    target = (tmp_path / "current").resolve()
    result = directory.apply(bundle, list(bundle.resources))
    assert actions(result) == [(CM, "unchanged"), (DEPLOY, "unchanged")]
    assert (tmp_path / "current").resolve() == target


def test_a_crash_before_the_switch_leaves_the_old_bundle_current(tmp_path):
    directory = applier.create("directory", root=tmp_path)
    first = bundle_of((CM, CM_TEXT))
    directory.apply(first, [])
    # what a crash in the middle of writing the next bundle leaves behind
    half = tmp_path / "bundles" / "0123456789abcdef-dead"
    (half / "resources").mkdir(parents=True)
    (half / "resources" / "core_ConfigMap_edge_cfg.yaml").write_text("apiVersion: v1\nkin")
    (tmp_path / ".current.0badf00d.tmp").symlink_to("bundles/0123456789abcdef-dead")

    assert (tmp_path / "current" / "bundle.yaml").read_text() == first.manifests
    second = bundle_of((CM, CM_TEXT), (DEPLOY, DEPLOY_TEXT), revision="rev2")
    result = directory.apply(second, [CM])
    assert actions(result) == [(CM, "unchanged"), (DEPLOY, "applied")]
    assert [p.name for p in (tmp_path / "bundles").iterdir()] == [
        (tmp_path / "current").resolve().name
    ]
    assert not (tmp_path / ".current.0badf00d.tmp").is_symlink()


def test_a_failure_before_the_switch_is_an_error_and_changes_nothing(tmp_path):
    directory = applier.create("directory", root=tmp_path)
    # someone made current a real folder: the new bundle is written, but cannot take its place
    (tmp_path / "current").mkdir()
    (tmp_path / "current" / "mine").write_text("kept")
    result = directory.apply(bundle_of((DEPLOY, DEPLOY_TEXT)), [CM])
    assert result.error is not None
    assert result.error.startswith(f"cannot write the bundle under {tmp_path}: ")
    assert result.resources == ()
    assert applier.inventory_after([CM], result) == (CM,)
    assert [p.name for p in (tmp_path / "current").iterdir()] == ["mine"]


def test_a_folder_that_cannot_be_created_is_an_error(tmp_path):
    (tmp_path / "file").write_text("")
    result = applier.create("directory", root=tmp_path / "file" / "out").apply(
        bundle_of((CM, CM_TEXT)), []
    )
    assert result.error is not None
    assert result.error.startswith("cannot write the bundle under ")
    assert result.resources == ()


@pytest.mark.parametrize(
    ("resource", "name"),
    [
        (ResourceId("v1", "ConfigMap", "a_b"), "core_ConfigMap__a%5Fb.yaml"),
        (
            ResourceId("v1", "ConfigMap", "../../etc/passwd"),
            "core_ConfigMap__..%2F..%2Fetc%2Fpasswd.yaml",
        ),
        (ResourceId("v1", "ConfigMap", ".."), "core_ConfigMap__...yaml"),
        (ResourceId("example.com/v1", "Thing", "x", "ns"), "example.com_Thing_ns_x.yaml"),
        (ResourceId("v1", "ConfigMap", "é"), "core_ConfigMap__%C3%A9.yaml"),
    ],
)
def test_file_names_are_single_safe_names(resource, name):
    assert applier_directory.file_name(resource) == name


def test_long_names_are_cut_with_a_hash_that_keeps_them_apart():
    first = applier_directory.file_name(ResourceId("v1", "ConfigMap", "x" * 250 + "1"))
    second = applier_directory.file_name(ResourceId("v1", "ConfigMap", "x" * 250 + "2"))
    assert len(first) <= 200
    assert first != second
    assert first == applier_directory.file_name(ResourceId("v1", "ConfigMap", "x" * 250 + "1"))


def test_names_that_try_to_leave_the_folder_stay_inside(tmp_path):
    evil = ResourceId("v1", "ConfigMap", "../../escaped", "../..")
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"
    result = applier.create("directory", root=tmp_path / "out").apply(bundle_of((evil, text)), [])
    assert result.ok
    assert not (tmp_path / "escaped").exists()
    written = list((tmp_path / "out" / "current" / "resources").iterdir())
    assert [p.read_text() for p in written] == [text]


def test_the_same_resource_twice_is_written_once_and_reported(tmp_path):
    bundle = bundle_of((CM, CM_TEXT), (CM, CM_TEXT))
    result = applier.create("directory", root=tmp_path).apply(bundle, [])
    assert actions(result) == [(CM, "applied"), (CM, "failed")]
    assert result.resources[1].message == "the same resource twice in the bundle"


def test_an_empty_bundle_prunes_everything(tmp_path):
    directory = applier.create("directory", root=tmp_path)
    directory.apply(bundle_of((CM, CM_TEXT)), [])
    result = directory.apply(bundle_of(), [CM])
    assert actions(result) == [(CM, "pruned")]
    assert list((tmp_path / "current" / "resources").iterdir()) == []
    assert (tmp_path / "current" / "bundle.yaml").read_text() == ""


def test_the_root_can_be_a_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = applier.create("directory", root=Path("out")).apply(bundle_of((CM, CM_TEXT)), [])
    assert result.ok
    assert (tmp_path / "out" / "current" / "bundle.yaml").read_text() == CM_TEXT
