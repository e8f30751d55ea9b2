"""Strategic merge patches, as kustomize's kyaml merges them.

A patch is walked together with the object it patches. Mappings merge field by field (a
``null`` deletes); ``$patch: delete`` and ``$patch: replace`` change what a mapping or list
means. A list merges item by item only where the Kubernetes API schema (as compiled into
kustomize: Kubernetes 1.21) gives it the ``merge`` patch strategy; its items are matched by the
schema's keys (``containers`` by name, container ``ports`` by containerPort and protocol, ...).
Every other list, and every list of a kind the schema does not know, is replaced.

The item-by-item merge is a faithful port of kyaml's associative-sequence walk, including the
consequences of its details: the patch's items come first; items matched on several keys move
behind the new ones; a patch item missing a key matches the first item that has that key.
Objects are merged in place; the caller hands in copies.
"""

from __future__ import annotations

import functools
from typing import Any

from rciots.controller.render import resource

__all__ = ["DELETE", "MergeError", "merge_object", "walks_to"]


class MergeError(ValueError):
    pass


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


DELETE: Any = _Marker("DELETE")  # the walk's "clear this node"
MISSING: Any = _Marker("MISSING")  # a field absent from one side

# -- the schema: which lists merge, and by which keys ----------------------------------------

_POD_SPEC_PATHS = {
    "Pod": ("spec",),
    "PodTemplate": ("template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
_TEMPLATE_METADATA = {kind: (*path[:-1], "metadata") for kind, path in _POD_SPEC_PATHS.items()}
_POD_LISTS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "imagePullSecrets": ("name",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
}
_CONTAINER_LISTS: dict[str, tuple[str, ...]] = {
    "env": ("name",),
    "ports": ("containerPort", "protocol"),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
}
_CONTAINER_FIELDS = ("containers", "initContainers", "ephemeralContainers")
_METADATA_LISTS: dict[str, tuple[str, ...]] = {"finalizers": (), "ownerReferences": ("uid",)}

# group/version -> kinds, for the API versions the compiled-in schema has
_KNOWN: dict[str, frozenset[str]] = {
    "v1": frozenset(
        {
            "Pod", "PodTemplate", "ReplicationController", "Service", "ServiceAccount",
            "ConfigMap", "Secret", "Namespace", "Node", "PersistentVolume",
            "PersistentVolumeClaim", "Endpoints", "LimitRange", "ResourceQuota", "Event",
        }
    ),
    "apps/v1": frozenset({"Deployment", "ReplicaSet", "DaemonSet", "StatefulSet"}),
    "batch/v1": frozenset({"Job", "CronJob"}),
    "batch/v1beta1": frozenset({"CronJob"}),
    "admissionregistration.k8s.io/v1": frozenset(
        {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
    ),
    "admissionregistration.k8s.io/v1beta1": frozenset(
        {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
    ),
    "networking.k8s.io/v1": frozenset({"Ingress", "NetworkPolicy", "IngressClass"}),
    "networking.k8s.io/v1beta1": frozenset({"Ingress", "IngressClass"}),
    "extensions/v1beta1": frozenset({"Ingress"}),
    "rbac.authorization.k8s.io/v1": frozenset(
        {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
    ),
    "policy/v1": frozenset({"PodDisruptionBudget"}),
    "policy/v1beta1": frozenset({"PodDisruptionBudget", "PodSecurityPolicy"}),
    "autoscaling/v1": frozenset({"HorizontalPodAutoscaler"}),
    "autoscaling/v2beta1": frozenset({"HorizontalPodAutoscaler"}),
    "autoscaling/v2beta2": frozenset({"HorizontalPodAutoscaler"}),
    "storage.k8s.io/v1": frozenset({"StorageClass", "CSIDriver", "CSINode", "VolumeAttachment"}),
    "scheduling.k8s.io/v1": frozenset({"PriorityClass"}),
    "apiextensions.k8s.io/v1": frozenset({"CustomResourceDefinition"}),
    "coordination.k8s.io/v1": frozenset({"Lease"}),
}  # fmt: skip


class _Schema:
    """The list rules of one kind: path of field names (no indexes) -> merge keys."""

    def __init__(self, api_version: str, kind: str) -> None:
        self.known = kind in _KNOWN.get(api_version, frozenset())
        self.rules: dict[tuple[str, ...], tuple[str, ...]] = {}
        if not self.known:
            return
        metadata_paths: list[tuple[str, ...]] = [("metadata",)]
        if kind in _TEMPLATE_METADATA:
            metadata_paths.append(_TEMPLATE_METADATA[kind])
        for base in metadata_paths:
            for field, keys in _METADATA_LISTS.items():
                self.rules[(*base, field)] = keys
        pod = _POD_SPEC_PATHS.get(kind)
        if pod is not None:
            for field, keys in _POD_LISTS.items():
                self.rules[(*pod, field)] = keys
            for container in _CONTAINER_FIELDS:
                for field, keys in _CONTAINER_LISTS.items():
                    self.rules[(*pod, container, field)] = keys
        if kind == "Service":
            self.rules[("spec", "ports")] = ("port", "protocol")
        if kind == "ServiceAccount":
            self.rules[("secrets",)] = ("name",)
        if kind.endswith("WebhookConfiguration"):
            self.rules[("webhooks",)] = ("name",)

    def list_keys(self, path: tuple[str, ...]) -> tuple[str, ...] | None:
        """The merge keys of the list at ``path`` (() for a merged list of scalars), or None
        when the list is replaced."""
        return self.rules.get(path)


@functools.cache
def _schema(api_version: str, kind: str) -> _Schema:
    return _Schema(api_version, kind)


# -- the walk -------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "list"
    return "scalar"


def _text(value: Any) -> str:
    """A scalar's text as kyaml compares it ("" for anything else)."""
    return "" if isinstance(value, dict | list) else resource.scalar_text(value)


def _is_null(value: Any) -> bool:
    return value is MISSING or value is None


def _walk(dest: Any, origin: Any, path: tuple[str, ...], schema: _Schema) -> Any:
    present = [v for v in (dest, origin) if not _is_null(v)]
    if not present:
        return DELETE if origin is None else MISSING
    kind = _kind(present[0])
    for value in present[1:]:
        if _kind(value) != kind:
            raise MergeError(
                f"wrong node kind at {'.'.join(path) or 'the top'}: expected {kind} but got "
                f"{_kind(value)}"
            )
    if kind == "map":
        return _walk_map(dest, origin, path, schema)
    if kind == "list":
        keys = schema.list_keys(path)
        if keys is None:
            return origin if origin is not MISSING else dest
        return _walk_associative(dest, origin, keys, path, schema)
    return origin if origin is not MISSING else dest


def _map_directive(patch: dict[str, Any]) -> str:
    directive = patch.get("$patch")
    if directive is None:
        return "merge"
    if directive not in ("delete", "replace", "merge"):
        raise MergeError(f"unknown patch strategy '{directive}'")
    del patch["$patch"]
    return str(directive)


def _walk_map(dest: Any, origin: Any, path: tuple[str, ...], schema: _Schema) -> Any:
    if _is_null(dest):
        if isinstance(origin, dict) and origin.get("$patch") == "delete":
            return DELETE
        if isinstance(origin, dict):
            _map_directive(origin)
        dest = origin  # then walked against itself, which settles nested directives
    elif origin is None:
        return DELETE
    elif isinstance(origin, dict):
        directive = _map_directive(origin)
        if directive == "delete":
            return DELETE
        if directive == "replace":
            dest = origin
    source = origin if isinstance(origin, dict) else {}
    for key in [k for k in dest if k not in source]:
        value = _settle(dest[key], (*path, key), schema)
        if value is None:
            del dest[key]
        else:
            dest[key] = value
    for key in source:
        value = _walk(dest.get(key, MISSING), source[key], (*path, key), schema)
        if value is DELETE or value is MISSING or value is None:
            dest.pop(key, None)
        else:
            dest[key] = value
    return dest


def _settle(value: Any, path: tuple[str, ...], schema: _Schema) -> Any:
    """What walking a part of the object that the patch does not touch gives: the same part,
    less its null fields, with its merged lists walked (which drops repeated items)."""
    if isinstance(value, dict):
        for key in list(value):
            item = value[key]
            if item is None:
                del value[key]
            elif isinstance(item, dict | list):
                value[key] = _settle(item, (*path, key), schema)
        return value
    if isinstance(value, list):
        keys = schema.list_keys(path)
        if keys is None:
            return value
        if keys and _plainly_keyed(value, keys):
            # every item has every key, each once: the walk would give the items back as
            # they are, in order; only their insides need settling
            return [_settle(item, path, schema) for item in value]
        return _walk_associative(value, MISSING, keys, path, schema)
    return value


def _plainly_keyed(items: list[Any], keys: tuple[str, ...]) -> bool:
    seen: set[tuple[str, ...]] = set()
    for item in items:
        if not isinstance(item, dict) or not item:
            return False
        values = tuple(_text(item.get(key)) for key in keys)
        if "" in values or values in seen:
            return False
        seen.add(values)
    return True


def _list_directive(patch: list[Any]) -> str:
    for index, item in enumerate(patch):
        if isinstance(item, dict) and "$patch" in item and len(item) == 1:
            directive = item["$patch"]
            if directive not in ("delete", "replace", "merge"):
                raise MergeError(f"unknown patch strategy '{directive}'")
            del patch[index]
            return str(directive)
    return "merge"


def _walk_associative(
    dest: Any, origin: Any, keys: tuple[str, ...], path: tuple[str, ...], schema: _Schema
) -> Any:
    if _is_null(dest):
        dest = origin
    elif origin is None:
        return DELETE
    elif isinstance(origin, list):
        directive = _list_directive(origin)
        if directive == "delete":
            return DELETE
        if directive == "replace":
            dest = origin
    patch = origin if isinstance(origin, list) else []
    if keys:
        values = _element_values(patch, dest, list(keys))
        return _set_elements(values, list(keys), dest, patch, path, schema)
    return _set_elements(_primitive_values(patch, dest), [""], dest, patch, path, schema)


def _element_values(patch: list[Any], dest: list[Any], keys: list[str]) -> list[list[str]]:
    result: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for source in (patch, dest):  # the patch first: kustomize prepends
        for element in source:
            values = [_text(element.get(key)) if isinstance(element, dict) else "" for key in keys]
            if values and tuple(values) not in seen:
                seen.add(tuple(values))
                result.append(values)
    return result


def _primitive_values(patch: list[Any], dest: list[Any]) -> list[list[str]]:
    result: list[list[str]] = []
    seen: set[str] = set()
    for source in (patch, dest):
        for element in source:
            text = _text(element)
            if text not in seen:
                seen.add(text)
                result.append([text])
    return result


def _match(first: list[str], second: list[str]) -> list[str] | None:
    if len(first) != len(second):
        return None
    common = False
    merged: list[str] = []
    for a, b in zip(first, second, strict=True):
        if a == b:
            common = True
            merged.append(a)
        elif a and b:
            return None
        else:
            merged.append(a or b)
    return merged if common else None


def _merge_values(values_list: list[list[str]]) -> list[list[str]]:
    for i in range(len(values_list)):
        for j in range(len(values_list)):
            merged = _match(values_list[i], values_list[j])
            if merged is not None:
                values_list[i] = merged
                values_list[j] = merged
    return values_list


def _validate_keys(
    values_list: list[list[str]], values: list[str], keys: list[str]
) -> tuple[list[str], list[str]]:
    valid = {keys[i] for each in values_list for i, v in enumerate(each) if v != ""}
    if not valid:
        return keys, values
    return (
        [k for k in keys if k in valid],
        [v for i, v in enumerate(values) if v != "" or keys[i] in valid],
    )


def _field_matches(element: Any, key: str, value: str, *, empty_is_any: bool) -> bool:
    """kyaml's two field matchers: the item lookup wants the exact text, even "" (MatchField);
    the item setter takes "" to mean any value (FieldMatcher with a StringValue)."""
    if key == "":
        if isinstance(element, dict | list):
            raise MergeError("expected a scalar list item")
        return _text(element) == value
    if not isinstance(element, dict):
        raise MergeError("expected a mapping list item")
    if key not in element:
        return False
    return (empty_is_any and value == "") or _text(element[key]) == value


def _element(source: Any, keys: list[str], values: list[str]) -> Any:
    if not isinstance(source, list):
        return MISSING
    keys = keys or [""]
    values = values or [""]
    if keys[0] == "":
        return next((e for e in source if _text(e) == values[0]), MISSING)
    for element in source:
        if isinstance(element, dict) and all(
            _field_matches(element, k, v, empty_is_any=False)
            for k, v in zip(keys, values, strict=False)
        ):
            return element
    return MISSING


def _set_element(items: list[Any], element: Any, keys: list[str], values: list[str]) -> None:
    """kyaml's ElementSetter: replace the items matching keys/values with ``element`` (or
    remove them when it is MISSING); append it when nothing matched."""
    keys = keys or [""]
    mapping_setter = bool(keys[0]) and bool(values) and values[0] != ""
    kept: list[Any] = []
    found_any = False
    for item in items:
        if item is None or item == {}:
            continue
        if not isinstance(item, dict) and mapping_setter:
            kept.append(item)
            continue
        found = True
        matched = False
        for j, key in enumerate(keys):
            if j < len(values):
                matched = _field_matches(item, key, values[j], empty_is_any=True)
            if not matched:
                found = False
                break
        if not found:
            if values:
                kept.append(item)
            continue
        found_any = True
        if element is not MISSING:
            kept.append(element)
    items[:] = kept
    if element is not MISSING and not found_any:
        items.append(element)


def _set_elements(
    values_list: list[list[str]],
    keys: list[str],
    dest: list[Any],
    patch: list[Any],
    path: tuple[str, ...],
    schema: _Schema,
) -> list[Any]:
    added: list[Any] = []
    if len(keys) > 1:
        values_list = _merge_values(values_list)
    valid_keys: list[str] = keys
    for values in values_list:
        if not values:
            continue
        valid_keys, valid_values = _validate_keys(values_list, values, keys)
        # items are looked up by the keys this one item has (kyaml's elementValueList)
        own_keys, own_values = _validate_keys([values], values, keys)
        merged = _walk(
            _element(dest, own_keys, own_values),
            _element(patch, own_keys, own_values),
            path,
            schema,
        )
        if merged is DELETE or merged is MISSING or merged is None or merged == {}:
            _set_element(dest, MISSING, valid_keys, valid_values)
            continue
        if isinstance(merged, dict):
            for key, value in zip(valid_keys, valid_values, strict=False):
                if key not in merged and value != "":
                    merged[key] = value
        _set_element(added, merged, valid_keys, valid_values)
    if values_list:
        _append_list(added, dest, valid_keys)
    return added


def _append_list(items: list[Any], source: list[Any], keys: list[str]) -> None:
    for element in list(source):
        if not keys or keys[0] == "":
            _set_element(items, element, [""], [_text(element)])
            continue
        if not isinstance(element, dict):
            raise MergeError("expected a mapping list item")
        values: list[str] = []
        for key in keys:
            if key not in element:
                items.append(element)  # kyaml appends an item missing a key, once per key
                continue
            values.append(_text(element[key]))
        if len(keys) > 1:
            _set_element(items, MISSING, keys, values)
        _set_element(items, element, keys, values)


def merge_object(target: dict[str, Any], patch: dict[str, Any]) -> Any:
    """Merge ``patch`` into ``target`` (both changed in place); DELETE when the patch deletes
    the object."""
    schema = _schema(str(target.get("apiVersion", "")), str(target.get("kind", "")))
    return _walk(target, patch, (), schema)


def walks_to(target: dict[str, Any], path: tuple[str | int, ...]) -> bool:
    """Whether merging a patch into ``target`` walks to the value at ``path`` (through
    mappings and the lists merged item by item; a replaced list is taken whole)."""
    schema = _schema(str(target.get("apiVersion", "")), str(target.get("kind", "")))
    fields: list[str] = []
    for part in path:
        if isinstance(part, int):
            if schema.list_keys(tuple(fields)) is None:
                return False
        else:
            fields.append(part)
    return True
