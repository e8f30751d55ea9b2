"""Patches and their targets: strategic merge (``strategic``), JSON 6902 (``jsonpatch6902``),
in the forms kustomize accepts (``patches`` entries with a path or an inline patch and an
optional target; the deprecated ``patchesStrategicMerge`` and ``patchesJson6902``).

A target selects objects by group, version, kind, name and namespace (regular expressions
matched against the current and the original id) and by label and annotation selectors.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from rciots.controller import yamlsafe
from rciots.controller.render import (
    documents,
    jsonpatch6902,
    kustomization,
    links,
    replacements,
    selectors,
    strategic,
)
from rciots.controller.render.api import RenderError
from rciots.controller.render.resource import Resource, copy_data

__all__ = ["apply_json6902", "apply_patch", "apply_strategic_merge_list", "select"]

Reader = Callable[[str], bytes]


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
    earlier = resource.id
    before = links.snapshot(resource)
    if resource.untagged:
        # (the walk rewrites the fields it reaches before it merges the patch's over them)
        target = resource.data
        replacements.quote_untagged(resource, lambda path: strategic.walks_to(target, path))
    try:
        # in place: a failing merge fails the whole build, so nothing half-merged is kept
        merged = strategic.merge_object(resource.data, patch)
    except strategic.MergeError as exc:
        raise ValueError(f"{earlier}: {exc}") from None
    if merged is strategic.DELETE:
        return False
    resource.data = merged
    if resource.name != earlier.name:
        resource.remember_id(earlier)
    links.sync(resource, before)
    return True


# -- targets ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str] | None:
    """A target's field as kustomize reads it: a regular expression for the whole value (None
    when it is not a valid one, which matches nothing)."""
    try:
        return re.compile(f"(?:{pattern})")
    except re.error:
        return None


def _target_values(resource: Resource, field: str) -> tuple[str, ...]:
    """What a target's field is matched against: the current and the original id's name and
    namespace, the group, version and kind."""
    if field == "name":
        return resource.original_id().name, resource.name
    if field == "namespace":
        return (
            resource.original_id().effective_namespace,
            resource.id.effective_namespace,
        )
    gvk = resource.gvk
    return (gvk.group if field == "group" else gvk.version if field == "version" else gvk.kind,)


def select(resources: list[Resource], target: dict[str, Any], source: str) -> list[Resource]:
    """The resources a patch or replacement target selects, as kustomize's selector does."""
    if not isinstance(target, dict):
        raise RenderError(source, "a target must be a mapping")
    wanted = [
        (field, _regex(str(target[field])))
        for field in ("kind", "name", "group", "version", "namespace")
        if target.get(field)
    ]
    chosen = []
    for resource in resources:
        if not all(
            pattern is not None
            and any(pattern.fullmatch(value) for value in _target_values(resource, field))
            for field, pattern in wanted
        ):
            continue
        try:
            if not selectors.object_matches(resource.metadata, target):
                continue
        except ValueError as exc:
            raise RenderError(source, f"target of a patch: {exc}") from None
        chosen.append(resource)
    return chosen


# -- reading and applying -----------------------------------------------------------------


def _patch_json6902(resource: Resource, operations: Any, where: str) -> None:
    if not isinstance(operations, list):
        raise RenderError(where, "a JSON 6902 patch must be a list of operations")
    patched = resource.data  # in place: a failing patch fails the whole build
    before = resource.id
    # during a build kustomize keeps internal annotations on every object, so an
    # annotations map always exists for a patch to reach into
    metadata = patched.get("metadata")
    created = False
    if isinstance(metadata, dict) and "annotations" not in metadata:
        metadata["annotations"] = {}
        created = True
    try:
        jsonpatch6902.apply(patched, operations)
    except jsonpatch6902.PatchError as exc:
        raise RenderError(where, f"JSON patch on {before}: {exc}") from None
    metadata = patched.get("metadata")
    if created and isinstance(metadata, dict) and metadata.get("annotations") == {}:
        del metadata["annotations"]
    if resource.name != before.name:
        resource.remember_id(before)
    # kustomize rebuilds the object from JSON: nothing stays shared, every scalar is typed
    resource.links.clear()
    resource.untagged.clear()


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
        matches = [r for r in resources if r.known_as(wanted)]
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


def _load_patch(
    entry: dict[str, Any], source: str, read: Reader, limits: yamlsafe.Limits
) -> tuple[list[Any], str]:
    """The documents (nulls dropped) of a patch given by ``path`` or inline as ``patch``, and
    the file they came from: the patch file, or the kustomization for an inline patch."""
    if entry.get("path") is not None and entry.get("patch") is not None:
        raise RenderError(source, "a patch entry takes either path or patch, not both")
    if isinstance(entry.get("path"), str):
        text, where = read(entry["path"]), kustomization.beside(source, entry["path"])
    elif isinstance(entry.get("patch"), str):
        text, where = entry["patch"].encode(), source
    else:
        raise RenderError(source, "a patch entry needs path or patch")
    return [d for d in documents.load(text, where, limits, patch=True) if d is not None], where


def apply_patch(
    resources: list[Resource],
    entry: Any,
    source: str,
    read: Reader,
    limits: yamlsafe.Limits,
) -> None:
    """One entry of ``patches``: a strategic merge or JSON 6902 patch, with a target or not."""
    if not isinstance(entry, dict):
        raise RenderError(source, "each patches entry must be a mapping")
    loaded, where = _load_patch(entry, source, read, limits)
    target = entry.get("target")
    options = entry.get("options") or {}
    if len(loaded) == 1 and isinstance(loaded[0], list):
        if target is None:
            raise RenderError(where, "a JSON 6902 patch needs a target")
        for resource in select(resources, target, where):
            _patch_json6902(resource, loaded[0], where)
        return
    if target is not None and len(loaded) > 1:
        raise RenderError(
            source,
            "several strategic merge patches in one patches entry cannot have a target; "
            "give each its own entry",
        )
    for document in loaded:
        _check_strategic(document, where)
        _apply_strategic(resources, document, target, options, where)


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
        text, where = (
            (entry.encode(), source)
            if inline
            else (read(entry), kustomization.beside(source, entry))
        )
        for document in documents.load(text, where, limits, patch=True):
            if document is None:
                continue
            _check_strategic(document, where)
            _apply_strategic(resources, document, None, {}, where)


def apply_json6902(
    resources: list[Resource],
    entry: Any,
    source: str,
    read: Reader,
    limits: yamlsafe.Limits,
) -> None:
    """One entry of the deprecated patchesJson6902: target plus path or inline patch."""
    if not isinstance(entry, dict) or not isinstance(entry.get("target"), dict):
        raise RenderError(source, "each patchesJson6902 entry needs a target")
    loaded, where = _load_patch(entry, source, read, limits)
    operations = loaded[0] if len(loaded) == 1 else loaded
    for resource in select(resources, entry["target"], where):
        _patch_json6902(resource, operations, where)
