"""buildMetadata: where each object came from and which transformers touched it.

With ``buildMetadata`` in the top kustomization, kustomize records for every object its
origin (the file it was read from, or the generator that made it) and, after each configured
transformer, that transformer; ``originAnnotations`` and ``transformerAnnotations`` print
them as annotations, ``managedByLabel`` adds a label. Paths are relative to the top
kustomization's directory. Pure.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from rciots.controller.render.api import RenderError
from rciots.controller.render.resource import Origin, Resource

__all__ = ["OPTIONS", "annotate", "builtin", "from_file", "note"]

OPTIONS = ("originAnnotations", "transformerAnnotations", "managedByLabel")
ORIGIN_ANNOTATION = "config.kubernetes.io/origin"
TRANSFORMATIONS_ANNOTATION = "alpha.config.kubernetes.io/transformations"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
# What the kustomize built into kubectl 1.32 writes; a standalone kustomize writes its version.
MANAGED_BY_VALUE = "kustomize-(devel)"


def relative(path: str, top: str) -> str:
    return posixpath.relpath(path or ".", top or ".")


def from_file(path: str, top: str) -> Origin:
    return (("path", relative(path, top)),)


def builtin(kustomization: str, top: str, kind: str) -> Origin:
    return (("configuredIn", relative(kustomization, top)), ("kind", kind))


def note(resources: Iterable[Resource], origin: Origin) -> None:
    """A configured transformer ran: record it on every object (as the origin of objects
    that have none, as kustomize assumes it made them)."""
    for resource in resources:
        if resource.origin is None:
            resource.origin = origin
        else:
            resource.transformations.append(origin)


def _text(origin: Origin, indent: str) -> list[str]:
    fields = dict(origin)
    if "path" in fields:
        return [f"{indent}path: {fields['path']}"]
    return [
        f"{indent}configuredIn: {fields['configuredIn']}",
        f"{indent}configuredBy:",
        f"{indent}  apiVersion: builtin",
        f"{indent}  kind: {fields['kind']}",
    ]


def annotate(resources: Iterable[Resource], options: list[str], source: str) -> None:
    for option in options:
        if option not in OPTIONS:
            raise RenderError(
                source, f"unknown buildMetadata option {option!r}: use {', '.join(OPTIONS)}"
            )
    for resource in resources:
        metadata = resource.metadata
        if "originAnnotations" in options and resource.origin is not None:
            text = "\n".join(_text(resource.origin, "")) + "\n"
            metadata.setdefault("annotations", {})[ORIGIN_ANNOTATION] = text
        if "transformerAnnotations" in options and resource.transformations:
            lines: list[str] = []
            for origin in resource.transformations:
                entry = _text(origin, "  ")
                lines.append("- " + entry[0][2:])
                lines.extend(entry[1:])
            metadata.setdefault("annotations", {})[TRANSFORMATIONS_ANNOTATION] = (
                "\n".join(lines) + "\n"
            )
        if "managedByLabel" in options:
            metadata.setdefault("labels", {})[MANAGED_BY_LABEL] = MANAGED_BY_VALUE
