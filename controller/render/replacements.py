"""replacements: copy a field of one object into fields of others (kustomize's successor to
vars), the standard way templates read per-device values.

A replacement names one source object and field (default ``metadata.name``), optionally one
part of it (``delimiter`` and ``index``), and targets: selected objects, minus rejected ones,
and field paths in them (``a.b.[name=x].c``, list indexes, ``*``), optionally created.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from rciots.controller import goscalar, yamlsafe
from rciots.controller.render import documents, kustomization, links, selectors
from rciots.controller.render.api import RenderError
from rciots.controller.render.resource import ResId, Resource, scalar_text

__all__ = ["apply", "split_path"]

Reader = Callable[[str], bytes]


def split_path(path: str) -> list[str]:
    """Split on dots outside brackets: ``a.[name=x.y].b`` -> a, [name=x.y], b."""
    parts, depth, current = [], 0, ""
    for char in path:
        depth += char == "["
        depth -= char == "]"
        if char == "." and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _selected_by(rid: ResId, selector: dict[str, Any]) -> bool:
    gvk = rid.gvk
    return (
        gvk.selected_by(selector.get("group"), selector.get("version"), selector.get("kind"))
        and (not selector.get("name") or selector["name"] == rid.name)
        and (not selector.get("namespace") or selector["namespace"] == rid.namespace)
    )


def _matches_selectors(resource: Resource, selector: dict[str, Any], where: str) -> bool:
    try:
        return selectors.object_matches(resource.metadata, selector)
    except ValueError as exc:
        raise RenderError(where, f"replacements: {exc}") from None


def _key(part: str) -> str:
    """A bracketed segment without '=' is one literal key: [example.com/version]."""
    if part.startswith("[") and part.endswith("]") and "=" not in part:
        return part[1:-1]
    return part


def _lookup(obj: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(obj, dict):
            obj = obj.get(_key(part))
        elif isinstance(obj, list):
            obj = next(iter(_list_items(obj, part)), None)
        else:
            return None
    return obj


def _list_items(items: list[Any], part: str) -> Iterator[Any]:
    if part == "*":
        yield from items
    elif part.startswith("[") and part.endswith("]") and "=" in part:
        key, _, value = part[1:-1].partition("=")
        yield from (i for i in items if isinstance(i, dict) and str(i.get(key)) == value)
    elif part.isdigit() and int(part) < len(items):
        yield items[int(part)]


Slot = tuple[Any, Any]  # (container, key or index)


def _slots(obj: Any, parts: list[str], create: bool) -> list[Slot]:
    """Every (container, key) place the path leads to."""
    places: list[Slot] = []
    head, rest = parts[0], parts[1:]
    if isinstance(obj, dict):
        head = _key(head)
        if head not in obj or obj[head] is None:
            if not create:
                return places
            as_list = bool(rest) and (rest[0].isdigit() or "=" in rest[0])
            obj[head] = ([] if as_list else {}) if rest else None
        if not rest:
            return [(obj, head)]
        return _slots(obj[head], rest, create)
    if isinstance(obj, list):
        if head.isdigit():
            index = int(head)
            if index >= len(obj) and create:
                obj.extend([None] * (index + 1 - len(obj)))
                if rest:
                    obj[index] = [] if rest[0].isdigit() else {}
            if index >= len(obj):
                return places
            return [(obj, index)] if not rest else _slots(obj[index], rest, create)
        if not rest:
            return places
        found = list(_list_items(obj, head))
        if not found and create and head.startswith("[") and "=" in head:
            key, _, value = head[1:-1].partition("=")
            obj.append({key: value})
            found = [obj[-1]]
        for item in found:
            places.extend(_slots(item, rest, create))
    return places


def _source_value(resources: list[Resource], source: dict[str, Any], where: str) -> Any:
    matches = [r for r in resources if any(_selected_by(i, source) for i in r.ids())]
    if not matches:
        raise RenderError(where, f"replacements: nothing selected by source {source}")
    if len(matches) > 1:
        raise RenderError(where, f"replacements: multiple matches for source selector {source}")
    field_path = source.get("fieldPath") or "metadata.name"
    value = _lookup(matches[0].data, split_path(field_path))
    if value is None or value == {} or value == []:
        raise RenderError(
            where, f"replacements: fieldPath `{field_path}` is missing in source {matches[0].id}"
        )
    options = source.get("options") or {}
    if options.get("delimiter"):
        if isinstance(value, dict | list):
            raise RenderError(where, "delimiter option can only be used with scalar nodes")
        pieces = scalar_text(value).split(options["delimiter"])
        index = int(options.get("index") or 0)
        if not 0 <= index < len(pieces):
            raise RenderError(where, f"options.index {index} is out of bounds for {value!r}")
        return pieces[index]
    return value


def _set(slot: Slot, value: Any, options: dict[str, Any], where: str) -> None:
    container, key = slot
    current = container[key]
    if current is None and not isinstance(value, dict | list):
        # a created field is an untagged scalar: its text is read as YAML reads it
        container[key] = goscalar.resolve(scalar_text(value), timestamps=False)[1]
        return
    if options.get("delimiter"):
        if isinstance(current, dict | list):
            raise RenderError(where, "delimiter option can only be used with scalar nodes")
        pieces = scalar_text(current).split(options["delimiter"])
        index = int(options.get("index") or 0)
        if index < 0:
            pieces.insert(0, scalar_text(value))
        elif index >= len(pieces):
            pieces.append(scalar_text(value))
        else:
            pieces[index] = scalar_text(value)
        value = options["delimiter"].join(pieces)
    if not isinstance(value, dict | list) and not isinstance(current, dict | list | None):
        # a scalar target keeps its type and takes the text: "8080" into a port is 8080
        value = _typed_like(current, scalar_text(value), where)
    container[key] = value


def _typed_like(current: Any, text: str, where: str) -> Any:
    if isinstance(current, str):
        return text
    wanted = "bool" if isinstance(current, bool) else "int" if isinstance(current, int) else "float"
    tag, value = goscalar.resolve(text, timestamps=False)
    if tag == wanted or (wanted == "float" and tag == "int"):
        return value
    raise RenderError(where, f"replacements: cannot write {text!r} into a {wanted} field")


def _apply_one(resources: list[Resource], replacement: dict[str, Any], where: str) -> None:
    source = replacement.get("source")
    if not isinstance(source, dict):
        raise RenderError(where, "a replacement needs a source")
    value = _source_value(resources, source, where)
    for target in replacement.get("targets") or []:
        select = target.get("select") if isinstance(target, dict) else None
        if not isinstance(select, dict):
            raise RenderError(where, "target must specify resources to select")
        rejects = target.get("reject") or []
        options = target.get("options") or {}
        for resource in resources:
            ids = resource.ids()
            if not _matches_selectors(resource, select, where):
                continue
            if not any(_selected_by(i, select) for i in ids):
                continue
            if any(
                _matches_selectors(resource, r, where) and any(_selected_by(i, r) for i in ids)
                for r in rejects
            ):
                continue
            before = links.snapshot(resource)
            for field_path in target.get("fieldPaths") or ["metadata.name"]:
                slots = _slots(resource.data, split_path(field_path), bool(options.get("create")))
                if not slots:
                    raise RenderError(
                        where,
                        f"replacements: unable to find field `{field_path}` in {resource.id}"
                        + ("" if options.get("create") else "; set options.create to add it"),
                    )
                for slot in slots:
                    _set(slot, value, options, where)
            links.sync(resource, before)


def apply(
    resources: list[Resource],
    entries: list[Any],
    source: str,
    read: Reader,
    limits: yamlsafe.Limits,
) -> None:
    for entry in entries:
        if not isinstance(entry, dict):
            raise RenderError(source, "each replacements entry must be a mapping")
        if "path" in entry:
            where = kustomization.beside(source, entry["path"])
            for document in documents.load(read(entry["path"]), where, limits):
                for replacement in document if isinstance(document, list) else [document]:
                    if not isinstance(replacement, dict):
                        raise RenderError(where, "each replacement must be a mapping")
                    _apply_one(resources, replacement, where)
        else:
            _apply_one(resources, entry, source)
