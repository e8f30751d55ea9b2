"""Native, in-process Kustomize: a snapshot and an entry directory in, manifests out.

Position in the flow: source (snapshot) -> fleet model -> **render** -> desired state.
Pure: no subprocess, no network, no filesystem; it reads only the snapshot (repo-relative
path -> bytes), and only below the load-restrictor root.

The output is what ``kustomize build`` (v5) prints for the supported features, byte for byte:
kustomize re-serializes every resource through JSON and go-yaml v2, so resources are handled
here as plain JSON-like data and ``emit`` reproduces that printer.
"""

from __future__ import annotations

from rciots.controller.render.api import Rendered, RenderError
from rciots.controller.render.engine import build

__all__ = ["RenderError", "Rendered", "build"]
