"""JSON 6902 patches with the semantics of the library kustomize uses (evanphx/json-patch v4).

It differs from a strict RFC 6902 reading in ways patches in the wild rely on: ``replace`` of
a missing key in an existing mapping sets it; list indexes may be negative (from the end) and
may have leading zeros; but every parent on a path must exist, and the whole document cannot
be replaced. Pure; raises PatchError with kustomize's wording.
"""

from __future__ import annotations

from typing import Any

from rciots.controller.render.resource import copy_data

__all__ = ["PatchError", "apply"]

_MISSING = object()


class PatchError(ValueError):
    pass


def _pointer(path: Any, op: str) -> list[str]:
    if not isinstance(path, str):
        raise PatchError(f"{op} operation needs a path")
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"{op} operation: path {path!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(document: Any, parts: list[str], op: str, path: str) -> Any:
    """The container holding the last part of ``parts``; PatchError when a parent is missing."""
    if not parts:
        raise PatchError(f'{op} operation does not apply: doc is missing path: "{path}"')
    current = document
    for part in parts[:-1]:
        current = _get(current, part)
        if current is _MISSING or not isinstance(current, dict | list):
            raise PatchError(f"{op} operation does not apply: doc is missing path: {path}")
    return current


def _index(items: list[Any], key: str, *, adding: bool) -> int:
    try:
        index = int(key)  # leading zeros are accepted, as Go's Atoi does
    except ValueError:
        raise PatchError(f"Unable to access invalid index: {key}") from None
    size = len(items) + (1 if adding else 0)
    if index < 0:
        index += size
    if not 0 <= index < size:
        raise PatchError(f"Unable to access invalid index: {key}")
    return index


def _get(container: Any, key: str) -> Any:
    if isinstance(container, dict):
        return container.get(key, _MISSING)
    if isinstance(container, list):
        try:
            return container[_index(container, key, adding=False)]
        except PatchError:
            return _MISSING
    return _MISSING


def _add(document: Any, parts: list[str], value: Any, op: str, path: str) -> None:
    container = _parent(document, parts, op, path)
    key = parts[-1]
    if isinstance(container, dict):
        container[key] = value
    elif key == "-":
        container.append(value)
    else:
        container.insert(_index(container, key, adding=True), value)


def _remove(document: Any, parts: list[str], op: str, path: str) -> Any:
    container = _parent(document, parts, op, path)
    key = parts[-1]
    if isinstance(container, dict):
        if key not in container:
            raise PatchError(f"{op} operation does not apply: doc is missing key: {path}")
        return container.pop(key)
    try:
        return container.pop(_index(container, key, adding=False))
    except PatchError:
        raise PatchError(f"{op} operation does not apply: doc is missing key: {path}") from None


def _remove_index(items: list[Any], key: str, path: str) -> int:
    try:
        return _index(items, key, adding=False)
    except PatchError:
        raise PatchError(f"replace operation does not apply: doc is missing key: {path}") from None


def _value(document: Any, parts: list[str], op: str, path: str) -> Any:
    current = document
    for part in parts:
        current = _get(current, part)
        if current is _MISSING:
            raise PatchError(f"{op} operation does not apply: doc is missing path: {path}")
    return current


def apply(document: dict[str, Any], operations: list[Any]) -> None:
    """Apply ``operations`` to ``document`` in place."""
    for operation in operations:
        if not isinstance(operation, dict):
            raise PatchError("each JSON patch operation must be a mapping")
        op = operation.get("op")
        path = operation.get("path")
        parts = _pointer(path, str(op))
        if op == "add":
            _add(document, parts, copy_data(operation.get("value")), op, str(path))
        elif op == "remove":
            _remove(document, parts, op, str(path))
        elif op == "replace":
            container = _parent(document, parts, op, str(path))
            if isinstance(container, list):
                index = _remove_index(container, parts[-1], str(path))
                container[index] = copy_data(operation.get("value"))
            else:  # a missing key in a mapping is set, not refused
                container[parts[-1]] = copy_data(operation.get("value"))
        elif op in ("move", "copy"):
            source = _pointer(operation.get("from"), op)
            source_path = str(operation.get("from"))
            if op == "move":
                value = _remove(document, source, op, source_path)
            else:
                value = copy_data(_value(document, source, op, source_path))
            _add(document, parts, value, op, str(path))
        elif op == "test":
            actual = _value(document, parts, op, str(path))
            if actual != operation.get("value"):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(
                f"unexpected operation {op!r}: use add, remove, replace, move, copy or test"
            )
