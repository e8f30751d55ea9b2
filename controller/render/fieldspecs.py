"""Where kustomize's built-in transformers look inside objects: field specs and their walk.

A field spec names a path (``spec/template/metadata/labels``) in objects of some group,
version and kind (empty parts match any) and whether missing fields are created. The tables
are kustomize v5's built-in configuration (labels, annotations, namespace, images, replicas,
name references), restated here as data.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rciots.controller.render.resource import Gvk

__all__ = [
    "ANNOTATIONS",
    "COMMON_LABELS",
    "NAMESPACE",
    "NAME_REFERENCES",
    "REPLICAS",
    "TEMPLATE_LABELS",
    "FieldSpec",
    "SpecTable",
    "places",
]


@dataclass(frozen=True)
class FieldSpec:
    path: str
    kind: str = ""
    group: str = ""
    version: str = ""
    create: bool = False

    def applies_to(self, gvk: Gvk) -> bool:
        return gvk.selected_by(self.group, self.version, self.kind)

    def parts(self) -> list[str]:
        return _parts(self.path)


class SpecTable:
    """Field specs, with the ones that apply to each gvk worked out once per gvk (a
    transformer visits every object, and objects share a handful of kinds)."""

    def __init__(self, specs: Iterable[FieldSpec]) -> None:
        self.specs = tuple(specs)
        self._applicable: dict[Gvk, tuple[FieldSpec, ...]] = {}

    def for_gvk(self, gvk: Gvk) -> tuple[FieldSpec, ...]:
        found = self._applicable.get(gvk)
        if found is None:
            if len(self._applicable) >= 1024:
                self._applicable.clear()  # bounded, whatever kinds the input invents
            found = tuple(spec for spec in self.specs if spec.applies_to(gvk))
            self._applicable[gvk] = found
        return found


@functools.cache
def _parts(path: str) -> list[str]:
    # '\/' escapes a slash inside a key (annotation names)
    return [part.replace("\0", "/") for part in path.replace("\\/", "\0").split("/")]


def places(
    obj: Any, parts: list[str], create: bool, path: tuple[str | int, ...] = ()
) -> list[tuple[dict[str, Any], str, tuple[str | int, ...]]]:
    """Every (mapping, key, path of the value) that ``parts`` leads to in ``obj``.

    Lists met on the way are walked element by element (``name[]`` says so explicitly);
    missing mappings are created only when ``create`` is set; the last key counts whether
    present or not when ``create`` is set, and only when present otherwise.
    """
    found: list[tuple[dict[str, Any], str, tuple[str | int, ...]]] = []
    _places(obj, parts, 0, create, path, found)
    return found


def _places(
    obj: Any,
    parts: list[str],
    index: int,
    create: bool,
    path: tuple[str | int, ...],
    found: list[tuple[dict[str, Any], str, tuple[str | int, ...]]],
) -> None:
    last = len(parts) - 1
    while True:
        if isinstance(obj, list):
            for position, item in enumerate(obj):
                _places(item, parts, index, create, (*path, position), found)
            return
        if not isinstance(obj, dict) or index > last:
            return
        head = parts[index]
        is_list = head.endswith("[]")
        key = head[:-2] if is_list else head
        if index == last:
            if create or obj.get(key) is not None:
                found.append((obj, key, (*path, key)))
            return
        child = obj.get(key)
        if child is None:
            if not create:
                return
            child = obj[key] = [] if is_list else {}
        obj, index, path = child, index + 1, (*path, key)


def _specs(create: bool, rows: list[tuple[str, str, str, str]]) -> tuple[FieldSpec, ...]:
    """Rows of (path, kind, group, version)."""
    return tuple(FieldSpec(p, k, g, v, create) for p, k, g, v in rows)


_TEMPLATE_META = [
    ("spec/template/metadata/{}", "ReplicationController", "", "v1"),
    ("spec/template/metadata/{}", "Deployment", "", ""),
    ("spec/template/metadata/{}", "ReplicaSet", "", ""),
    ("spec/template/metadata/{}", "DaemonSet", "", ""),
]
_LABEL_TEMPLATES = [
    *_TEMPLATE_META,
    ("spec/template/metadata/{}", "StatefulSet", "apps", ""),
    ("spec/volumeClaimTemplates[]/metadata/{}", "StatefulSet", "apps", ""),
    ("spec/template/metadata/{}", "Job", "batch", ""),
    ("spec/jobTemplate/metadata/{}", "CronJob", "batch", ""),
    ("spec/jobTemplate/spec/template/metadata/{}", "CronJob", "batch", ""),
]
_ANNOTATION_TEMPLATES = [
    *_TEMPLATE_META,
    ("spec/template/metadata/{}", "StatefulSet", "", ""),
    ("spec/template/metadata/{}", "Job", "batch", ""),
    ("spec/jobTemplate/metadata/{}", "CronJob", "batch", ""),
    ("spec/jobTemplate/spec/template/metadata/{}", "CronJob", "batch", ""),
]

# metadata labels plus the pod templates' labels: `labels` with includeTemplates
TEMPLATE_LABELS = (
    FieldSpec("metadata/labels", create=True),
    *_specs(True, [(p.format("labels"), k, g, v) for p, k, g, v in _LABEL_TEMPLATES]),
)

_AFFINITY = [
    "spec/template/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution/"
    "podAffinityTerm/labelSelector/matchLabels",
    "spec/template/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution/"
    "labelSelector/matchLabels",
    "spec/template/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/"
    "podAffinityTerm/labelSelector/matchLabels",
    "spec/template/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/"
    "labelSelector/matchLabels",
    "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",
]

# commonLabels, and `labels` with includeSelectors: selectors too
COMMON_LABELS = (
    _specs(
        True,
        [
            ("spec/selector", "Service", "", "v1"),
            ("spec/selector", "ReplicationController", "", "v1"),
            ("spec/selector/matchLabels", "Deployment", "", ""),
        ],
    )
    + _specs(False, [(p, "Deployment", "apps", "") for p in _AFFINITY])
    + _specs(
        True,
        [
            ("spec/selector/matchLabels", "ReplicaSet", "", ""),
            ("spec/selector/matchLabels", "DaemonSet", "", ""),
            ("spec/selector/matchLabels", "StatefulSet", "apps", ""),
        ],
    )
    + _specs(False, [(p, "StatefulSet", "apps", "") for p in _AFFINITY])
    + _specs(
        False,
        [
            ("spec/selector/matchLabels", "Job", "batch", ""),
            ("spec/jobTemplate/spec/selector/matchLabels", "CronJob", "batch", ""),
            ("spec/selector/matchLabels", "PodDisruptionBudget", "policy", ""),
            ("spec/podSelector/matchLabels", "NetworkPolicy", "networking.k8s.io", ""),
            ("spec/ingress/from/podSelector/matchLabels", "NetworkPolicy", "networking.k8s.io", ""),
            ("spec/egress/to/podSelector/matchLabels", "NetworkPolicy", "networking.k8s.io", ""),
        ],
    )
    + TEMPLATE_LABELS
)

ANNOTATIONS = (
    FieldSpec("metadata/annotations", create=True),
    *_specs(True, [(p.format("annotations"), k, g, v) for p, k, g, v in _ANNOTATION_TEMPLATES]),
)

# besides metadata/namespace of every namespaced object
NAMESPACE = (
    FieldSpec("metadata/name", "Namespace", create=True),
    FieldSpec("spec/service/namespace", "APIService", "apiregistration.k8s.io", create=True),
    FieldSpec(
        "spec/conversion/webhook/clientConfig/service/namespace",
        "CustomResourceDefinition",
        "apiextensions.k8s.io",
    ),
)

REPLICAS = _specs(
    True,
    [
        ("spec/replicas", "Deployment", "", ""),
        ("spec/replicas", "ReplicationController", "", ""),
        ("spec/replicas", "ReplicaSet", "", ""),
        ("spec/replicas", "StatefulSet", "", ""),
    ],
)

# -- name references: which fields of which kinds name an object of a referenced kind -------

_POD_SPEC = {
    ("Pod", "v1"): "spec",
    ("PodTemplate", ""): "template/spec",
    ("Deployment", ""): "spec/template/spec",
    ("ReplicaSet", ""): "spec/template/spec",
    ("DaemonSet", ""): "spec/template/spec",
    ("StatefulSet", ""): "spec/template/spec",
    ("ReplicationController", ""): "spec/template/spec",
    ("Job", ""): "spec/template/spec",
    ("CronJob", ""): "spec/jobTemplate/spec/template/spec",
}
_CONFIG_KINDS: tuple[str, ...] = ("Pod", "PodTemplate", "Deployment", "ReplicaSet", "DaemonSet")
_CONFIG_KINDS += ("StatefulSet", "Job", "CronJob")
_WORKLOAD_KINDS: tuple[str, ...] = ("Pod", "StatefulSet", "Deployment", "ReplicationController")
_WORKLOAD_KINDS += ("CronJob", "Job", "DaemonSet")


def _in_pod_specs(kinds: tuple[str, ...], fields: list[str]) -> list[FieldSpec]:
    specs: list[FieldSpec] = []
    for (kind, version), prefix in _POD_SPEC.items():
        if kind in kinds:
            specs.extend(FieldSpec(f"{prefix}/{f}", kind, "", version) for f in fields)
    return specs


_CONFIGMAP_FIELDS = [
    "volumes/configMap/name",
    "containers/env/valueFrom/configMapKeyRef/name",
    "initContainers/env/valueFrom/configMapKeyRef/name",
    "containers/envFrom/configMapRef/name",
    "initContainers/envFrom/configMapRef/name",
    "volumes/projected/sources/configMap/name",
]
_SECRET_FIELDS = [
    "volumes/secret/secretName",
    "containers/env/valueFrom/secretKeyRef/name",
    "initContainers/env/valueFrom/secretKeyRef/name",
    "containers/envFrom/secretRef/name",
    "initContainers/envFrom/secretRef/name",
    "imagePullSecrets/name",
    "volumes/projected/sources/secret/name",
]
_RBAC = "rbac.authorization.k8s.io"
_SCALE_TARGET = [FieldSpec("spec/scaleTargetRef/name", "HorizontalPodAutoscaler")]

# (referenced kind, its group) -> the field specs that may name one
NAME_REFERENCES: dict[tuple[str, str], list[FieldSpec]] = {
    ("Deployment", ""): _SCALE_TARGET,
    ("ReplicationController", ""): _SCALE_TARGET,
    ("ReplicaSet", ""): _SCALE_TARGET,
    ("StatefulSet", ""): _SCALE_TARGET,
    ("ConfigMap", ""): [
        *_in_pod_specs(_CONFIG_KINDS, _CONFIGMAP_FIELDS),
        FieldSpec("spec/configSource/configMap", "Node"),
        FieldSpec("rules/resourceNames", "Role"),
        FieldSpec("rules/resourceNames", "ClusterRole"),
        FieldSpec(
            "metadata/annotations/nginx.ingress.kubernetes.io\\/fastcgi-params-configmap",
            "Ingress",
        ),
    ],
    ("Secret", ""): [
        *_in_pod_specs(_CONFIG_KINDS, _SECRET_FIELDS),
        FieldSpec("spec/tls/secretName", "Ingress"),
        FieldSpec("metadata/annotations/ingress.kubernetes.io\\/auth-secret", "Ingress"),
        FieldSpec("metadata/annotations/nginx.ingress.kubernetes.io\\/auth-secret", "Ingress"),
        FieldSpec("metadata/annotations/nginx.ingress.kubernetes.io\\/auth-tls-secret", "Ingress"),
        FieldSpec("imagePullSecrets/name", "ServiceAccount"),
        FieldSpec("parameters/secretName", "StorageClass"),
        FieldSpec("parameters/adminSecretName", "StorageClass"),
        FieldSpec("parameters/userSecretName", "StorageClass"),
        FieldSpec("parameters/secretRef", "StorageClass"),
        FieldSpec("rules/resourceNames", "Role"),
        FieldSpec("rules/resourceNames", "ClusterRole"),
        FieldSpec(
            "spec/template/spec/containers/env/valueFrom/secretKeyRef/name",
            "Service",
            "serving.knative.dev",
            "v1",
        ),
        FieldSpec("spec/azureFile/secretName", "PersistentVolume"),
    ],
    ("Service", ""): [
        FieldSpec("spec/serviceName", "StatefulSet", "apps"),
        FieldSpec("spec/rules/http/paths/backend/serviceName", "Ingress"),
        FieldSpec("spec/backend/serviceName", "Ingress"),
        FieldSpec("spec/rules/http/paths/backend/service/name", "Ingress"),
        FieldSpec("spec/defaultBackend/service/name", "Ingress"),
        FieldSpec("spec/service/name", "APIService", "apiregistration.k8s.io"),
        FieldSpec(
            "webhooks/clientConfig/service",
            "ValidatingWebhookConfiguration",
            "admissionregistration.k8s.io",
        ),
        FieldSpec(
            "webhooks/clientConfig/service",
            "MutatingWebhookConfiguration",
            "admissionregistration.k8s.io",
        ),
    ],
    ("Role", _RBAC): [FieldSpec("roleRef/name", "RoleBinding", _RBAC)],
    ("ClusterRole", _RBAC): [
        FieldSpec("roleRef/name", "RoleBinding", _RBAC),
        FieldSpec("roleRef/name", "ClusterRoleBinding", _RBAC),
    ],
    ("ServiceAccount", ""): [
        FieldSpec("subjects", "RoleBinding", _RBAC),
        FieldSpec("subjects", "ClusterRoleBinding", _RBAC),
        *_in_pod_specs(_WORKLOAD_KINDS, ["serviceAccountName"]),
    ],
    ("PersistentVolumeClaim", ""): _in_pod_specs(
        _WORKLOAD_KINDS, ["volumes/persistentVolumeClaim/claimName"]
    ),
    ("PersistentVolume", ""): [
        FieldSpec("spec/volumeName", "PersistentVolumeClaim"),
        FieldSpec("rules/resourceNames", "ClusterRole"),
    ],
    ("StorageClass", "storage.k8s.io"): [
        FieldSpec("spec/storageClassName", "PersistentVolume"),
        FieldSpec("spec/storageClassName", "PersistentVolumeClaim"),
        FieldSpec("spec/volumeClaimTemplates/spec/storageClassName", "StatefulSet"),
    ],
    ("PriorityClass", "scheduling.k8s.io"): _in_pod_specs(_WORKLOAD_KINDS, ["priorityClassName"]),
    # kustomize v5.5 names this group "networking.k8s.io/v1", so the rule never matches a
    # real IngressClass; kept as it is for identical output.
    ("IngressClass", "networking.k8s.io/v1"): [FieldSpec("spec/ingressClassName", "Ingress")],
    ("ValidatingAdmissionPolicy", "admissionregistration.k8s.io"): [
        FieldSpec(
            "spec/policyName", "ValidatingAdmissionPolicyBinding", "admissionregistration.k8s.io"
        )
    ],
}
