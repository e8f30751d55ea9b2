"""Resources as the renderer carries them: plain JSON-like data plus what kustomize tracks.

kustomize keeps, beside each object, its earlier ids (so references to an old name can be
rewritten), the prefixes and suffixes applied to it (to pick the right referral among
look-alikes), whether a generator asked for a name hash, and the generator's behavior. Here
those live on the ``Resource`` object rather than in hidden annotations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "Gvk",
    "LinkPath",
    "Origin",
    "ResId",
    "Resource",
    "copy_data",
    "is_cluster_scoped",
    "scalar_text",
]

# buildMetadata: (field, value) pairs of where an object came from or what touched it
Origin = tuple[tuple[str, str], ...]
# a place in an object: the keys and list indexes leading to it
LinkPath = tuple[str | int, ...]


def copy_data(value: Any) -> Any:
    """A deep copy of JSON-like data, several times faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: copy_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_data(v) for v in value]
    return value


def scalar_text(value: Any) -> str:
    """A scalar's text as kustomize writes it: booleans in lower case, null as ""."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


# Kinds the Kubernetes API serves without a namespace (kustomize learns these from its
# built-in OpenAPI document); any other kind, including every custom kind, is namespaced.
_CLUSTER_SCOPED = frozenset(
    {
        "APIService",
        "CertificateSigningRequest",
        "ClusterRole",
        "ClusterRoleBinding",
        "ComponentStatus",
        "CSIDriver",
        "CSINode",
        "CustomResourceDefinition",
        "FlowSchema",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PodSecurityPolicy",
        "PriorityClass",
        "PriorityLevelConfiguration",
        "RuntimeClass",
        "SelfSubjectAccessReview",
        "SelfSubjectRulesReview",
        "StorageClass",
        "SubjectAccessReview",
        "TokenReview",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
    }
)


def is_cluster_scoped(kind: str) -> bool:
    return kind in _CLUSTER_SCOPED


class Gvk(NamedTuple):
    group: str
    version: str
    kind: str

    @classmethod
    def of(cls, data: dict[str, Any]) -> Gvk:
        api_version = data.get("apiVersion")
        api_version = api_version if isinstance(api_version, str) else ""
        group, _, version = api_version.rpartition("/")
        kind = data.get("kind")
        return cls(group, version, kind if isinstance(kind, str) else "")

    def selected_by(self, group: str | None, version: str | None, kind: str | None) -> bool:
        """Whether a selector (empty or None parts match anything) matches this gvk."""
        return (
            (not group or group == self.group)
            and (not version or version == self.version)
            and (not kind or kind == self.kind)
        )

    def __str__(self) -> str:
        api = f"{self.group}/{self.version}" if self.group else self.version
        return f"{api}.{self.kind}" if api else self.kind


class ResId(NamedTuple):
    gvk: Gvk
    name: str
    namespace: str

    @property
    def effective_namespace(self) -> str:
        """kustomize's view: no namespace means 'default' for namespaced kinds."""
        if is_cluster_scoped(self.gvk.kind):
            return ""
        return self.namespace or "default"

    def same_as(self, other: ResId) -> bool:
        return (
            self.gvk == other.gvk
            and self.name == other.name
            and self.effective_namespace == other.effective_namespace
        )

    def __str__(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.gvk} {self.name}{where}"


@dataclass
class Resource:
    data: dict[str, Any]
    source: str  # the file it came from, or the kustomization that generated it
    previous: list[ResId] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    suffixes: list[str] = field(default_factory=list)
    needs_hash: bool = False
    behavior: str = ""  # generated resources: create, merge or replace
    origin: Origin | None = None
    transformations: list[Origin] = field(default_factory=list)
    links: list[list[LinkPath]] = field(default_factory=list)  # see links.py
    # scalars replacements created, with their text: untagged in kustomize (see
    # replacements.quote_untagged)
    untagged: list[tuple[LinkPath, str]] = field(default_factory=list)
    # the gvk, with the apiVersion and kind it was made from (they may change in place)
    _gvk_cache: tuple[Any, Any, Gvk] | None = field(default=None, repr=False, compare=False)

    def copy_without_data(self) -> Resource:
        """The tracking fields only (the caller supplies data)."""
        return Resource(
            {},
            self.source,
            list(self.previous),
            list(self.prefixes),
            list(self.suffixes),
            self.needs_hash,
            self.behavior,
            self.origin,
            list(self.transformations),
            [list(group) for group in self.links],
            list(self.untagged),
        )

    @property
    def metadata(self) -> dict[str, Any]:
        meta = self.data.get("metadata")
        if not isinstance(meta, dict):
            meta = self.data["metadata"] = {}
        return meta

    @property
    def gvk(self) -> Gvk:
        data = self.data
        api_version, kind = data.get("apiVersion"), data.get("kind")
        cached = self._gvk_cache
        if cached is None or cached[0] is not api_version or cached[1] is not kind:
            cached = self._gvk_cache = (api_version, kind, Gvk.of(data))
        return cached[2]

    @property
    def kind(self) -> str:
        return self.gvk.kind

    def _metadata_field(self, field: str) -> str:
        meta = self.data.get("metadata")
        value = meta.get(field) if type(meta) is dict else None
        return value if type(value) is str else ""

    @property
    def name(self) -> str:
        return self._metadata_field("name")

    @property
    def namespace(self) -> str:
        return self._metadata_field("namespace")

    @property
    def id(self) -> ResId:
        meta = self.data.get("metadata")
        if type(meta) is dict:
            name, namespace = meta.get("name"), meta.get("namespace")
            return ResId(
                self.gvk,
                name if type(name) is str else "",
                namespace if type(namespace) is str else "",
            )
        return ResId(self.gvk, "", "")

    def ids(self) -> tuple[ResId, ...]:
        """The current id, then every earlier one."""
        return (self.id, *self.previous)

    def known_as(self, rid: ResId) -> bool:
        """Whether ``rid`` is the current id or an earlier one (the same object)."""
        return any(rid.same_as(i) for i in self.ids())

    def original_id(self) -> ResId:
        return self.previous[0] if self.previous else self.id

    def remember_id(self, earlier: ResId | None = None) -> None:
        """Record the current id (or ``earlier``, taken before a change made in place)
        before a transformer changes the name or namespace."""
        if earlier is None:
            gvk, name, namespace = self.gvk, self.name, self.namespace
        else:
            gvk, name, namespace = earlier
        effective = "" if is_cluster_scoped(gvk.kind) else namespace or "default"
        self.previous.append(ResId(gvk, name, effective))

    def set_name(self, name: str) -> None:
        self.metadata["name"] = name
