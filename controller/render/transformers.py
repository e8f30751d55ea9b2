"""kustomize's built-in transformers for names, namespaces, labels, annotations, images and
replica counts, applied to a kustomization's accumulated resources in kustomize's order.

Pure functions over lists of ``Resource``; errors name the kustomization file.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

from rciots.controller.render import fieldspecs, links
from rciots.controller.render.api import RenderError
from rciots.controller.render.fieldspecs import FieldSpec
from rciots.controller.render.resource import Gvk, LinkPath, Resource, is_cluster_scoped

__all__ = [
    "set_annotations",
    "set_image",
    "set_labels",
    "set_name_prefix_suffix",
    "set_namespace",
    "set_replica_count",
]

_SKIP_PREFIX: tuple[tuple[str, str], ...] = (
    ("", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("", "Namespace"),
)


_SKIP_PREFIX_KINDS = frozenset(kind for _, kind in _SKIP_PREFIX)


def set_name_prefix_suffix(resources: Iterable[Resource], prefix: str, suffix: str) -> None:
    if not prefix and not suffix:
        return
    for resource in resources:
        original = resource.original_id().gvk
        if original.kind in _SKIP_PREFIX_KINDS and any(
            original.selected_by(g, "", k) for g, k in _SKIP_PREFIX
        ):
            continue
        for affix, is_prefix in ((prefix, True), (suffix, False)):
            if not affix:
                continue
            (resource.prefixes if is_prefix else resource.suffixes).append(affix)
            resource.remember_id()
            name = resource.name
            resource.set_name(affix + name if is_prefix else name + affix)


_NAMESPACE = fieldspecs.SpecTable(fieldspecs.NAMESPACE)
_COMMON_LABELS = fieldspecs.SpecTable(fieldspecs.COMMON_LABELS)
_ANNOTATIONS = fieldspecs.SpecTable(fieldspecs.ANNOTATIONS)
_REPLICAS = fieldspecs.SpecTable(fieldspecs.REPLICAS)


def set_namespace(resources: list[Resource], namespace: str, source: str) -> None:
    for resource in resources:
        resource.remember_id()
        gvk = resource.gvk
        if not is_cluster_scoped(gvk.kind):
            resource.metadata["namespace"] = namespace
        for spec in _NAMESPACE.for_gvk(gvk):
            if spec.path == "metadata/name" and resource.data.get("apiVersion") != "v1":
                continue
            for mapping, name, _ in fieldspecs.places(resource.data, spec.parts(), spec.create):
                mapping[name] = namespace
        if gvk.kind in ("RoleBinding", "ClusterRoleBinding"):
            for subject in resource.data.get("subjects") or []:
                if isinstance(subject, dict) and subject.get("name") == "default":
                    subject["namespace"] = namespace
    seen: set[tuple[Gvk, str, str]] = set()
    for resource in resources:
        key = (resource.gvk, resource.name, resource.id.effective_namespace)
        if key in seen:
            raise RenderError(source, f"namespace {namespace!r} makes two objects {resource.id}")
        seen.add(key)


def _set_entries(
    resources: Iterable[Resource],
    entries: dict[str, str],
    specs: fieldspecs.SpecTable,
    source: str,
) -> None:
    if not entries:
        return
    items = entries.items()
    for resource in resources:
        applicable = specs.for_gvk(resource.gvk)
        if not applicable:
            continue
        before = links.snapshot(resource) if resource.links else None
        # the places where each entry was added (rather than changed): linked when several
        created: dict[str, list[LinkPath]] = {}
        for spec in applicable:
            for mapping, key, path in fieldspecs.places(resource.data, spec.parts(), spec.create):
                target = mapping.get(key)
                if target is None:
                    target = mapping[key] = {}
                if not isinstance(target, dict):
                    raise RenderError(source, f"{key} of {resource.id} is not a mapping")
                for name, value in items:
                    if name not in target:
                        created.setdefault(name, []).append((*path, name))
                    target[name] = value
        if before is not None:
            links.sync(resource, before)
        for name in entries:
            group = created.get(name)
            if group is not None and len(group) > 1:
                resource.links.append(group)


def set_labels(
    resources: list[Resource], labels: list[Any], common: dict[str, str], source: str
) -> None:
    """The kustomization's `labels` entries, then its commonLabels."""
    for entry in labels:
        if not isinstance(entry, dict):
            raise RenderError(source, "each labels entry must be a mapping with pairs")
        pairs = entry.get("pairs") or {}
        clash = sorted(set(pairs) & set(common))
        if clash:
            raise RenderError(
                source, f"label name '{clash[0]}' exists in both commonLabels and labels"
            )
        fields = tuple(_field_spec(fs, source) for fs in entry.get("fields") or [])
        table = _labels_table(
            fields, bool(entry.get("includeSelectors")), bool(entry.get("includeTemplates"))
        )
        _set_entries(resources, _string_map(pairs, "labels.pairs", source), table, source)
    _set_entries(resources, common, _COMMON_LABELS, source)


