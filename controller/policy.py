"""Post-render policy: what a tenant's rendered manifests may contain on its own devices.

Position in the flow: snapshot -> fleet model -> render -> **policy** -> desired state. After a
device's manifests are rendered (controller reconcile, ``rciots validate``, ``rciots diff``),
``check`` looks at each resource and returns the violations of the rules denied for the
device's tenant; any violation makes that device's render fail, with one line per violation.

Pure: plain data in (resources as rendered: dicts with apiVersion, kind, metadata, ...), a list
of ``Violation`` out. The policy is the controller operator's, never the tenants': it is read
from ``--policy FILE`` (``policyfile``), or ``DEFAULT_POLICY`` applies.

A rule has a stable id, a reason and a section of docs/policy.md. Built-in rules are either
denied by default (``Rule.default``: what grants cluster-wide or host-level power over the
device's platform) or available to deny (pod-level host access, which edge workloads often
need). The operator's file may add rules that deny kinds by API group and kind. Resources are
matched by API group and kind, never by kind alone; a malformed resource is not matched (the
device's API server or podman refuses it anyway), and no shape of input raises. Messages name
kinds, names, roles, verbs and paths, never the contents of a Secret.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BUILTIN_RULES",
    "DEFAULT_POLICY",
    "DOCS",
    "Override",
    "Policy",
    "Rule",
    "Violation",
    "check",
    "kind_rule",
]

log = logging.getLogger(__name__)

DOCS = "docs/policy.md"
_ASK = "ask the controller operator to allow the rule for this tenant"
_MAX_SHOWN = 80  # characters of a quoted value in a message; names come from tenants' files

GroupKind = tuple[str, str]  # (API group, kind), lowercase; kind "*" is every kind of the group
Finder = Callable[[Mapping[str, Any]], list[str]]  # what in one resource breaks a rule


@dataclass(frozen=True)
class Rule:
    """One thing a tenant's manifests may be denied.

    ``kinds`` are the (API group, kind) pairs the rule looks at, lowercase (``""`` is the core
    group; kind ``"*"`` is every kind of a group). ``find`` returns what in one such resource
    breaks the rule, as message parts; an empty list is no violation.
    """

    id: str
    reason: str
    kinds: frozenset[GroupKind]
    find: Finder = field(compare=False, repr=False)
    default: bool = False  # denied unless the operator allows it
    docs: str | None = None  # where the rule is explained, for built-in rules


@dataclass(frozen=True)
class Violation:
    rule: str
    kind: str
    name: str
    namespace: str | None
    message: str  # what the resource does, e.g. "binds cluster role 'cluster-admin'"
    reason: str = ""  # why the rule exists
    docs: str | None = None

    def __str__(self) -> str:
        where = f" (namespace {self.namespace})" if self.namespace else ""
        text = f"{self.kind}/{self.name}{where}: {self.message} (rule {self.rule})"
        text += f": {self.reason}; {_ASK}" if self.reason else f"; {_ASK}"
        return text + (f" (see {self.docs})" if self.docs else "")


# -- reading resources without trusting their shape -------------------------------------------


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _strings(value: object) -> list[str]:
    return [item for item in _list(value) if isinstance(item, str)]


def _at(value: object, *path: str) -> object:
    for key in path:
        value = _map(value).get(key)
    return value


def _quote(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return repr(text)


def _quoted(values: Iterable[object]) -> str:
    return ", ".join(_quote(value) for value in values)


def _group_kind(resource: Mapping[str, Any]) -> GroupKind | None:
    api_version, kind = resource.get("apiVersion"), resource.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not kind:
        return None
    # "v1" is the core group; "rbac.authorization.k8s.io/v1" names its group. Case is folded
    # so that an oddly cased kind cannot slip past a rule (the API server refuses it anyway).
    return api_version.rpartition("/")[0].lower(), kind.lower()


def _kinds(group: str, *kinds: str) -> frozenset[GroupKind]:
    return frozenset((group.lower(), kind.lower()) for kind in kinds)


# -- RBAC ------------------------------------------------------------------------------------

_RBAC = "rbac.authorization.k8s.io"
_BINDINGS = _kinds(_RBAC, "ClusterRoleBinding", "RoleBinding")
_ROLES = _kinds(_RBAC, "ClusterRole", "Role")
# cluster-admin, and OpenShift's sudoer (impersonates system:admin, which is cluster-admin)
_ADMIN_ROLES = ("cluster-admin", "sudoer")
# namespaced write access, including Secrets: in every namespace that reaches the tokens of
# the platform's own service accounts
_NAMESPACE_ADMIN_ROLES = ("admin", "edit")
# system: roles that workloads are commonly given on OpenShift and that hold no cluster-wide
# power of their own (SCC use is pod-level host access; see the opt-in rules)
_SYSTEM_ROLES_ALLOWED = (
    "system:image-puller",
    "system:image-pusher",
    "system:image-builder",
    "system:deployer",
)
_SYSTEM_PREFIXES_ALLOWED = ("system:openshift:scc:",)
_ANONYMOUS = {("group", "system:unauthenticated"), ("user", "system:anonymous")}
_ESCALATING_VERBS = ("bind", "escalate", "impersonate")
# what verbs "*" on these resources include: bind and escalate (roles), impersonate (the rest)
_ESCALATING_RESOURCES = ("roles", "clusterroles", "users", "groups", "serviceaccounts", "uids")


def _role_ref(resource: Mapping[str, Any]) -> tuple[str, str] | None:
    ref = _map(resource.get("roleRef"))
    kind, name = ref.get("kind"), ref.get("name")
    if not isinstance(kind, str) or not isinstance(name, str):
        return None
    return kind.lower(), name


def _binds(kind: str) -> str:
    return "binds cluster role" if kind == "clusterrole" else "binds role"


def _find_admin_binding(resource: Mapping[str, Any]) -> list[str]:
    ref = _role_ref(resource)
    if ref is None or ref[0] != "clusterrole" or ref[1] not in _ADMIN_ROLES:
        return []
    return [f"binds cluster role {_quote(ref[1])}"]


def _find_cluster_wide_admin(resource: Mapping[str, Any]) -> list[str]:
    ref = _role_ref(resource)
    if ref is None or ref[0] != "clusterrole" or ref[1] not in _NAMESPACE_ADMIN_ROLES:
        return []
    return [f"binds cluster role {_quote(ref[1])} in every namespace"]


def _find_system_binding(resource: Mapping[str, Any]) -> list[str]:
    ref = _role_ref(resource)
    if ref is None or ref[0] not in ("clusterrole", "role"):
        return []
    kind, name = ref
    if not name.startswith("system:") or name in _SYSTEM_ROLES_ALLOWED:
        return []
    if name.startswith(_SYSTEM_PREFIXES_ALLOWED):
        return []
    return [f"{_binds(kind)} {_quote(name)}"]


def _find_anonymous(resource: Mapping[str, Any]) -> list[str]:
    found = []
    for subject in _list(resource.get("subjects")):
        kind, name = _map(subject).get("kind"), _map(subject).get("name")
        if isinstance(kind, str) and isinstance(name, str) and (kind.lower(), name) in _ANONYMOUS:
            found.append(f"grants its role to {kind.lower()} {_quote(name)}")
    return found


def _rules_of(resource: Mapping[str, Any]) -> Iterator[tuple[int, list[str], list[str]]]:
    for index, rule in enumerate(_list(resource.get("rules"))):
        yield index, _strings(_map(rule).get("verbs")), _strings(_map(rule).get("resources"))


def _find_wildcard(resource: Mapping[str, Any]) -> list[str]:
    return [
        f"rules[{index}] grants every verb on every resource"
        for index, verbs, resources in _rules_of(resource)
        if "*" in verbs and "*" in resources
    ]


def _find_escalation(resource: Mapping[str, Any]) -> list[str]:
    found = []
    for index, verbs, resources in _rules_of(resource):
        named = sorted({verb.lower() for verb in verbs} & set(_ESCALATING_VERBS))
        if named:
            found.append(f"rules[{index}] grants {_quoted(named)}")
        elif "*" in verbs and "*" not in resources:  # "*" on "*": the wildcard rule's case
            hit = [r for r in resources if r.split("/")[0].lower() in _ESCALATING_RESOURCES]
            hit += [r for r in resources if r.lower().startswith("userextras")]
            if hit:
                found.append(
                    f"rules[{index}] grants every verb on {_quoted(hit)}, which includes "
                    "bind, escalate or impersonate"
                )
    return found


def _find_aggregation(resource: Mapping[str, Any]) -> list[str]:
    if resource.get("aggregationRule") is None:
        return []
    return ["collects the rules of every cluster role its aggregationRule selects by label"]


# -- kinds that change the platform ------------------------------------------------------------


def _always(message: str) -> Finder:
    def find(resource: Mapping[str, Any]) -> list[str]:
        return [message]

    return find


# -- pods: host access -----------------------------------------------------------------------

_TEMPLATE_SPEC = ("spec", "template", "spec")
_POD_SPECS: dict[GroupKind, tuple[str, ...]] = {
    ("", "pod"): ("spec",),
    ("", "podtemplate"): ("template", "spec"),
    ("", "replicationcontroller"): _TEMPLATE_SPEC,
    ("batch", "job"): _TEMPLATE_SPEC,
    ("batch", "cronjob"): ("spec", "jobTemplate", "spec", "template", "spec"),
    ("apps.openshift.io", "deploymentconfig"): _TEMPLATE_SPEC,
}
# extensions/v1beta1 is long gone from Kubernetes; kept so that an old file is still checked
for _group in ("apps", "extensions"):
    for _kind in ("deployment", "daemonset", "replicaset", "statefulset"):
        _POD_SPECS[_group, _kind] = _TEMPLATE_SPEC
_POD_KINDS = frozenset(_POD_SPECS)
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
# capabilities that each amount to root on the host
_HOST_CAPABILITIES = ("ALL", "SYS_ADMIN", "SYS_MODULE")
_HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")


def _pod_spec(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    found = _group_kind(resource)
    path = _POD_SPECS.get(found) if found else None
    return _map(_at(resource, *path)) if path else {}


def _find_privileged(resource: Mapping[str, Any]) -> list[str]:
    found = []
    spec = _pod_spec(resource)
    for key in _CONTAINER_LISTS:
        for container in _list(spec.get(key)):
            name = _quote(_map(container).get("name"))
            context = _map(_map(container).get("securityContext"))
            if context.get("privileged") is True:
                found.append(f"container {name} is privileged")
            added = _strings(_at(context, "capabilities", "add"))
            host = [c for c in added if c.upper().removeprefix("CAP_") in _HOST_CAPABILITIES]
            if host:
                found.append(f"container {name} adds capabilities {_quoted(host)}")
    return found


def _find_host_namespaces(resource: Mapping[str, Any]) -> list[str]:
    spec = _pod_spec(resource)
    shared = [key for key in _HOST_NAMESPACES if spec.get(key) is True]
    return [f"shares the host's namespaces ({', '.join(shared)})"] if shared else []


def _find_host_path(resource: Mapping[str, Any]) -> list[str]:
    if _group_kind(resource) == ("", "persistentvolume"):
        found = []
        for source in ("hostPath", "local"):
            path = _at(resource, "spec", source, "path")
            if path is not None:
                found.append(f"makes host path {_quote(path)} a volume ({source})")
        return found
    found = []
    for volume in _list(_pod_spec(resource).get("volumes")):
        path = _at(volume, "hostPath", "path")
        if path is not None:
            name = _quote(_map(volume).get("name"))
            found.append(f"mounts host path {_quote(path)} (volume {name})")
    return found


def _find_priority(resource: Mapping[str, Any]) -> list[str]:
    value, default = resource.get("value"), resource.get("globalDefault") is True
    shown = value if isinstance(value, int) and not isinstance(value, bool) else _quote(value)
    text = f"defines scheduling priority {shown}"
    return [text + (" for every pod without one (globalDefault)" if default else "")]


# -- the catalogue ---------------------------------------------------------------------------


def _rule(
    rule_id: str, reason: str, kinds: frozenset[GroupKind], find: Finder, *, default: bool
) -> Rule:
    return Rule(rule_id, reason, kinds, find, default, f"{DOCS}#{rule_id}")


_CLUSTER_POWER = "tenants may not grant cluster-wide power"
_PLATFORM = "tenants may not change the device's platform"

BUILTIN_RULES: tuple[Rule, ...] = (
    _rule("cluster-admin-binding", _CLUSTER_POWER, _BINDINGS, _find_admin_binding, default=True),
    _rule(
        "cluster-wide-admin-binding",
        _CLUSTER_POWER,
        _kinds(_RBAC, "ClusterRoleBinding"),
        _find_cluster_wide_admin,
        default=True,
    ),
    _rule(
        "system-role-binding",
        "roles named system:* belong to the platform's own components",
        _BINDINGS,
        _find_system_binding,
        default=True,
    ),
    _rule(
        "anonymous-access",
        "tenants may not open the device's API to unauthenticated clients",
        _BINDINGS,
        _find_anonymous,
        default=True,
    ),
    _rule("wildcard-role", _CLUSTER_POWER, _ROLES, _find_wildcard, default=True),
    _rule(
        "rbac-escalation-verbs",
        "bind, escalate and impersonate let their holder gain permissions it was not given",
        _ROLES,
        _find_escalation,
        default=True,
    ),
    _rule(
        "role-aggregation",
        _CLUSTER_POWER,
        _kinds(_RBAC, "ClusterRole"),
        _find_aggregation,
        default=True,
    ),
    _rule(
        "admission-control",
        "tenants may not intercept or block requests to the device's API server",
        _kinds(
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
            "MutatingAdmissionPolicy",
            "MutatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ),
        _always("controls admission of every request to the device's API server"),
        default=True,
    ),
    _rule(
        "custom-resource-definition",
        "API types are cluster-wide and may replace the platform's own",
        _kinds("apiextensions.k8s.io", "CustomResourceDefinition"),
        _always("defines a cluster-wide API type"),
        default=True,
    ),
    _rule(
        "api-service",
        "tenants may not serve (and so read the requests of) the device's API groups",
        _kinds("apiregistration.k8s.io", "APIService"),
        _always("hands an API group of the device's API server to a service"),
        default=True,
    ),
    _rule(
        "security-context-constraints",
        "security context constraints decide what every pod may do on the host",
        _kinds("security.openshift.io", "SecurityContextConstraints"),
        _always("defines what pods may do on the host (OpenShift SCC)"),
        default=True,
    ),
    _rule(
        "node",
        _PLATFORM,
        _kinds("", "Node"),
        _always("changes the device's node object (labels, taints, addresses)"),
        default=True,
    ),
    _rule(
        "machine-config",
        _PLATFORM,
        _kinds(
            "machineconfiguration.openshift.io",
            "MachineConfig",
            "MachineConfigPool",
            "KubeletConfig",
            "ContainerRuntimeConfig",
        ),
        _always("configures the host's operating system, kubelet or container runtime"),
        default=True,
    ),
    _rule(
        "openshift-cluster-config",
        _PLATFORM,
        _kinds("config.openshift.io", "*") | _kinds("operator.openshift.io", "*"),
        _always("changes cluster-wide OpenShift configuration"),
        default=True,
    ),
    # opt-in: pod-level host access, which edge workloads often need
    _rule(
        "privileged-container",
        "privileged containers are root on the host",
        _POD_KINDS,
        _find_privileged,
        default=False,
    ),
    _rule(
        "host-namespaces",
        "pods sharing the host's network, process or IPC namespaces see and reach the host",
        _POD_KINDS,
        _find_host_namespaces,
        default=False,
    ),
    _rule(
        "host-path-volume",
        "host paths give pods the host's files",
        _POD_KINDS | _kinds("", "PersistentVolume"),
        _find_host_path,
        default=False,
    ),
    _rule(
        "priority-class",
        "priority classes decide which pods the device evicts first, the platform's included",
        _kinds("scheduling.k8s.io", "PriorityClass"),
        _find_priority,
        default=False,
    ),
)

_BUILTIN = {rule.id: rule for rule in BUILTIN_RULES}


def kind_rule(rule_id: str, reason: str, kinds: Iterable[tuple[str, str | None]]) -> Rule:
    """An operator's rule that denies resources of ``kinds``: (API group, kind) pairs, where
    group ``""`` is the core group and kind ``None`` is every kind of the group."""
    matched = frozenset((group.lower(), (kind or "*").lower()) for group, kind in kinds)

    def find(resource: Mapping[str, Any]) -> list[str]:
        found = _group_kind(resource)
        group = (found[0] if found else "") or "core"
        return [f"kind {_quote(resource.get('kind'))} of API group {_quote(group)}"]

    return Rule(rule_id, reason, matched, find)


# -- the policy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Override:
    """One tenant's changes to the rules denied for every tenant."""

    allow: frozenset[str] = frozenset()  # not denied for this tenant
    deny: frozenset[str] = frozenset()  # denied for this tenant


