"""The renderer's public surface: ``build``, its result and its error."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RenderError", "Rendered", "build"]


class RenderError(Exception):
    """A kustomization that cannot be built; ``path`` is the file to look at."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


@dataclass(frozen=True)
class Rendered:
    resources: list[dict[str, Any]]  # in output order, as built (`yaml` is what kustomize prints)
    yaml: str  # exactly as `kustomize build` prints it
    digest: str  # "sha256:" + hex sha256 of the yaml text, UTF-8
    inputs: frozenset[str]  # the snapshot paths this build read


def build(
    snapshot: Mapping[str, bytes], entry: str, *, root: str = "", cache: Any = None
) -> Rendered:
    """Build the kustomization in directory ``entry`` of ``snapshot``.

    Two load restrictions hold, as in kustomize plus one: a kustomization reads files
    (resources, patches, generator inputs) only at or below its own directory, though it may
    name other kustomization directories as resources; and nothing outside ``root`` is read at
    all (the controller passes the tenant's directory; "" is the whole snapshot). Paths use
    ``/`` and are relative to the snapshot's top; ``entry`` "" or "." is the top itself.
    ``cache`` (an ``engine.Cache``) shares built bases between builds.
    """
    from rciots.controller.render import engine

    return engine.build(snapshot, entry, root=root, cache=cache)