@functools.lru_cache(maxsize=256)
def _labels_table(
    fields: tuple[FieldSpec, ...], selectors: bool, templates: bool
) -> fieldspecs.SpecTable:
    """Where one `labels` entry puts its pairs: its own fields, then the selectors and pod
    templates (includeSelectors), or the pod templates (includeTemplates) and metadata."""
    specs = list(fields)
    if selectors:
        specs += fieldspecs.COMMON_LABELS
    else:
        if templates:
            specs += fieldspecs.TEMPLATE_LABELS
        specs.append(FieldSpec("metadata/labels", create=True))
    return fieldspecs.SpecTable(_unique(specs))


def set_annotations(resources: list[Resource], annotations: dict[str, str], source: str) -> None:
    _set_entries(resources, annotations, _ANNOTATIONS, source)


def _unique(specs: list[FieldSpec]) -> list[FieldSpec]:
    seen: set[FieldSpec] = set()
    result = []
    for spec in specs:
        if spec not in seen:
            seen.add(spec)
            result.append(spec)
    return result


def _string_map(values: Any, what: str, source: str) -> dict[str, str]:
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise RenderError(source, f"{what} must map names to strings; quote the values")
    return values


def _field_spec(raw: Any, source: str) -> FieldSpec:
    if not isinstance(raw, dict) or not isinstance(raw.get("path"), str):
        raise RenderError(source, "a field spec needs a path")
    return FieldSpec(
        raw["path"],
        raw.get("kind") or "",
        raw.get("group") or "",
        raw.get("version") or "",
        bool(raw.get("create")),
    )


# -- images -------------------------------------------------------------------------------


def _split_image(image: str) -> tuple[str, str, str]:
    """(name, tag, digest), the way kustomize splits an image reference."""
    slash = image.find("/")
    offset = slash if slash > 0 else 0
    search = image[offset:]
    at, colon = search.find("@"), search.find(":")
    if colon < 0 and at < 0:
        return image, "", ""
    if at >= 0 and (at < colon or colon < 0):
        return image[: offset + at], "", image[offset + at + 1 :]
    if at >= 0 and colon >= 0:
        return (
            image[: offset + colon],
            image[offset + colon + 1 : offset + at],
            image[offset + at + 1 :],
        )
    return image[: offset + colon], image[offset + colon + 1 :], ""


def _image_pattern(name: str) -> re.Pattern[str] | None:
    """What an ``images`` entry's name matches: kustomize puts the configured name into a
    regular expression unescaped (None when that is not a valid expression)."""
    try:
        return re.compile("^" + name + r"(:[a-zA-Z0-9_.{}-]*)?(@sha256:[a-zA-Z0-9_.{}-]*)?$")
    except re.error:
        return None