@dataclass(frozen=True)
class Policy:
    """Which rules are denied for which tenant.

    For every tenant: the default rules, minus ``allow``, plus ``deny``. For a tenant with an
    entry in ``tenants``: that, minus its ``allow``, plus its ``deny``. ``rules`` are the
    operator's own rules (see ``kind_rule``); like opt-in built-in rules, they are denied only
    where a ``deny`` names them. ValueError for an unknown rule id, a rule both allowed and
    denied at one level, or an operator's rule that reuses an id.
    """

    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    tenants: Mapping[str, Override] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    _catalogue: Mapping[str, Rule] = field(init=False, repr=False, compare=False)
    # denied rules by (group, kind), per tenant with an override (None: every other tenant);
    # computed on first use, as a policy checks every render of every device
    _index: dict[str | None, Mapping[GroupKind, tuple[Rule, ...]]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        catalogue = dict(_BUILTIN)
        for rule in self.rules:
            if rule.id in catalogue:
                raise ValueError(f"rule id {rule.id!r} is already taken")
            catalogue[rule.id] = rule
        # read-only views: a policy is shared by every reconcile pass
        object.__setattr__(self, "tenants", types.MappingProxyType(dict(self.tenants)))
        object.__setattr__(self, "_catalogue", types.MappingProxyType(catalogue))
        levels = [("the policy", Override(self.allow, self.deny))]
        levels += [(f"tenant {name!r}", self.tenants[name]) for name in sorted(self.tenants)]
        for where, level in levels:
            unknown = sorted((level.allow | level.deny) - catalogue.keys())
            if unknown:
                raise ValueError(f"{where} names unknown rules: {', '.join(unknown)}")
            both = sorted(level.allow & level.deny)
            if both:
                raise ValueError(f"{where} both allows and denies: {', '.join(both)}")

    @property
    def catalogue(self) -> Mapping[str, Rule]:
        """Every rule this policy knows, built-in first, by id."""
        return self._catalogue

    def denied(self, tenant: str) -> tuple[Rule, ...]:
        """The rules denied for ``tenant``, in catalogue order."""
        ids = {rule.id for rule in BUILTIN_RULES if rule.default}
        ids = (ids - self.allow) | self.deny
        override = self.tenants.get(tenant)
        if override is not None:
            ids = (ids - override.allow) | override.deny
        return tuple(rule for rule in self._catalogue.values() if rule.id in ids)

    def _rules_by_kind(self, tenant: str) -> Mapping[GroupKind, tuple[Rule, ...]]:
        key = tenant if tenant in self.tenants else None
        index = self._index.get(key)
        if index is None:
            lists: dict[GroupKind, list[Rule]] = {}
            for rule in self.denied(tenant):
                for matched in rule.kinds:
                    lists.setdefault(matched, []).append(rule)
            index = self._index[key] = {kinds: tuple(rules) for kinds, rules in lists.items()}
        return index


DEFAULT_POLICY = Policy()


def _each_resource(resources: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Every resource, with the items of ``*List`` kinds taken out as kubectl does. Rendered
    output has no lists (the renderer expands them); this keeps ``check`` safe on any input."""
    pending = list(reversed(resources))
    while pending:
        resource = pending.pop()
        if not isinstance(resource, Mapping):
            continue
        kind = resource.get("kind")
        items = resource.get("items")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
            pending.extend(reversed(items))
            continue
        yield resource


def _identity(resource: Mapping[str, Any]) -> tuple[str, str, str | None]:
    kind = resource.get("kind")
    metadata = _map(resource.get("metadata"))
    name, namespace = metadata.get("name"), metadata.get("namespace")
    return (
        str(kind),
        name if isinstance(name, str) and name else "(no name)",
        namespace if isinstance(namespace, str) and namespace else None,
    )


def check(policy: Policy, tenant: str, resources: Sequence[Mapping[str, Any]]) -> list[Violation]:
    """The violations of the rules denied for ``tenant`` in ``resources`` (one device's
    render), sorted by kind, namespace, name and rule. Empty: the render may be applied."""
    by_kind = policy._rules_by_kind(tenant)
    if not by_kind:
        return []
    found: dict[Violation, None] = {}  # the same object twice is reported once
    for resource in _each_resource(resources):
        group_kind = _group_kind(resource)
        if group_kind is None:
            continue
        rules = by_kind.get(group_kind, ()) + by_kind.get((group_kind[0], "*"), ())
        for rule in rules:
            findings = rule.find(resource)
            if findings:
                kind, name, namespace = _identity(resource)
                message = "; ".join(findings)
                violation = Violation(
                    rule.id, kind, name, namespace, message, rule.reason, rule.docs
                )
                found[violation] = None
    return sorted(found, key=lambda v: (v.kind, v.namespace or "", v.name, v.rule, v.message))
