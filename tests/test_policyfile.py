"""The policy file: the documented example, defaults, and every kind of bad file reported with
path, line and column."""

# ruff: noqa: E501 (the tables keep one case per line)
from __future__ import annotations

import re
from pathlib import Path

import pytest

from rciots.controller import policy, policyfile
from rciots.controller.diagnostics import Diagnostic

REPO = Path(__file__).resolve().parent.parent
HEAD = "apiVersion: rciots.io/v1\nkind: Policy\n"
FULL = """\
apiVersion: rciots.io/v1
kind: Policy
metadata:
  name: edge
  labels:
    team: platform
spec:
  allow: [node]
  deny: [privileged-container, no-catalogs]
  rules:
    - id: no-catalogs
      reason: catalogs install operators
      kinds:
        - group: operators.coreos.com
          kind: CatalogSource
        - group: ""
          kind: Secret
    - id: no-olm
      reason: operators are the operator's
      kinds:
        - group: operators.coreos.com
  tenants:
    acme:
      allow: [privileged-container, custom-resource-definition]
    globex:
      deny: [no-olm, host-path-volume]
    initech: {}
"""


def ids(rules: tuple[policy.Rule, ...]) -> list[str]:
    return [rule.id for rule in rules]


def test_a_full_file() -> None:
    read = policyfile.parse_policy(FULL.encode())
    assert read.allow == {"node"}
    assert read.deny == {"privileged-container", "no-catalogs"}
    assert dict(read.tenants) == {
        "acme": policy.Override(
            allow=frozenset({"privileged-container", "custom-resource-definition"})
        ),
        "globex": policy.Override(deny=frozenset({"no-olm", "host-path-volume"})),
        "initech": policy.Override(),
    }
    assert [(r.id, r.reason, sorted(r.kinds), r.default, r.docs) for r in read.rules] == [
        (
            "no-catalogs",
            "catalogs install operators",
            [("", "secret"), ("operators.coreos.com", "catalogsource")],
            False,
            None,
        ),
        ("no-olm", "operators are the operator's", [("operators.coreos.com", "*")], False, None),
    ]
    defaults = [rule.id for rule in policy.DEFAULT_POLICY.denied("x")]
    without_node = [rule_id for rule_id in defaults if rule_id != "node"]
    assert ids(read.denied("initech")) == [*without_node, "privileged-container", "no-catalogs"]
    acme = [rule_id for rule_id in without_node if rule_id != "custom-resource-definition"]
    assert ids(read.denied("acme")) == [*acme, "no-catalogs"]
    assert ids(read.denied("globex")) == [
        *without_node,
        "privileged-container",
        "host-path-volume",
        "no-catalogs",
        "no-olm",
    ]


def test_the_file_s_rules_check_resources() -> None:
    read = policyfile.parse_policy(FULL.encode())
    resources = [
        {
            "apiVersion": "operators.coreos.com/v1alpha1",
            "kind": "Subscription",
            "metadata": {"name": "s"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db"},
            "data": {"k": "dmFsdWU="},
        },
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}},
    ]
    assert [str(v) for v in policy.check(read, "globex", resources)] == [
        "Secret/db: kind 'Secret' of API group 'core' (rule no-catalogs): catalogs install "
        "operators; ask the controller operator to allow the rule for this tenant",
        "Subscription/s: kind 'Subscription' of API group 'operators.coreos.com' (rule no-olm): "
        "operators are the operator's; ask the controller operator to allow the rule for this "
        "tenant",
    ]


@pytest.mark.parametrize(
    "text",
    [HEAD, HEAD + "spec: {}\n", HEAD + "metadata:\n  name: default\nspec:\n  tenants: {}\n"],
)
def test_a_file_with_nothing_set_is_the_default_policy(text: str) -> None:
    assert policyfile.parse_policy(text.encode()) == policy.DEFAULT_POLICY


