"""The post-render policy: each default rule against the shapes it denies and the near misses
it must let through, opt-in rules, per-tenant overrides, malformed input, messages and order,
and every device of fleet-repo-example under the default policy."""

# ruff: noqa: E501 (the tables keep one case per line)
from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rciots.controller import desired, loader, policy, snapshots, yamlsafe

REPO = Path(__file__).resolve().parent.parent
RBAC = "rbac.authorization.k8s.io/v1"
SA = [{"kind": "ServiceAccount", "name": "app", "namespace": "apps"}]
OPT_IN_IDS = frozenset({"privileged-container", "host-namespaces", "host-path-volume"})
STRICT = policy.Policy(deny=OPT_IN_IDS | {"priority-class"})

Found = tuple[str, str, str, str | None, str]  # rule, kind, name, namespace, message
Resource = dict[str, Any]


def obj(api: str, kind: str, name: str, namespace: str | None = None, **fields: Any) -> Resource:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": api, "kind": kind, "metadata": metadata, **fields}


def binding(
    kind: str,
    role_kind: str,
    role: str,
    namespace: str | None = None,
    subjects: list[dict[str, Any]] | None = None,
    api: str = RBAC,
) -> Resource:
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role}
    return obj(api, kind, "grant", namespace, roleRef=ref, subjects=subjects or SA)


def role(kind: str, *rules: dict[str, Any], namespace: str | None = None, **extra: Any) -> Resource:
    return obj(RBAC, kind, "r", namespace, rules=list(rules), **extra)


def grant(verbs: list[str], resources: list[str], groups: tuple[str, ...] = ("",)) -> Resource:
    return {"apiGroups": list(groups), "resources": resources, "verbs": verbs}


def pod_spec(**fields: Any) -> dict[str, Any]:
    return {"containers": [{"name": "app", "image": "example.org/app:1"}], **fields}


def workload(kind: str = "Deployment", api: str = "apps/v1", **spec: Any) -> Resource:
    return obj(api, kind, "w", "apps", spec={"template": {"spec": pod_spec(**spec)}})


def found(checked: list[policy.Violation]) -> list[Found]:
    return [(v.rule, v.kind, v.name, v.namespace, v.message) for v in checked]


# -- denied by the default policy ------------------------------------------------------------

