"""Patches: strategic merge (kustomize's merge of a partial object into matching objects) and
JSON 6902 (a list of operations, applied with the jsonpatch library), with their targets.

Strategic merge follows kustomize v5: mappings merge key by key, ``null`` deletes a key, lists
of the built-in kinds that Kubernetes merges by a key (containers by name, ports by
containerPort, ...) merge item by item with the patch's items first, other lists are
replaced, and ``$patch: delete`` / ``$patch: replace`` change what a mapping means.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from rciots.controller import yamlsafe
from rciots.controller.render import documents, jsonpatch6902, selectors
from rciots.controller.render.api import RenderError
from rciots.controller.render.resource import Resource, copy_data

__all__ = ["apply_json6902_list", "apply_patches", "apply_strategic_merge_list", "select"]

Reader = Callable[[str], bytes]
_DELETE = object()

# Kinds served by Kubernetes itself: only these have merge keys; custom kinds replace lists.
_BUILTIN_KINDS = frozenset(
    {
        "Pod", "PodTemplate", "Deployment", "ReplicaSet", "DaemonSet", "StatefulSet",
        "ReplicationController", "Job", "CronJob", "Service", "ConfigMap", "Secret",
        "ServiceAccount", "PersistentVolumeClaim", "PersistentVolume", "Namespace", "Ingress",
        "NetworkPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "Endpoints", "LimitRange",
        "ResourceQuota", "StorageClass", "PriorityClass", "Node", "Event",
    }
)  # fmt: skip
# list field -> the keys that identify its items, in the Kubernetes API
_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "imagePullSecrets": ("name",),
    "resourceClaims": ("name",),
    "schedulingGates": ("name",),
    "env": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey",),
    "ownerReferences": ("uid",),
}
_CONTAINER_PORT_KEYS = ("containerPort", "protocol")


def _merge_keys(field: str, items: list[Any]) -> tuple[str, ...] | None:
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict)), {})
        return _CONTAINER_PORT_KEYS if "containerPort" in sample else ("port",)
    return _MERGE_KEYS.get(field)


# Primitive lists that Kubernetes merges as sets (the patch's items first).
_MERGED_PRIMITIVE_LISTS = frozenset({"finalizers"})


def _strip_directives(value: Any) -> Any:
    # kustomize interprets only $patch; other `$...` keys stay as plain fields
    if isinstance(value, dict):
        return {
            k: _strip_directives(v) for k, v in value.items() if k != "$patch" and v is not None
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _merge_list(field: str, target: list[Any], patch: list[Any], builtin: bool) -> list[Any]:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [_strip_directives(i) for i in patch if not isinstance(i, dict) or "$patch" not in i]
    if builtin and field in _MERGED_PRIMITIVE_LISTS:
        return [*patch, *(i for i in target if i not in patch)]
    keys = _merge_keys(field, patch + target) if builtin else None
    if keys is None or not all(isinstance(i, dict) for i in patch + target):
        return [_strip_directives(i) for i in patch if not _is_delete(i)]

    def key_of(item: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(item.get(k) for k in keys)

    remaining = list(target)
    merged: list[Any] = []
    for item in patch:
        if (
            keys == _CONTAINER_PORT_KEYS
            and "protocol" not in item
            and any(t.get("containerPort") == item.get("containerPort") for t in target)
        ):
            continue  # kustomize drops a patch of an existing port that gives no protocol
        match = next((t for t in remaining if key_of(t) == key_of(item)), None)
        if match is not None:
            remaining.remove(match)
        if _is_delete(item):
            continue
        if match is None:
            merged.append(_strip_directives(item))
        else:
            result = _merge_map(match, item, builtin)
            if result is not _DELETE:
                merged.append(result)
    return merged + remaining


def _is_delete(value: Any) -> bool:
    return isinstance(value, dict) and value.get("$patch") == "delete"


def _merge_map(target: dict[str, Any], patch: dict[str, Any], builtin: bool) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return _strip_directives(patch)
    if directive is not None:
        raise ValueError(f"unknown $patch directive {directive!r}")
    result = dict(target)
    for key, value in patch.items():
        if key == "$patch":
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged = _merge_map(current, value, builtin)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, dict) and _is_delete(value):
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(current, list):
            result[key] = _merge_list(key, current, value, builtin)
        else:
            result[key] = _strip_directives(value)
    return result


def strategic_merge(resource: Resource, patch: dict[str, Any], options: dict[str, Any]) -> bool:
    """Merge ``patch`` into ``resource``; False when the patch deletes the object."""
    patch = copy_data(patch)
    metadata = patch.get("metadata")
    if isinstance(metadata, dict):
        if not options.get("allowNameChange"):
            metadata.pop("name", None)
        metadata.pop("namespace", None)
    if not options.get("allowKindChange"):
        patch.pop("kind", None)
        patch.pop("apiVersion", None)
    merged = _merge_map(resource.data, patch, resource.kind in _BUILTIN_KINDS)
    if merged is _DELETE:
        return False
    if resource.name != (merged.get("metadata") or {}).get("name", resource.name):
        resource.remember_id()
    resource.data = merged
    return True


# -- targets ------------------------------------------------------------------------------


def _label_selector_matches(selector: str, labels: dict[str, str], where: str = "") -> bool:
    try:
        return selectors.matches(selector, labels)
    except ValueError as exc:
        raise RenderError(where, f"label selector {selector!r}: {exc}") from None


def _regex_matches(pattern: str, value: str) -> bool:
    try:
        return re.fullmatch(f"(?:{pattern})", value) is not None
    except re.error:
        return False


def select(resources: list[Resource], target: dict[str, Any], source: str) -> list[Resource]:
    """The resources a patch or replacement target selects, as kustomize's selector does."""
    if not isinstance(target, dict):
        raise RenderError(source, "a target must be a mapping")
    chosen = []
    for resource in resources:
        current, original = resource.id, resource.original_id()
        namespace = target.get("namespace")
        if namespace and not (
            _regex_matches(namespace, original.effective_namespace)
            or _regex_matches(namespace, current.effective_namespace)
        ):
            continue
        name = target.get("name")
        if name and not (_regex_matches(name, original.name) or _regex_matches(name, current.name)):
            continue
        gvk = resource.gvk
        if not all(
            not wanted or _regex_matches(wanted, actual)
            for wanted, actual in (
                (target.get("group"), gvk.group),
                (target.get("version"), gvk.version),
                (target.get("kind"), gvk.kind),
            )
        ):
            continue
        meta = resource.metadata
        labels = target.get("labelSelector")
        if labels and not _label_selector_matches(labels, meta.get("labels") or {}, source):
            continue
        annotations = target.get("annotationSelector")
        if annotations and not _label_selector_matches(
            annotations, meta.get("annotations") or {}, source
        ):
            continue
        chosen.append(resource)
    return chosen


