"""The renderer's result and its error (``engine.build`` makes the one, raises the other)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RenderError", "Rendered"]


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