def _new_image(image: str, rule: dict[str, Any]) -> str:
    name, tag, digest = _split_image(image)
    new_tag = str(rule.get("newTag") or "")
    new_digest = str(rule.get("digest") or "")
    name = str(rule.get("newName") or "") or name
    if new_tag and new_digest:
        tag, digest = new_tag, new_digest
    elif new_tag:
        tag, digest = new_tag, ""
    elif new_digest:
        tag, digest = "", new_digest
    elif rule.get("tagSuffix"):
        tag, digest = tag + str(rule["tagSuffix"]), ""
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _containers_anywhere(obj: Any, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every element of a `containers` or `initContainers` list, at any depth, added to
    ``found`` (the depth is bounded by the reader's nesting limit)."""
    if type(obj) is list:
        for item in obj:
            if type(item) is dict or type(item) is list:
                _containers_anywhere(item, found)
        return found
    for key, value in obj.items():
        kind = type(value)
        if kind is dict:
            _containers_anywhere(value, found)
        elif kind is list:
            if key == "containers" or key == "initContainers":
                found.extend(item for item in value if type(item) is dict)
            _containers_anywhere(value, found)
    return found


_IMAGE_FIELDS = tuple(
    FieldSpec(f"{prefix}{field}[]/image")
    for prefix in ("spec/", "spec/template/spec/")
    for field in ("containers", "initContainers")
)


def set_image(resources: list[Resource], rule: Any, source: str) -> None:
    """One entry of ``images``: a new name, tag or digest for the images it names."""
    if not isinstance(rule, dict) or not isinstance(rule.get("name"), str):
        raise RenderError(source, "each images entry needs a name")
    for key in ("newName", "newTag", "digest", "tagSuffix"):
        if rule.get(key) is not None and not isinstance(rule[key], str):
            raise RenderError(source, f"images {rule['name']}: {key} must be a string; quote it")
    pattern = _image_pattern(rule["name"])
    if pattern is None:
        return
    for resource in resources:
        if resource.kind == "CustomResourceDefinition":
            continue
        again = False
        for container in _containers_anywhere(resource.data, []):
            image = container.get("image")
            if isinstance(image, str) and pattern.match(image):
                container["image"] = new = _new_image(image, rule)
                again = again or (pattern.match(new) is not None and _new_image(new, rule) != new)
        if not again:
            continue
        # kustomize then runs the same update over its image field specs (which hold some of
        # the containers just updated): a second update changes nothing, but for a tagSuffix
        # (added a second time) or an image that does not read back as it was written
        for spec in _IMAGE_FIELDS:
            for mapping, key, _ in fieldspecs.places(resource.data, spec.parts(), spec.create):
                image = mapping[key]
                if isinstance(image, str) and pattern.match(image):
                    mapping[key] = _new_image(image, rule)


def set_replica_count(resources: list[Resource], rule: Any, source: str) -> None:
    """One entry of ``replicas``: the count for the workloads of that name."""
    if not isinstance(rule, dict) or not isinstance(rule.get("name"), str):
        raise RenderError(source, "each replicas entry needs a name and a count")
    count = rule.get("count") or 0  # (decoded as Go does: a missing or null count is 0)
    if not isinstance(count, int) or isinstance(count, bool):
        raise RenderError(source, f"replicas count for {rule['name']} must be a number")
    name = rule["name"]
    found = False
    for resource in resources:
        if resource.name != name and all(p.name != name for p in resource.previous):
            continue
        # the specs that apply to any id of this name (by identity: the table's own objects)
        applicable = {
            id(s) for i in resource.ids() if i.name == name for s in _REPLICAS.for_gvk(i.gvk)
        }
        for spec in _REPLICAS.specs:
            if id(spec) in applicable:
                found = True
                for mapping, key, _ in fieldspecs.places(resource.data, spec.parts(), spec.create):
                    mapping[key] = count
    if not found:
        raise RenderError(
            source,
            f"replicas: no Deployment, ReplicationController, ReplicaSet or StatefulSet "
            f"is named {name}",
        )