# -- reading and applying -----------------------------------------------------------------


def _documents(text: bytes, where: str, limits: yamlsafe.Limits) -> list[Any]:
    try:
        return documents.load(text, limits)
    except yamlsafe.YamlError as exc:
        raise RenderError(where, f"line {exc.line} column {exc.column}: {exc.message}") from None


def _apply_json6902(resource: Resource, operations: Any, where: str) -> None:
    if not isinstance(operations, list):
        raise RenderError(where, "a JSON 6902 patch must be a list of operations")
    patched = copy_data(resource.data)
    # during a build kustomize keeps internal annotations on every object, so an
    # annotations map always exists for a patch to reach into
    metadata = patched.get("metadata")
    created = isinstance(metadata, dict) and "annotations" not in metadata
    if created:
        metadata["annotations"] = {}
    try:
        jsonpatch6902.apply(patched, operations)
    except jsonpatch6902.PatchError as exc:
        raise RenderError(where, f"JSON patch on {resource.id}: {exc}") from None
    metadata = patched.get("metadata")
    if created and isinstance(metadata, dict) and metadata.get("annotations") == {}:
        del metadata["annotations"]
    if not isinstance(metadata, dict) or metadata.get("name") != resource.name:
        resource.remember_id()
    resource.data = patched


def _apply_strategic(
    resources: list[Resource],
    patch: dict[str, Any],
    target: dict[str, Any] | None,
    options: dict[str, Any],
    where: str,
) -> None:
    if target is None:
        meta = patch.get("metadata") if isinstance(patch.get("metadata"), dict) else {}
        assert isinstance(meta, dict)
        probe = Resource(
            {"apiVersion": patch.get("apiVersion"), "kind": patch.get("kind"), "metadata": meta},
            where,
        )
        wanted = probe.id
        matches = [r for r in resources if any(wanted.same_as(i) for i in (r.id, *r.previous))]
        if not matches:
            raise RenderError(where, f"no resource matches strategic merge patch {wanted}")
        if len(matches) > 1:
            raise RenderError(where, f"several resources match strategic merge patch {wanted}")
    else:
        matches = select(resources, target, where)
    for resource in matches:
        try:
            keep = strategic_merge(resource, patch, options)
        except ValueError as exc:
            raise RenderError(where, str(exc)) from None
        if not keep:
            resources.remove(resource)


