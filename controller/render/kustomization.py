"""Reading one kustomization file: fields checked, unsupported features refused by name.

Pure: bytes in, a ``Kustomization`` out, or a ``RenderError`` naming the file. Fields that
would run programs or reach the network (helm charts, plugins, remote resources) and fields
this renderer does not implement are refused with a message that names the field, rather
than silently ignored: a device must never get something other than what kustomize builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rciots.controller import yamlsafe
from rciots.controller.render import documents
from rciots.controller.render.api import RenderError

__all__ = ["KINDS", "Kustomization", "beside", "parse"]

KUSTOMIZATION_VERSION = "kustomize.config.k8s.io/v1beta1"
COMPONENT_VERSION = "kustomize.config.k8s.io/v1alpha1"
KINDS = ("Kustomization", "Component")

_SUPPORTED = {
    "apiVersion",
    "kind",
    "metadata",
    "namePrefix",
    "nameSuffix",
    "namespace",
    "commonLabels",
    "labels",
    "commonAnnotations",
    "patchesStrategicMerge",
    "patchesJson6902",
    "patches",
    "images",
    "replacements",
    "replicas",
    "sortOptions",
    "resources",
    "components",
    "bases",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "buildMetadata",
}
_UNSUPPORTED = {
    "helmCharts": "helm charts run the helm program",
    "helmGlobals": "helm charts run the helm program",
    "helmChartInflationGenerator": "helm charts run the helm program",
    "generators": "generator plugins run programs",
    "transformers": "transformer plugins run programs",
    "validators": "validator plugins run programs",
    "openapi": "custom OpenAPI schemas are not supported",
    "crds": "CRD schema files are not supported",
    "configurations": "custom transformer configurations are not supported",
    "vars": "vars are deprecated in kustomize; use replacements",
    "imageTags": "imageTags is deprecated; use images",
}

# kustomize decodes the file into a Go struct, which matches field names case-insensitively
_CANONICAL = {name.lower(): name for name in (*_SUPPORTED, *_UNSUPPORTED)}


@dataclass
class Kustomization:
    path: str  # the kustomization file
    directory: str
    kind: str
    resources: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def get_str(self, key: str) -> str:
        value = self.raw.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise RenderError(self.path, f"{key} must be a string")
        return value

    def get_list(self, key: str) -> list[Any]:
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise RenderError(self.path, f"{key} must be a list")
        return value

    def get_map(self, key: str) -> dict[str, Any]:
        value = self.raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise RenderError(self.path, f"{key} must be a mapping")
        return value

    def string_map(self, key: str) -> dict[str, str]:
        values = self.get_map(key)
        for name, value in values.items():
            if not isinstance(value, str):
                raise RenderError(self.path, f"{key}.{name} must be a string; quote the value")
        return values


def beside(kustomization: str, relative: str) -> str:
    """The snapshot path of a file a kustomization names, for messages."""
    directory = kustomization.rpartition("/")[0]
    return f"{directory}/{relative}" if directory else relative


def _strings(path: str, key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RenderError(path, f"{key} must be a list of strings")
    return value


def parse(path: str, data: bytes, limits: yamlsafe.Limits) -> Kustomization:
    values = documents.load(data, path, limits, yamlsafe.KUSTOMIZATION)
    if len(values) > 1:
        raise RenderError(path, "a kustomization file holds one document")
    raw = values[0] if values else {}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RenderError(path, "a kustomization must be a mapping")
    raw = {_CANONICAL.get(key.lower(), key): value for key, value in raw.items()}
    if not set(raw) - {"apiVersion", "kind"}:
        raise RenderError(path, "the kustomization is empty: list resources, components or others")
    for key in raw:
        if key in _UNSUPPORTED:
            raise RenderError(path, f"unsupported field '{key}': {_UNSUPPORTED[key]}")
        if key not in _SUPPORTED:
            raise RenderError(path, f"unknown field '{key}' in the kustomization")
    kind = raw.get("kind") or "Kustomization"
    if kind not in KINDS:
        raise RenderError(path, "kind should be Kustomization or Component")
    wanted = COMPONENT_VERSION if kind == "Component" else KUSTOMIZATION_VERSION
    api_version = raw.get("apiVersion")
    if api_version not in (None, "", wanted):
        raise RenderError(path, f"apiVersion for {kind} should be {wanted}")
    directory = path.rpartition("/")[0]
    resources = _strings(path, "resources", raw.get("resources"))
    resources += _strings(path, "bases", raw.get("bases"))
    return Kustomization(
        path=path,
        directory=directory,
        kind=kind,
        resources=resources,
        components=_strings(path, "components", raw.get("components")),
        raw=raw,
    )