def test_the_documented_example_is_valid() -> None:
    text = (REPO / "docs" / "policy.md").read_text(encoding="utf-8")
    section = text[text.index("## The policy file") :]
    example = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert example is not None
    read = policyfile.parse_policy(example.group(1).encode(), "docs/policy.md")
    assert "olm-catalog-source" in ids(read.denied("northwind-retail"))
    assert "privileged-container" not in ids(read.denied("acme-sensors"))


BAD: list[object] = [
    pytest.param(HEAD + "spec:\n  denny: [node]\n", ["4:3: unknown field 'denny' in spec; allowed fields: allow, deny, rules, tenants"], id="unknown-field"),
    pytest.param(HEAD + "metdata:\n  name: x\n", ["3:1: unknown field 'metdata' in the document; allowed fields: apiVersion, kind, metadata, spec"], id="unknown-top-level-field"),
    pytest.param(HEAD + "spec:\n  tenants:\n    acme:\n      alow: [node]\n", ["6:7: unknown field 'alow' in spec.tenants.acme; allowed fields: allow, deny"], id="unknown-field-of-a-tenant"),
    pytest.param(HEAD + "spec:\n  deny: node\n", ["4:9: spec.deny must be a list, not the string 'node'; list rule ids, such as [custom-resource-definition] (see docs/policy.md#rules)"], id="wrong-type"),
    pytest.param(HEAD + "spec:\n  deny: [1]\n", ["4:10: spec.deny[0] must be a string, not the number 1; a rule id is a DNS-1123 label such as cluster-admin-binding (see docs/policy.md#rules)"], id="wrong-type-of-item"),
    pytest.param(HEAD + "spec:\n  tenants:\n    acme:\n", ["5:10: spec.tenants.acme must be a mapping, not null (an empty value)"], id="tenant-without-settings"),
    pytest.param(HEAD + "spec:\n  deny: [nodes]\n", ["4:10: unknown rule 'nodes' in spec.deny; did you mean 'node'? the rules are listed in docs/policy.md#rules, or define it in spec.rules"], id="unknown-rule-id"),
    pytest.param(HEAD + "spec:\n  tenants:\n    acme:\n      allow: [zzzzzz, host-path]\n", ["6:15: unknown rule 'zzzzzz' in spec.tenants.acme.allow; the rules are listed in docs/policy.md#rules, or define it in spec.rules", "6:23: unknown rule 'host-path' in spec.tenants.acme.allow; did you mean 'host-path-volume'? the rules are listed in docs/policy.md#rules, or define it in spec.rules"], id="unknown-rule-ids-of-a-tenant"),
    pytest.param(HEAD + "spec:\n  deny: [Node]\n", ["4:10: spec.deny[0] is not valid: the string 'Node'; a rule id is a DNS-1123 label such as cluster-admin-binding (see docs/policy.md#rules)"], id="rule-id-not-a-label"),
    pytest.param(HEAD + "spec:\n  allow: [node]\n  deny: [wildcard-role, node]\n", ["5:25: rule 'node' is both allowed and denied in spec: keep it in one of the two lists"], id="allowed-and-denied"),
    pytest.param(HEAD + "spec:\n  tenants:\n    acme:\n      allow: [node]\n      deny: [node]\n", ["7:14: rule 'node' is both allowed and denied in spec.tenants.acme: keep it in one of the two lists"], id="allowed-and-denied-for-a-tenant"),
    pytest.param(HEAD + "spec:\n  tenants:\n    Acme: {}\n", ["5:5: key 'Acme' in spec.tenants is not valid; use a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"], id="tenant-name"),
    pytest.param(HEAD + "spec:\n  rules:\n    - id: node\n      reason: r\n      kinds: [{group: ''}]\n", ["5:11: rule id 'node' is taken by a built-in rule: choose another"], id="rule-id-of-a-built-in-rule"),
    pytest.param(HEAD + "spec:\n  rules:\n    - id: a\n      reason: r\n      kinds: [{group: ''}]\n    - id: a\n      reason: r\n      kinds: [{group: x.io}]\n", ["8:11: rule id 'a' is taken by an earlier rule in spec.rules: choose another"], id="rule-id-twice"),
    pytest.param(HEAD + "spec:\n  rules:\n    - id: a\n      kinds: [{group: ''}]\n", ["5:7: spec.rules[0] is missing the required field 'reason'"], id="rule-without-reason"),
    pytest.param(HEAD + "spec:\n  rules:\n    - id: a\n      reason: r\n      kinds: []\n", ["7:14: spec.rules[0].kinds is not valid; list at least one kind as {group: GROUP, kind: KIND}"], id="rule-without-kinds"),
    pytest.param(HEAD + "spec:\n  rules:\n    - id: a\n      reason: r\n      kinds: [{group: Storage/v1, kind: Storage Class}]\n", ["7:23: spec.rules[0].kinds[0].group is not valid: the string 'Storage/v1'; write the API group as in apiVersion before the '/', such as storage.k8s.io; \"\" is the core group (apiVersion: v1)", "7:41: spec.rules[0].kinds[0].kind is not valid: the string 'Storage Class'; write the kind as in manifests, such as StorageClass; leave it out to deny every kind of the group"], id="rule-kind-not-valid"),
    pytest.param("apiVersion: rciots.io/v1\nkind: Tenant\nmetadata:\n  name: x\n", ["2:7: this file declares kind 'Tenant'; a policy file declares apiVersion: rciots.io/v1 and kind: Policy (see docs/policy.md)"], id="another-kind"),
    pytest.param("apiVersion: rciots.io/v1\n", ["1:1: this file declares no kind; a policy file declares apiVersion: rciots.io/v1 and kind: Policy (see docs/policy.md)"], id="no-kind"),
    pytest.param("apiVersion: rciots.io/v2\nkind: Policy\n", ["1:13: apiVersion must be 'rciots.io/v1', not the string 'rciots.io/v2'; set apiVersion: rciots.io/v1 (the only version this controller reads)"], id="another-api-version"),
    pytest.param(HEAD + "---\n" + HEAD, ["4:1: found 2 documents: a policy file declares one kind: Policy"], id="two-documents"),
    pytest.param("# nothing yet\n", ["1:1: found nothing: a policy file declares one kind: Policy"], id="empty"),
    pytest.param(HEAD + "spec: [\n", ["4:1: invalid YAML: did not find expected node content"], id="yaml-syntax"),
    pytest.param(HEAD + "kind: Policy\n", ["3:1: duplicate key 'kind' (first at line 2): remove one of them"], id="duplicate-key"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_files_are_reported_with_their_place(text: str, expected: list[str]) -> None:
    with pytest.raises(policyfile.PolicyFileError) as caught:
        policyfile.parse_policy(text.encode(), "/etc/rciots/policy.yaml")
    assert str(caught.value).splitlines() == [
        f"/etc/rciots/policy.yaml:{line}" for line in expected
    ]
    assert all(isinstance(d, Diagnostic) for d in caught.value.diagnostics)


def test_read_policy_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(FULL)
    assert policyfile.read_policy(path) == policyfile.parse_policy(FULL.encode())
    path.write_text(HEAD + "spec:\n  deny: [nodes]\n")
    with pytest.raises(
        policyfile.PolicyFileError, match=f"^{re.escape(str(path))}:4:10: unknown rule 'nodes'"
    ):
        policyfile.read_policy(str(path))


def test_a_missing_or_unreadable_file_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(policyfile.PolicyFileError) as caught:
        policyfile.read_policy(missing)
    assert str(caught.value) == (
        f"{missing}:1:1: cannot read the policy file: No such file or directory; check the path "
        "given to --policy"
    )
    with pytest.raises(
        policyfile.PolicyFileError, match="cannot read the policy file: Is a directory"
    ):
        policyfile.read_policy(tmp_path)


def test_an_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(HEAD + "# " + "x" * 300_000 + "\n")
    with pytest.raises(policyfile.PolicyFileError) as caught:
        policyfile.read_policy(path)
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.line, diagnostic.column) == (1, 1)
    assert "262144" in diagnostic.message