def _check_strategic(document: Any, where: str) -> None:
    metadata = document.get("metadata") if isinstance(document, dict) else None
    if not (
        isinstance(document, dict)
        and document.get("kind")
        and isinstance(metadata, dict)
        and metadata.get("name")
    ):
        raise RenderError(
            where,
            "unable to parse a strategic merge or JSON 6902 patch: a strategic merge patch is "
            "an object with kind and metadata.name, a JSON 6902 patch a list of operations",
        )


def _patch_text(entry: dict[str, Any], source: str, read: Reader) -> tuple[bytes, str]:
    if entry.get("path") is not None and entry.get("patch") is not None:
        raise RenderError(source, "a patch entry takes either path or patch, not both")
    if isinstance(entry.get("path"), str):
        return read(entry["path"]), entry["path"]
    if isinstance(entry.get("patch"), str):
        return entry["patch"].encode(), source
    raise RenderError(source, "a patch entry needs path or patch")


def apply_patches(
    resources: list[Resource],
    entries: list[Any],
    source: str,
    read: Reader,
    limits: yamlsafe.Limits,
) -> None:
    for entry in entries:
        if not isinstance(entry, dict):
            raise RenderError(source, "each patches entry must be a mapping")
        text, where = _patch_text(entry, source, read)
        where_name = where if where == source else _joined(source, where)
        documents = [d for d in _documents(text, where_name, limits) if d is not None]
        target = entry.get("target")
        options = entry.get("options") or {}
        if len(documents) == 1 and isinstance(documents[0], list):
            if target is None:
                raise RenderError(where_name, "a JSON 6902 patch needs a target")
            for resource in select(resources, target, where_name):
                _apply_json6902(resource, documents[0], where_name)
            continue
        if target is not None and len(documents) > 1:
            raise RenderError(
                source,
                "several strategic merge patches in one patches entry cannot have a target; "
                "give each its own entry",
            )
        for document in documents:
            _check_strategic(document, where_name)
            _apply_strategic(resources, document, target, options, where_name)


def apply_strategic_merge_list(
    resources: list[Resource],
    entries: list[Any],
    source: str,
    read: Reader,
    limits: yamlsafe.Limits,
) -> None:
    """The deprecated patchesStrategicMerge: file paths, or inline patches."""
    for entry in entries:
        if not isinstance(entry, str):
            raise RenderError(source, "patchesStrategicMerge entries must be strings")
        inline = "\n" in entry or ":" in entry
        text, where = (entry.encode(), source) if inline else (read(entry), _joined(source, entry))
        for document in _documents(text, where, limits):
            if document is None:
                continue
            _check_strategic(document, where)
            _apply_strategic(resources, document, None, {}, where)


def apply_json6902_list(
    resources: list[Resource],
    entries: list[Any],
    source: str,
    read: Reader,
    limits: yamlsafe.Limits,
) -> None:
    """The deprecated patchesJson6902: target plus path or inline patch."""
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("target"), dict):
            raise RenderError(source, "each patchesJson6902 entry needs a target")
        text, where = _patch_text(entry, source, read)
        where_name = where if where == source else _joined(source, where)
        documents = [d for d in _documents(text, where_name, limits) if d is not None]
        operations = documents[0] if len(documents) == 1 else documents
        for resource in select(resources, entry["target"], where_name):
            _apply_json6902(resource, operations, where_name)


def _joined(kustomization: str, relative: str) -> str:
    directory = kustomization.rpartition("/")[0]
    return f"{directory}/{relative}" if directory else relative
