"""Label and annotation values that kustomize shares between places in one object.

When the labels or annotations transformer adds a key to several places of one object (its
metadata, its selector, its pod template) in one go, kustomize creates one YAML node and puts
that same node in every place it creates. A later in-place write to any of those places (a
strategic merge patch, a replacement, another labels entry for the same key) therefore changes
all of them, which is visible in kustomize's output. A JSON 6902 patch rebuilds the object and
ends the sharing. This module keeps those groups as paths and replays the sharing. Pure.
"""

from __future__ import annotations

from typing import Any

from rciots.controller.render.resource import LinkPath, Resource

__all__ = ["container", "snapshot", "sync"]

_MISSING = object()


def _get(data: Any, path: LinkPath) -> Any:
    for part in path:
        if isinstance(data, dict) and isinstance(part, str):
            data = data.get(part, _MISSING)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return _MISSING
    return data


def container(data: Any, path: LinkPath) -> Any:
    """The mapping or list that holds the value at ``path`` (``_MISSING`` if there is none)."""
    return _get(data, path[:-1])


def _set(data: Any, path: LinkPath, value: Any) -> None:
    holder = container(data, path)
    if isinstance(holder, dict) and path[-1] in holder:
        holder[path[-1]] = value


def snapshot(resource: Resource) -> list[list[Any]]:
    """The values of every linked place, to compare with after a change."""
    return [[_get(resource.data, path) for path in group] for group in resource.links]


def sync(resource: Resource, before: list[list[Any]]) -> None:
    """Where one place of a group was written in place, write the others too."""
    for group, old_values in zip(resource.links, before, strict=True):
        for path, old in zip(group, old_values, strict=True):
            new = _get(resource.data, path)
            if new is not _MISSING and old is not _MISSING and new != old:
                for other in group:
                    if other != path:
                        _set(resource.data, other, new)
                break
