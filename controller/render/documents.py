"""YAML documents of the files a build reads, memoized by content.

Device overlays of one fleet repeat the same patch and kustomization texts many times; each
distinct text is parsed once. Callers get a fresh copy (from JSON text, which the C-accelerated
json module copies fast), so a build may change what it got. Only small texts are kept.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from rciots.controller import yamlsafe

__all__ = ["load"]

_MAX_CACHED_BYTES = 64 * 1024


def _read(data: bytes, limits: yamlsafe.Limits, dialect: yamlsafe.Dialect) -> list[Any]:
    yaml11 = dialect is yamlsafe.KUSTOMIZATION
    text = dialect is yamlsafe.MANIFEST
    return [
        yamlsafe.to_data(d, yaml11=yaml11, annotation_text=text)
        for d in yamlsafe.parse(data, limits, dialect)
    ]


@functools.lru_cache(maxsize=4096)
def _as_json(data: bytes, limits: yamlsafe.Limits, dialect: yamlsafe.Dialect) -> str:
    return json.dumps(_read(data, limits, dialect))


def load(
    data: bytes, limits: yamlsafe.Limits, dialect: yamlsafe.Dialect = yamlsafe.MANIFEST
) -> list[Any]:
    """The documents of ``data`` as plain data; raises yamlsafe.YamlError.

    Manifests and patches are read as kustomize reads resources (go-yaml v3); kustomization
    files (``yamlsafe.KUSTOMIZATION``) with YAML 1.1 words, as kustomize reads those.
    """
    if len(data) > _MAX_CACHED_BYTES:
        return _read(data, limits, dialect)
    loaded: list[Any] = json.loads(_as_json(data, limits, dialect))
    return loaded