DENIED: list[Any] = [
    pytest.param(
        binding("ClusterRoleBinding", "ClusterRole", "cluster-admin"),
        [("cluster-admin-binding", "ClusterRoleBinding", "grant", None, "binds cluster role 'cluster-admin'")],
        id="clusterrolebinding-cluster-admin",
    ),
    pytest.param(
        binding("RoleBinding", "ClusterRole", "cluster-admin", "apps"),
        [("cluster-admin-binding", "RoleBinding", "grant", "apps", "binds cluster role 'cluster-admin'")],
        id="rolebinding-cluster-admin",
    ),
    pytest.param(
        binding("ClusterRoleBinding", "ClusterRole", "sudoer", api="rbac.authorization.k8s.io/v1beta1"),
        [("cluster-admin-binding", "ClusterRoleBinding", "grant", None, "binds cluster role 'sudoer'")],
        id="openshift-sudoer-v1beta1",
    ),
    pytest.param(
        binding("ClusterRoleBinding", "ClusterRole", "admin"),
        [("cluster-wide-admin-binding", "ClusterRoleBinding", "grant", None, "binds cluster role 'admin' in every namespace")],
        id="clusterrolebinding-admin",
    ),
    pytest.param(
        binding("ClusterRoleBinding", "ClusterRole", "edit"),
        [("cluster-wide-admin-binding", "ClusterRoleBinding", "grant", None, "binds cluster role 'edit' in every namespace")],
        id="clusterrolebinding-edit",
    ),
    pytest.param(
        binding("ClusterRoleBinding", "ClusterRole", "system:kube-controller-manager"),
        [("system-role-binding", "ClusterRoleBinding", "grant", None, "binds cluster role 'system:kube-controller-manager'")],
        id="system-clusterrole",
    ),
    pytest.param(
        binding("RoleBinding", "Role", "system:controller:bootstrap-signer", "kube-system"),
        [("system-role-binding", "RoleBinding", "grant", "kube-system", "binds role 'system:controller:bootstrap-signer'")],
        id="system-role-in-kube-system",
    ),
    pytest.param(
        binding("RoleBinding", "ClusterRole", "view", "apps", [{"kind": "Group", "name": "system:unauthenticated"}]),
        [("anonymous-access", "RoleBinding", "grant", "apps", "grants its role to group 'system:unauthenticated'")],
        id="unauthenticated-group",
    ),
    pytest.param(
        binding("ClusterRoleBinding", "ClusterRole", "view", None, [*SA, {"kind": "User", "name": "system:anonymous"}, {"kind": "Group", "name": "system:unauthenticated"}]),
        [("anonymous-access", "ClusterRoleBinding", "grant", None, "grants its role to user 'system:anonymous'; grants its role to group 'system:unauthenticated'")],
        id="anonymous-user-and-group",
    ),
    pytest.param(
        role("ClusterRole", grant(["*"], ["*"], ("*",))),
        [("wildcard-role", "ClusterRole", "r", None, "rules[0] grants every verb on every resource")],
        id="clusterrole-wildcard",
    ),
    pytest.param(
        role("Role", grant(["get"], ["pods"]), grant(["*"], ["*"]), namespace="apps"),
        [("wildcard-role", "Role", "r", "apps", "rules[1] grants every verb on every resource")],
        id="role-wildcard-core-group",
    ),
    pytest.param(
        role("ClusterRole", grant(["escalate", "bind", "get"], ["clusterroles"], ("rbac.authorization.k8s.io",))),
        [("rbac-escalation-verbs", "ClusterRole", "r", None, "rules[0] grants 'bind', 'escalate'")],
        id="bind-escalate",
    ),
    pytest.param(
        role("Role", grant(["impersonate"], ["serviceaccounts"]), namespace="apps"),
        [("rbac-escalation-verbs", "Role", "r", "apps", "rules[0] grants 'impersonate'")],
        id="impersonate",
    ),
    pytest.param(
        role("ClusterRole", grant(["*"], ["pods", "serviceaccounts/token", "users"])),
        [("rbac-escalation-verbs", "ClusterRole", "r", None, "rules[0] grants every verb on 'serviceaccounts/token', 'users', which includes bind, escalate or impersonate")],
        id="wildcard-verbs-on-identities",
    ),
    pytest.param(
        role("ClusterRole", grant(["*"], ["*"]), grant(["bind"], ["roles"])),
        [
            ("rbac-escalation-verbs", "ClusterRole", "r", None, "rules[1] grants 'bind'"),
            ("wildcard-role", "ClusterRole", "r", None, "rules[0] grants every verb on every resource"),
        ],
        id="two-rules-one-role",
    ),
    pytest.param(
        role("ClusterRole", aggregationRule={"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}),
        [("role-aggregation", "ClusterRole", "r", None, "collects the rules of every cluster role its aggregationRule selects by label")],
        id="aggregation-rule",
    ),
    *[
        pytest.param(
            obj(f"admissionregistration.k8s.io/{version}", kind, "hook"),
            [("admission-control", kind, "hook", None, "controls admission of every request to the device's API server")],
            id=kind,
        )
        for version, kind in [
            ("v1", "MutatingWebhookConfiguration"),
            ("v1", "ValidatingWebhookConfiguration"),
            ("v1", "ValidatingAdmissionPolicy"),
            ("v1", "ValidatingAdmissionPolicyBinding"),
            ("v1alpha1", "MutatingAdmissionPolicy"),
            ("v1alpha1", "MutatingAdmissionPolicyBinding"),
        ]
    ],
    pytest.param(
        obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "widgets.example.com"),
        [("custom-resource-definition", "CustomResourceDefinition", "widgets.example.com", None, "defines a cluster-wide API type")],
        id="crd",
    ),
    pytest.param(
        obj("apiregistration.k8s.io/v1", "APIService", "v1beta1.metrics.k8s.io"),
        [("api-service", "APIService", "v1beta1.metrics.k8s.io", None, "hands an API group of the device's API server to a service")],
        id="apiservice",
    ),
    pytest.param(
        obj("security.openshift.io/v1", "SecurityContextConstraints", "anything-goes"),
        [("security-context-constraints", "SecurityContextConstraints", "anything-goes", None, "defines what pods may do on the host (OpenShift SCC)")],
        id="scc",
    ),
    pytest.param(
        obj("v1", "Node", "edge-1", spec={"taints": [{"key": "x", "effect": "NoExecute"}]}),
        [("node", "Node", "edge-1", None, "changes the device's node object (labels, taints, addresses)")],
        id="node",
    ),
    *[
        pytest.param(
            obj("machineconfiguration.openshift.io/v1", kind, "99-worker"),
            [("machine-config", kind, "99-worker", None, "configures the host's operating system, kubelet or container runtime")],
            id=kind,
        )
        for kind in ["MachineConfig", "MachineConfigPool", "KubeletConfig", "ContainerRuntimeConfig"]
    ],
    pytest.param(
        obj("config.openshift.io/v1", "OAuth", "cluster"),
        [("openshift-cluster-config", "OAuth", "cluster", None, "changes cluster-wide OpenShift configuration")],
        id="openshift-config",
    ),
    pytest.param(
        obj("operator.openshift.io/v1", "IngressController", "default", "openshift-ingress-operator"),
        [("openshift-cluster-config", "IngressController", "default", "openshift-ingress-operator", "changes cluster-wide OpenShift configuration")],
        id="openshift-operator-config",
    ),
    pytest.param(
        {**binding("clusterrolebinding", "clusterrole", "cluster-admin"), "apiVersion": "RBAC.Authorization.k8s.io/v1"},
        [("cluster-admin-binding", "clusterrolebinding", "grant", None, "binds cluster role 'cluster-admin'")],
        id="case-folded-group-and-kind",
    ),
    pytest.param(
        obj("v1", "List", "", items=[obj("v1", "ConfigMap", "c"), obj("v1", "List", "", items=[obj("v1", "Node", "n")])]),
        [("node", "Node", "n", None, "changes the device's node object (labels, taints, addresses)")],
        id="items-of-nested-lists",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("resource", "expected"), DENIED)
def test_default_policy_denies(resource: Resource, expected: list[Found]) -> None:
    assert found(policy.check(policy.DEFAULT_POLICY, "acme", [resource])) == expected


# -- near misses the default policy lets through ---------------------------------------------

PASSES: list[Any] = [
    pytest.param(binding("RoleBinding", "Role", "cluster-admin", "apps"), id="rolebinding-to-own-role-named-cluster-admin"),
    pytest.param(binding("RoleBinding", "ClusterRole", "admin", "apps"), id="rolebinding-admin"),
    pytest.param(binding("RoleBinding", "ClusterRole", "edit", "apps"), id="rolebinding-edit"),
    pytest.param(binding("ClusterRoleBinding", "ClusterRole", "view"), id="clusterrolebinding-view"),
    pytest.param(binding("ClusterRoleBinding", "ClusterRole", "cluster-admins"), id="similar-name"),
    pytest.param(binding("ClusterRoleBinding", "ClusterRole", "Cluster-Admin"), id="role-names-are-case-sensitive"),
    pytest.param(binding("ClusterRoleBinding", "Role", "admin"), id="clusterrolebinding-role-ref-kind-role"),
    pytest.param(binding("RoleBinding", "ClusterRole", "system:image-puller", "apps"), id="system-image-puller"),
    pytest.param(binding("RoleBinding", "ClusterRole", "system:openshift:scc:privileged", "apps"), id="scc-use"),
    pytest.param(binding("RoleBinding", "ClusterRole", "view", "apps", [{"kind": "Group", "name": "system:authenticated"}]), id="authenticated-group"),
    pytest.param(binding("ClusterRoleBinding", "ClusterRole", "cluster-admin", api="example.com/v1"), id="binding-of-another-group"),
    pytest.param(role("ClusterRole", grant(["get", "list", "watch"], ["*"], ("*",))), id="clusterrole-read-everything"),
    pytest.param(role("ClusterRole", grant(["*"], ["configmaps", "deployments"], ("", "apps"))), id="clusterrole-wildcard-verbs-listed-resources"),
    pytest.param(role("Role", grant(["get", "list"], ["roles", "rolebindings"]), namespace="apps"), id="role-reads-rbac"),
    pytest.param(role("ClusterRole", grant(["get"], ["pods"]), metadata={"name": "r", "labels": {"rbac.authorization.k8s.io/aggregate-to-admin": "true"}}), id="aggregated-into-admin"),
    pytest.param(obj("example.com/v1", "Node", "n"), id="node-of-another-group"),
    pytest.param(obj("example.com/v1", "CustomResourceDefinition", "c"), id="crd-of-another-group"),
    pytest.param(obj("v1", "Namespace", "apps"), id="namespace"),
    pytest.param(obj("v1", "Secret", "s", "apps", stringData={"password": "p"}), id="secret"),
    pytest.param(workload(hostNetwork=True, containers=[{"name": "a", "securityContext": {"privileged": True}}], volumes=[{"name": "d", "hostPath": {"path": "/dev"}}]), id="host-access-is-opt-in"),
    pytest.param(obj("scheduling.k8s.io/v1", "PriorityClass", "high", value=1000), id="priority-class-is-opt-in"),
]  # fmt: skip


@pytest.mark.parametrize("resource", PASSES)
def test_default_policy_lets_through(resource: Resource) -> None:
    assert policy.check(policy.DEFAULT_POLICY, "acme", [resource]) == []


# -- opt-in rules ----------------------------------------------------------------------------

OPT_IN: list[Any] = [
    pytest.param(
        workload(containers=[{"name": "app", "securityContext": {"privileged": True}}], initContainers=[{"name": "init", "securityContext": {"capabilities": {"add": ["NET_ADMIN", "SYS_ADMIN", "cap_sys_module"]}}}]),
        [("privileged-container", "Deployment", "w", "apps", "container 'init' adds capabilities 'SYS_ADMIN', 'cap_sys_module'; container 'app' is privileged")],
        id="privileged-and-capabilities",
    ),
    pytest.param(
        obj("v1", "Pod", "p", "apps", spec=pod_spec(hostNetwork=True, hostPID=True, hostIPC=False)),
        [("host-namespaces", "Pod", "p", "apps", "shares the host's namespaces (hostNetwork, hostPID)")],
        id="pod-host-namespaces",
    ),
    pytest.param(
        workload("DaemonSet", volumes=[{"name": "cfg", "configMap": {"name": "c"}}, {"name": "dev", "hostPath": {"path": "/dev"}}]),
        [("host-path-volume", "DaemonSet", "w", "apps", "mounts host path '/dev' (volume 'dev')")],
        id="daemonset-host-path",
    ),
    pytest.param(
        obj("batch/v1", "CronJob", "c", "apps", spec={"jobTemplate": {"spec": {"template": {"spec": pod_spec(volumes=[{"name": "root", "hostPath": {"path": "/"}}])}}}}),
        [("host-path-volume", "CronJob", "c", "apps", "mounts host path '/' (volume 'root')")],
        id="cronjob-host-path",
    ),
    pytest.param(
        obj("v1", "PersistentVolume", "pv", spec={"hostPath": {"path": "/var"}, "local": {"path": "/srv"}}),
        [("host-path-volume", "PersistentVolume", "pv", None, "makes host path '/var' a volume (hostPath); makes host path '/srv' a volume (local)")],
        id="persistent-volume",
    ),
    pytest.param(
        obj("scheduling.k8s.io/v1", "PriorityClass", "top", value=1000000000, globalDefault=True),
        [("priority-class", "PriorityClass", "top", None, "defines scheduling priority 1000000000 for every pod without one (globalDefault)")],
        id="priority-class",
    ),
    pytest.param(
        workload("DeploymentConfig", "apps.openshift.io/v1", hostNetwork=True, containers=[{"name": "a", "securityContext": {"privileged": True}}], volumes=[{"name": "v", "hostPath": {"path": "/run"}}]),
        [
            ("host-namespaces", "DeploymentConfig", "w", "apps", "shares the host's namespaces (hostNetwork)"),
            ("host-path-volume", "DeploymentConfig", "w", "apps", "mounts host path '/run' (volume 'v')"),
            ("privileged-container", "DeploymentConfig", "w", "apps", "container 'a' is privileged"),
        ],
        id="three-rules-one-workload",
    ),
    pytest.param(workload(containers=[{"name": "a", "securityContext": {"privileged": False, "capabilities": {"add": ["NET_BIND_SERVICE"]}}}]), [], id="unprivileged"),
    pytest.param(workload(hostNetwork=False, volumes=[{"name": "t", "emptyDir": {}}]), [], id="no-host-access"),
    pytest.param(obj("v1", "PersistentVolume", "pv", spec={"nfs": {"server": "s", "path": "/x"}}), [], id="nfs-volume"),
    pytest.param(workload(api="example.com/v1", hostPID=True), [], id="deployment-of-another-group"),
    pytest.param(obj("v1", "Pod", "p", spec={"template": {"spec": pod_spec(hostPID=True)}}), [], id="pod-has-no-template"),
]  # fmt: skip


@pytest.mark.parametrize(("resource", "expected"), OPT_IN)
def test_opt_in_rules(resource: Resource, expected: list[Found]) -> None:
    assert found(policy.check(STRICT, "acme", [resource])) == expected
    assert policy.check(policy.DEFAULT_POLICY, "acme", [resource]) == []


def test_every_built_in_rule_is_exercised_by_the_tables() -> None:
    exercised = {f[0] for case in DENIED + OPT_IN for f in case.values[1]}
    assert exercised == {rule.id for rule in policy.BUILTIN_RULES}


# -- which rules apply to whom ---------------------------------------------------------------

DEFAULT_IDS = [
    "cluster-admin-binding",
    "cluster-wide-admin-binding",
    "system-role-binding",
    "anonymous-access",
    "wildcard-role",
    "rbac-escalation-verbs",
    "role-aggregation",
    "admission-control",
    "custom-resource-definition",
    "api-service",
    "security-context-constraints",
    "node",
    "machine-config",
    "openshift-cluster-config",
]
CRB = binding("ClusterRoleBinding", "ClusterRole", "cluster-admin")
CRD = obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "widgets.example.com")
PRIVILEGED = workload(containers=[{"name": "a", "securityContext": {"privileged": True}}])


def test_default_and_opt_in_rules() -> None:
    assert [rule.id for rule in policy.DEFAULT_POLICY.denied("acme")] == DEFAULT_IDS
    assert [rule.id for rule in policy.BUILTIN_RULES if not rule.default] == [
        "privileged-container",
        "host-namespaces",
        "host-path-volume",
        "priority-class",
    ]


def rules_hit(chosen: policy.Policy, tenant: str) -> list[str]:
    return [v.rule for v in policy.check(chosen, tenant, [CRB, CRD, PRIVILEGED])]


@pytest.mark.parametrize(
    ("chosen", "acme", "globex"),
    [
        pytest.param(
            policy.DEFAULT_POLICY,
            ["cluster-admin-binding", "custom-resource-definition"],
            ["cluster-admin-binding", "custom-resource-definition"],
            id="default",
        ),
        pytest.param(
            policy.Policy(tenants={"acme": policy.Override(allow=frozenset({"cluster-admin-binding"}))}),
            ["custom-resource-definition"],
            ["cluster-admin-binding", "custom-resource-definition"],
            id="tenant-allowed-a-default-rule",
        ),
        pytest.param(
            policy.Policy(tenants={"acme": policy.Override(deny=frozenset({"privileged-container"}))}),
            ["cluster-admin-binding", "custom-resource-definition", "privileged-container"],
            ["cluster-admin-binding", "custom-resource-definition"],
            id="tenant-given-an-extra-deny",
        ),
        pytest.param(
            policy.Policy(
                allow=frozenset({"custom-resource-definition"}),
                tenants={"globex": policy.Override(deny=frozenset({"custom-resource-definition"}))},
            ),
            ["cluster-admin-binding"],
            ["cluster-admin-binding", "custom-resource-definition"],
            id="allowed-for-all-denied-for-one",
        ),
        pytest.param(
            policy.Policy(
                deny=frozenset({"privileged-container"}),
                tenants={"acme": policy.Override(allow=frozenset({"privileged-container"}))},
            ),
            ["cluster-admin-binding", "custom-resource-definition"],
            ["cluster-admin-binding", "custom-resource-definition", "privileged-container"],
            id="denied-for-all-allowed-for-one",
        ),
        pytest.param(
            policy.Policy(allow=frozenset(DEFAULT_IDS)),
            [],
            [],
            id="nothing-denied",
        ),
    ],
)  # fmt: skip
def test_rules_per_tenant(chosen: policy.Policy, acme: list[str], globex: list[str]) -> None:
    assert rules_hit(chosen, "acme") == acme
    assert rules_hit(chosen, "globex") == globex


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"deny": frozenset({"nodes"})}, "the policy names unknown rules: nodes"),
        (
            {"tenants": {"acme": policy.Override(allow=frozenset({"x", "crd"}))}},
            "tenant 'acme' names unknown rules: crd, x",
        ),
        (
            {"allow": frozenset({"node"}), "deny": frozenset({"node"})},
            "the policy both allows and denies: node",
        ),
        (
            {"rules": (policy.kind_rule("node", "r", [("", "Node")]),)},
            "rule id 'node' is already taken",
        ),
    ],
)
def test_policy_refuses_inconsistent_settings(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        policy.Policy(**arguments)


# -- the operator's own rules ----------------------------------------------------------------

STORAGE = policy.kind_rule(
    "no-storage-classes", "storage is the operator's", [("storage.k8s.io", "StorageClass")]
)
OLM = policy.kind_rule(
    "no-olm", "operators are installed by the operator", [("operators.coreos.com", None)]
)
SECRETS = policy.kind_rule("no-secrets", "secrets come from the vault", [("", "Secret")])  # fmt: skip


def test_operator_rules_apply_only_where_denied() -> None:
    resources = [
        obj("storage.k8s.io/v1", "StorageClass", "fast"),
        obj("operators.coreos.com/v1alpha1", "CatalogSource", "mine", "olm"),
        obj("operators.coreos.com/v1alpha1", "Subscription", "sub", "olm"),
        obj("example.com/v1", "StorageClass", "other-group"),
    ]
    defined = policy.Policy(rules=(STORAGE, OLM))
    assert policy.check(defined, "acme", resources) == []
    denied = policy.Policy(
        rules=(STORAGE, OLM), tenants={"acme": policy.Override(deny=frozenset({"no-olm"}))}
    )
    assert found(policy.check(denied, "acme", resources)) == [
        ("no-olm", "CatalogSource", "mine", "olm", "kind 'CatalogSource' of API group 'operators.coreos.com'"),
        ("no-olm", "Subscription", "sub", "olm", "kind 'Subscription' of API group 'operators.coreos.com'"),
    ]  # fmt: skip
    everyone = policy.Policy(rules=(STORAGE, OLM), deny=frozenset({"no-storage-classes"}))
    assert [str(v) for v in policy.check(everyone, "globex", resources)] == [
        "StorageClass/fast: kind 'StorageClass' of API group 'storage.k8s.io' (rule "
        "no-storage-classes): storage is the operator's; ask the controller operator to allow "
        "the rule for this tenant"
    ]


def test_messages_never_show_secret_data() -> None:
    secret = obj(
        "v1",
        "Secret",
        "db",
        "apps",
        data={"password": "aHVudGVyMg=="},
        stringData={"token": "hunter2"},
        metadata={"name": "db", "namespace": "apps", "annotations": {"a": "hunter2"}},
    )
    every = policy.Policy(
        rules=(SECRETS,), deny=frozenset({"no-secrets"} | {r.id for r in policy.BUILTIN_RULES})
    )
    (violation,) = policy.check(every, "acme", [secret])
    assert str(violation) == (
        "Secret/db (namespace apps): kind 'Secret' of API group 'core' (rule no-secrets): "
        "secrets come from the vault; ask the controller operator to allow the rule for this "
        "tenant"
    )


# -- messages and order ----------------------------------------------------------------------


def test_one_line_per_violation() -> None:
    resource = {**CRB, "metadata": {"name": "fleet-admins"}}
    (violation,) = policy.check(policy.DEFAULT_POLICY, "acme", [resource])
    assert str(violation) == (
        "ClusterRoleBinding/fleet-admins: binds cluster role 'cluster-admin' (rule "
        "cluster-admin-binding): tenants may not grant cluster-wide power; ask the controller "
        "operator to allow the rule for this tenant (see docs/policy.md#cluster-admin-binding)"
    )
    namespaced = binding("RoleBinding", "ClusterRole", "system:node", "apps")
    (violation,) = policy.check(policy.DEFAULT_POLICY, "acme", [namespaced])
    assert str(violation) == (
        "RoleBinding/grant (namespace apps): binds cluster role 'system:node' (rule "
        "system-role-binding): roles named system:* belong to the platform's own components; "
        "ask the controller operator to allow the rule for this tenant "
        "(see docs/policy.md#system-role-binding)"
    )


def test_long_values_are_clipped_in_messages() -> None:
    resource = binding("ClusterRoleBinding", "ClusterRole", "system:" + "x" * 300)
    (violation,) = policy.check(policy.DEFAULT_POLICY, "acme", [resource])
    assert violation.message == "binds cluster role 'system:" + "x" * 70 + "...'"


def test_violations_are_sorted_whatever_the_input_order() -> None:
    resources = [
        {**CRB, "metadata": {"name": "b"}},
        {**CRB, "metadata": {"name": "a"}},
        binding("RoleBinding", "ClusterRole", "cluster-admin", "zeta"),
        binding("RoleBinding", "ClusterRole", "cluster-admin", "alpha"),
        CRD,
        obj("v1", "Node", "n"),
    ]
    expected = [
        ("ClusterRoleBinding", "a", None),
        ("ClusterRoleBinding", "b", None),
        ("CustomResourceDefinition", "widgets.example.com", None),
        ("Node", "n", None),
        ("RoleBinding", "grant", "alpha"),
        ("RoleBinding", "grant", "zeta"),
    ]
    for order in itertools.permutations(resources):
        checked = policy.check(policy.DEFAULT_POLICY, "acme", order)
        assert [(v.kind, v.name, v.namespace) for v in checked] == expected


def test_a_resource_repeated_is_reported_once() -> None:
    assert len(policy.check(policy.DEFAULT_POLICY, "acme", [CRB, copy.deepcopy(CRB)])) == 1


# -- malformed input -------------------------------------------------------------------------

MALFORMED: list[Any] = [
    pytest.param({**CRB, "roleRef": None}, id="role-ref-null"),
    pytest.param({**CRB, "roleRef": ["cluster-admin"]}, id="role-ref-list"),
    pytest.param({**CRB, "roleRef": {"kind": "ClusterRole", "name": 7}}, id="role-name-number"),
    pytest.param({**CRB, "roleRef": {"name": "cluster-admin"}}, id="role-ref-without-kind"),
    pytest.param({**CRB, "apiVersion": None}, id="no-api-version"),
    pytest.param({**CRB, "kind": ""}, id="empty-kind"),
    pytest.param({**CRB, "kind": ["ClusterRoleBinding"]}, id="kind-list"),
    pytest.param(role("ClusterRole", "*"), id="rule-a-string"),  # type: ignore[arg-type]
    pytest.param({**role("ClusterRole"), "rules": "*"}, id="rules-a-string"),
    pytest.param(role("ClusterRole", {"verbs": "*", "resources": "*"}), id="verbs-a-string"),
    pytest.param(role("ClusterRole", {"verbs": [None, 1, {}], "resources": [["*"]]}), id="odd-items"),
    pytest.param({**PRIVILEGED, "spec": {"template": "x"}}, id="template-a-string"),
    pytest.param(workload(containers="app", volumes={"hostPath": "/"}), id="lists-not-lists"),
    pytest.param(workload(containers=[None, "a", {"securityContext": "privileged"}]), id="odd-containers"),
    pytest.param(workload(volumes=[{"name": "v", "hostPath": None}]), id="host-path-null"),
    pytest.param(obj("v1", "List", "", items="x"), id="list-items-a-string"),
]  # fmt: skip


@pytest.mark.parametrize("resource", MALFORMED)
def test_malformed_resources_are_not_matched(resource: Resource) -> None:
    assert policy.check(STRICT, "acme", [resource]) == []


def test_what_is_no_resource_is_skipped() -> None:
    junk: list[Any] = [None, "ClusterRoleBinding", 3, ["x"], {}]
    assert policy.check(STRICT, "acme", junk) == []
    nameless = {key: value for key, value in CRB.items() if key != "metadata"}
    assert found(policy.check(STRICT, "acme", [nameless])) == [
        (
            "cluster-admin-binding",
            "ClusterRoleBinding",
            "(no name)",
            None,
            "binds cluster role 'cluster-admin'",
        )
    ]


def variants(value: Any, depth: int = 0) -> Iterator[tuple[int, Any]]:
    """``value`` with each part in turn replaced by each kind of wrong value, with the depth
    of the part replaced."""
    for junk in (None, True, 0, "", "x", [], {}, [None], {"": None}):
        yield depth, junk
    if isinstance(value, dict):
        for key in value:
            for deep, changed in variants(value[key], depth + 1):
                yield deep, {**value, key: changed}
    elif isinstance(value, list):
        for index, item in enumerate(value):
            for deep, changed in variants(item, depth + 1):
                yield deep, [*value[:index], changed, *value[index + 1 :]]


def test_no_shape_of_input_raises() -> None:
    every = policy.Policy(deny=frozenset({r.id for r in policy.BUILTIN_RULES}))
    deepest = 0
    for case in DENIED + OPT_IN:
        for depth, resource in variants(case.values[0]):
            assert isinstance(policy.check(every, "acme", [resource]), list)
            deepest = max(deepest, depth)
    # down to spec.jobTemplate.spec.template.spec.volumes[0].hostPath.path of the CronJob
    assert deepest == 9


# -- docs and the example repo ---------------------------------------------------------------


def test_every_rule_is_documented() -> None:
    text = (REPO / "docs" / "policy.md").read_text(encoding="utf-8")
    for rule in policy.BUILTIN_RULES:
        assert rule.docs == f"docs/policy.md#{rule.id}"
        assert f"\n### {rule.id}\n" in text
        default = "yes" if rule.default else "opt-in"
        assert f"| [`{rule.id}`](#{rule.id}) | {default} |" in text


def test_every_device_of_the_example_repo_passes_the_default_policy() -> None:
    snapshot, problems = snapshots.read_worktree(REPO / "fleet-repo-example")
    assert problems == []
    loaded = loader.load(snapshot)
    assert loaded.ok
    renders = desired.render_devices(snapshot, loaded.model)
    assert len(renders) == 8
    kinds = set()
    for (tenant, _), rendered in renders.items():
        assert rendered.ok, rendered.error
        nodes = yamlsafe.parse(rendered.yaml.encode(), dialect=yamlsafe.MANIFEST)
        resources = [r for r in map(yamlsafe.to_data, nodes) if isinstance(r, dict)]
        assert len(resources) == len(nodes) > 0
        kinds |= {r["kind"] for r in resources}
        assert policy.check(policy.DEFAULT_POLICY, tenant, resources) == []
    assert {"Deployment", "Service", "ConfigMap", "Secret"} <= kinds
