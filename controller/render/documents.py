"""YAML documents of the files a build reads, memoized by content.

Device overlays of one fleet repeat the same patch and kustomization texts many times; a text
met a second time is kept, so it is parsed at most twice. Kustomization files are kept from
the first time: the controller builds every device again when a shared template changes, and
each device's own kustomization is unique but unchanged then. Callers get a fresh copy (from
JSON text, which the C-accelerated json module copies fast), so a build may change what it
got. Only small texts are kept, and at most a bounded number (tens of MB for 10,000 devices).
"""

from __future__ import annotations

import json
from typing import Any

from rciots.controller import yamlsafe
from rciots.controller.render.api import RenderError

__all__ = ["load"]

_MAX_CACHED_BYTES = 64 * 1024


def _read(
    data: bytes, limits: yamlsafe.Limits, dialect: yamlsafe.Dialect, patch: bool
) -> list[Any]:
    yaml11 = dialect is yamlsafe.KUSTOMIZATION
    manifest = dialect is yamlsafe.MANIFEST
    # A mapping is a resource or a strategic merge patch, which kustomize reads (and writes
    # out and reads back) with kyaml; a JSON 6902 patch, a list, it reads with go-yaml v2.
    return [
        yamlsafe.to_data(
            d,
            yaml11=yaml11,
            annotation_text=manifest,
            kyaml=manifest and d.kind == "mapping",
            patch=patch,
        )
        for d in yamlsafe.parse(data, limits, dialect)
    ]


_MAX_ENTRIES = 32768
# texts seen once (by hash) and texts seen again (their documents as JSON text)
_seen: set[int] = set()
_cached: dict[tuple[bytes, yamlsafe.Limits, yamlsafe.Dialect, bool], str] = {}


def load(
    data: bytes,
    where: str,
    limits: yamlsafe.Limits,
    dialect: yamlsafe.Dialect = yamlsafe.MANIFEST,
    *,
    patch: bool = False,
) -> list[Any]:
    """The documents of ``data`` as plain data; bad YAML raises RenderError naming ``where``.

    Manifests and patches are read as kustomize reads resources (go-yaml v3); kustomization
    files (``yamlsafe.KUSTOMIZATION``) with YAML 1.1 words, as kustomize reads those.
    ``patch`` reads a patch file (see ``yamlsafe.to_data``).
    """
    try:
        return _load(data, limits, dialect, patch)
    except yamlsafe.YamlError as exc:
        raise RenderError(where, f"line {exc.line} column {exc.column}: {exc.message}") from None


def _load(
    data: bytes, limits: yamlsafe.Limits, dialect: yamlsafe.Dialect, patch: bool
) -> list[Any]:
    if len(data) > _MAX_CACHED_BYTES:
        return _read(data, limits, dialect, patch)
    key = (data, limits, dialect, patch)
    text = _cached.get(key)
    if text is not None:
        loaded: list[Any] = json.loads(text)
        return loaded
    documents = _read(data, limits, dialect, patch)
    fingerprint = hash(key)
    # a text met twice is likely to come again, and a kustomization comes again with the
    # next build of its device: keep it
    if fingerprint in _seen or dialect is yamlsafe.KUSTOMIZATION:
        if len(_cached) >= _MAX_ENTRIES:
            del _cached[next(iter(_cached))]
        _cached[key] = json.dumps(documents)
    else:
        if len(_seen) >= 16 * _MAX_ENTRIES:
            _seen.clear()
        _seen.add(fingerprint)
    return documents
