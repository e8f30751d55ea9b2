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

# The Go types kustomize decodes a kustomization into, from JSON: "string", "bool", "int"
# (int64), "any", [T] (a list), ("map", T) (string keys) or a struct (field name -> type),
# whose field names match case-insensitively and which refuses unknown fields.
Schema = Any
_S, _B, _I = "string", "bool", "int"
_GVK = {"group": _S, "version": _S, "kind": _S}
_SELECTOR = {**_GVK, "name": _S, "namespace": _S, "annotationSelector": _S, "labelSelector": _S}
_GENERATOR_OPTIONS = {
    "labels": ("map", _S),
    "annotations": ("map", _S),
    "disableNameSuffixHash": _B,
    "immutable": _B,
}
_GENERATOR = {
    "namespace": _S,
    "name": _S,
    "behavior": _S,
    "literals": [_S],
    "files": [_S],
    "envs": [_S],
    "env": _S,
    "options": _GENERATOR_OPTIONS,
}
_FIELD_OPTIONS = {"delimiter": _S, "index": _I, "encoding": _S, "create": _B}
_PATCH = {"path": _S, "patch": _S, "target": _SELECTOR, "options": ("map", _B)}
_IMAGE = {"name": _S, "newName": _S, "tagSuffix": _S, "newTag": _S, "digest": _S}
_FIELDS: dict[str, Schema] = {
    "apiVersion": _S,
    "kind": _S,
    "metadata": {"name": _S, "namespace": _S, "labels": ("map", _S), "annotations": ("map", _S)},
    "namePrefix": _S,
    "nameSuffix": _S,
    "namespace": _S,
    "commonLabels": ("map", _S),
    "labels": [
        {
            "pairs": ("map", _S),
            "includeSelectors": _B,
            "includeTemplates": _B,
            "fields": [{**_GVK, "path": _S, "create": _B}],
        }
    ],
    "commonAnnotations": ("map", _S),
    "patchesStrategicMerge": [_S],
    "patchesJson6902": [_PATCH],
    "patches": [_PATCH],
    "images": [_IMAGE],
    "replacements": [
        {
            "path": _S,
            "source": {**_SELECTOR, "fieldPath": _S, "options": _FIELD_OPTIONS},
            "targets": [
                {
                    "select": _SELECTOR,
                    "reject": [_SELECTOR],
                    "fieldPaths": [_S],
                    "options": _FIELD_OPTIONS,
                }
            ],
        }
    ],
    "replicas": [{"name": _S, "count": _I}],
    "sortOptions": {
        "order": _S,
        "legacySortOptions": {"orderFirst": [_S], "orderLast": [_S]},
    },
    "resources": [_S],
    "components": [_S],
    "bases": [_S],
    "configMapGenerator": [_GENERATOR],
    "secretGenerator": [{**_GENERATOR, "type": _S}],
    "generatorOptions": _GENERATOR_OPTIONS,
    "buildMetadata": [_S],
}


def _json_kind(value: Any) -> str:
    """What Go's JSON decoder calls a value in its type errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


class _Mismatch(Exception):
    """A value Go's decoder refuses; ``path`` is filled in, innermost part first."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []


def _decoded(value: Any, schema: Schema) -> Any:
    """``value`` decoded as kustomize decodes it into ``schema``'s Go type: field names made
    canonical, integral numbers into int fields; _Mismatch for what Go's decoder refuses (a
    value of the wrong JSON kind, an unknown field, a fraction for an int)."""
    if value is None:
        return None
    if type(schema) is str:
        if schema == _S:
            if type(value) is str:
                return value
        elif schema == _B:
            if type(value) is bool:
                return value
        elif schema == _I:
            if type(value) is int:
                return value
            if type(value) is float:
                if value.is_integer():
                    return int(value)
                raise _Mismatch(f"cannot unmarshal number {value} into a Go int")
        else:  # any
            return value
        raise _Mismatch(f"cannot unmarshal {_json_kind(value)} into a Go {schema}")
    if type(schema) is list:
        if type(value) is not list:
            raise _Mismatch(f"cannot unmarshal {_json_kind(value)} into a Go list")
        items = []
        for index, item in enumerate(value):
            try:
                items.append(_decoded(item, schema[0]))
            except _Mismatch as exc:
                exc.path.append(f"[{index}]")
                raise
        return items
    if type(value) is not dict:
        kind = "map" if type(schema) is tuple else "struct"
        raise _Mismatch(f"cannot unmarshal {_json_kind(value)} into a Go {kind}")
    decoded: dict[str, Any] = {}
    for key, item in value.items():
        if type(schema) is tuple:
            name, item_schema = key, schema[1]
        else:
            name = key if key in schema else _folded(schema).get(key.lower(), "")
            if not name:
                raise _Mismatch(f"unknown field {key!r}")
            item_schema = schema[name]
        try:
            decoded[name] = _decoded(item, item_schema)
        except _Mismatch as exc:
            exc.path.append(f".{name}")
            raise
    return decoded


_FOLDED: dict[int, dict[str, str]] = {}


def _folded(struct: dict[str, Schema]) -> dict[str, str]:
    """A struct schema's field names by their lower case (for Go's case-insensitive match)."""
    folded = _FOLDED.get(id(struct))
    if folded is None:
        folded = _FOLDED[id(struct)] = {name.lower(): name for name in struct}
    return folded


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
    # as kustomize decodes the whole file before building anything, its type errors come first
    try:
        raw = _decoded(raw, _FIELDS)
    except _Mismatch as exc:
        where = "".join(reversed(exc.path)).lstrip(".")
        raise RenderError(path, f"{where}: {exc.message}" if where else exc.message) from None
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
