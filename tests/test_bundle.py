"""The bundle shared by connector, protocol and appliers: documents, ids, digest."""

from __future__ import annotations

import pytest

from rciots.agent.bundle import (
    ApplyResult,
    Bundle,
    BundleError,
    ResourceId,
    ResourceResult,
    digest_of,
    split_documents,
)

TWO = """\
apiVersion: v1
data:
  text: |
    a
    ---
    b
kind: ConfigMap
metadata:
  name: one
---
apiVersion: v1
kind: Service
metadata:
  name: two
  namespace: edge
"""

IDS = (
    ResourceId("v1", "ConfigMap", "one"),
    ResourceId("v1", "Service", "two", "edge"),
)


def test_documents_split_at_column_zero_separators_only():
    documents = split_documents(TWO)
    assert len(documents) == 2
    assert documents[0].endswith("  name: one\n")
    assert "    ---\n" in documents[0]
    assert documents[1].startswith("apiVersion: v1\nkind: Service\n")
    assert "---\n".join(documents) == TWO


def test_empty_manifests_have_no_documents():
    assert split_documents("") == []


def test_a_bundle_checks_its_digest_and_its_ids():
    Bundle("rev", digest_of(TWO), TWO, IDS).check()
    with pytest.raises(BundleError, match="do not match digest"):
        Bundle("rev", digest_of(TWO + "x"), TWO, IDS).check()
    with pytest.raises(BundleError, match="2 document"):
        Bundle("rev", digest_of(TWO), TWO, IDS[:1]).check()


def test_documents_pair_each_id_with_its_text():
    pairs = Bundle("rev", digest_of(TWO), TWO, IDS).documents()
    assert [resource.label() for resource, _ in pairs] == ["ConfigMap/one", "Service/edge/two"]
    assert pairs[1][1].endswith("namespace: edge\n")


def test_resource_ids_round_trip_through_json():
    for resource in IDS:
        assert ResourceId.from_json(resource.to_json()) == resource
    assert IDS[0].to_json() == {"apiVersion": "v1", "kind": "ConfigMap", "name": "one"}
    assert ResourceId("apps/v1", "Deployment", "d").group == "apps"
    assert IDS[0].group == ""


def test_an_apply_is_ok_only_when_every_resource_is():
    good = ResourceResult(IDS[0], "applied")
    bad = ResourceResult(IDS[1], "failed", "no such image")
    assert ApplyResult("sha256:x", (good,)).ok
    assert not ApplyResult("sha256:x", (good, bad)).ok
    assert not ApplyResult("sha256:x", (), error="kubectl not found").ok


def split_by_lines(manifests: str) -> list[str]:
    """The plain reading of the rule: lines at '\\n', a '---' line separates."""
    if not manifests:
        return []
    documents, current = [], []
    for line in manifests.split("\n"):
        current.append(line)
        if line.rstrip("\r") == "---":
            current.pop()
            documents.append("\n".join(current) + ("\n" if current else ""))
            current = []
    documents.append("\n".join(current))
    return documents


@pytest.mark.parametrize(
    "manifests",
    [
        TWO,
        "a: 1\n",
        "---\na: 1\n",
        "a: 1\n---\n",
        "a: 1\n---",
        "a: 1\n---\r\nb: 2\n",
        "a: |\n  ---\n  x\n---\nb: ---\n",
        "a: 1\n----\nb: 2\n",
        "a: 1\n--- \nb: 2\n",
        "a: 1\r---\nb: 2\n",
        "a: 1\n---\n---\nb: 2\n",
        "a: 1\u2028---\nb: 2\n",
    ],
)
def test_documents_split_as_the_rule_reads(manifests):
    assert split_documents(manifests) == split_by_lines(manifests)
