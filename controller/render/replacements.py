"""replacements: copy a field of one object into fields of others (kustomize's successor to
vars), the standard way templates read per-device values.

A replacement names one source object and field (default ``metadata.name``), optionally one
part of it (``delimiter`` and ``index``), and targets: selected objects, minus rejected ones,
and field paths in them (``a.b.[name=x].c``, list indexes, ``*``), optionally created.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from rciots.controller import goscalar, yamlsafe
from rciots.controller.render import documents, kustomization, links, selectors
from rciots.controller.render.api import RenderError
from rciots.controller.render.resource import LinkPath, ResId, Resource, copy_data, scalar_text

__all__ = ["apply", "quote_untagged", "split_path"]

Reader = Callable[[str], bytes]


def split_path(path: str) -> list[str]:
    """A field path's parts, as kustomize splits it: on dots, but not on an escaped ``\\.``
    nor inside brackets. A bracketed part holding ``=`` (``[name=a.b]``) is a list item
    selector and keeps its brackets; other brackets that held dots only group a key
    (``[example.com/version]`` is that key), while a bracketed part without dots is left as
    it is (and, having no ``=``, fails where it is used)."""
    parts: list[str] = []
    for piece in path.split("."):
        if parts and parts[-1].endswith("\\"):
            parts[-1] = parts[-1][:-1] + "." + piece
        else:
            parts.append(piece)
    result: list[str] = []
    index = 0
    while index < len(parts):
        part = parts[index]
        if part.startswith("[") and not part.endswith("]"):
            group = [part]
            while index < len(parts) - 1:
                index += 1
                group.append(parts[index])
                if parts[index].endswith("]"):
                    break
            joined = ".".join(group)
            result.append(joined if "=" in joined else joined.strip("[]"))
        else:
            result.append(part)
        index += 1
    return result


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


class _PathError(ValueError):
    """A field path that does not fit the object (kyaml's message)."""


def _node_kind(value: Any) -> str:
    return (
        "MappingNode"
        if isinstance(value, dict)
        else ("SequenceNode" if isinstance(value, list) else "ScalarNode")
    )


def _expect(value: Any, kind: type) -> Any:
    if not isinstance(value, kind):
        wanted = "MappingNode" if kind is dict else "SequenceNode"
        raise _PathError(f"wrong node kind: expected {wanted} but got {_node_kind(value)}")
    return value


def _is_index(part: str) -> bool:
    """Go's strconv.Atoi succeeds (a sign and decimal digits)."""
    digits = part[1:] if part[:1] in "+-" else part
    return digits.isascii() and digits.isdigit()


def _item_selector(part: str) -> tuple[str, str] | None:
    """``[name=value]`` -> (name, value); None when ``part`` is not bracketed."""
    if not (part.startswith("[") and part.endswith("]")):
        return None
    name, equals, value = part[1:-1].partition("=")
    if not equals:
        raise _PathError("list path element must contain fieldName=fieldValue for element to match")
    return name, value


def _lookup(obj: Any, parts: list[str]) -> Any:
    """The value a source's field path leads to (None when missing), as kyaml's PathGetter
    finds it: list items by index (``-`` is the last) or by an exact ``[name=value]``."""
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if obj is None:
            return None
        selector = _item_selector(part)
        if _is_index(part):
            if int(part) < 0:
                raise _PathError(f"array index {int(part)} cannot be negative")
            items = _expect(obj, list)
            obj = items[int(part)] if int(part) < len(items) else None
        elif part == "-":
            items = _expect(obj, list)
            obj = items[-1] if items else None
        elif part == "*":
            raise _PathError("wildcard is not supported in PathGetter")
        elif selector is not None:
            name, value = selector
            items = _expect(obj, list)
            obj = next((i for i in items if _item_text(i, name) == value), None)
        else:
            obj = _expect(obj, dict).get(part)
    return obj


def _item_text(item: Any, name: str) -> str | None:
    """The text a list item is matched on: its field ``name``, or itself when ``name`` is
    empty (a list of scalars); None when it has no such field."""
    if not name:
        return None if isinstance(item, dict | list) else scalar_text(item)
    if not isinstance(item, dict) or item.get(name) is None:
        return None
    value = item[name]
    return None if isinstance(value, dict | list) else scalar_text(value)


Slot = tuple[Any, Any, LinkPath]  # (container, key or index, path from the object's top)


def _new_node(following: str, leaf: Any) -> Any:
    """The empty node kyaml creates for a missing path part: a list before an index or an
    item selector, the value's kind at the end, a mapping otherwise."""
    if following.startswith("[") and following.endswith("]"):
        return []
    if _is_index(following) and int(following) >= 0:
        return []
    if following == "":
        return [] if isinstance(leaf, list) else {} if isinstance(leaf, dict) else None
    return {}


def _slots(
    container: Any, key: Any, parts: list[str], create: bool, leaf: Any, path: LinkPath = ()
) -> list[Slot]:
    """Every (container, key) place a target's field path leads to, as kyaml's PathMatcher
    finds them: ``[name=value]`` matches every item whose field the value matches as a
    regular expression; ``*`` every item; a number one index. With ``create``, missing
    fields are added, an item selector adds the item, and an index one past the end
    appends."""
    if not parts:
        return [(container, key, path)]
    node = container[key]
    part, rest = parts[0], parts[1:]
    following = rest[0] if rest else ""
    places: list[Slot] = []
    selector = _item_selector(part)
    if _is_index(part) and int(part) >= 0:
        items = _expect(node, list)
        index = int(part)
        if index == len(items) and create:
            items.append(_new_node(following, leaf))
        if index >= len(items):
            raise _PathError(f"index {index} specified but only {len(items)} elements found")
        return _slots(items, index, rest, create, leaf, (*path, index))
    if selector is not None:
        name, pattern = selector
        items = _expect(node, list)
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise _PathError(f"invalid regular expression {pattern!r}: {exc}") from None

        def matching() -> list[int]:
            return [
                index
                for index, item in enumerate(items)
                if (text := _item_text(item, name)) is not None and regex.search(text)
            ]

        found = matching()
        if not found and create:
            items.append({name: pattern} if name else pattern)
            found = matching()
        for index in found:
            places.extend(_slots(items, index, rest, create, leaf, (*path, index)))
        return places
    if part == "*":
        items = _expect(node, list)
        for index in range(len(items)):
            places.extend(_slots(items, index, rest, create, leaf, (*path, index)))
        return places
    if node is None:
        if not create:
            return places
        node = container[key] = {}  # a null field on the way becomes a mapping
    mapping = _expect(node, dict)
    if mapping.get(part) is None:
        if not create:
            return places
        mapping[part] = _new_node(following, leaf)
    return _slots(mapping, part, rest, create, leaf, (*path, part))


def _source_value(resources: list[Resource], source: dict[str, Any], where: str) -> Any:
    matches = [r for r in resources if any(_selected_by(i, source) for i in r.ids())]
    if not matches:
        raise RenderError(where, f"replacements: nothing selected by source {source}")
    if len(matches) > 1:
        raise RenderError(where, f"replacements: multiple matches for source selector {source}")
    field_path = source.get("fieldPath") or "metadata.name"
    try:
        value = _lookup(matches[0].data, split_path(field_path))
    except _PathError as exc:
        raise RenderError(where, f"error looking up replacement source: {exc}") from None
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


def _set(resource: Resource, slot: Slot, value: Any, options: dict[str, Any], where: str) -> None:
    container, key, path = slot
    current = container[key]
    if current is None and not isinstance(value, dict | list):
        # a created field is an untagged scalar: its text is read as YAML reads it
        text = scalar_text(value)
        container[key] = goscalar.resolve(text, timestamps=False)[1]
        resource.untagged.append((path, text))
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
    # each target gets its own copy, as kustomize copies the source node for each
    container[key] = copy_data(value)


def quote_untagged(resource: Resource, walked: Callable[[LinkPath], bool]) -> None:
    """What a strategic merge patch does to the fields replacements created in ``resource``.

    kustomize leaves a created scalar untagged, so YAML reads its text (``1`` is a number)
    when the object is printed. A strategic merge rewrites every field its walk reaches
    (``walked``: through mappings and merged lists), and quotes an untagged text that
    YAML 1.1 would read as something other than a string: ``1``, ``true`` or ``null`` stay
    strings from then on. Created fields that changed since are no longer untagged.
    """
    kept = []
    for path, text in resource.untagged:
        holder = links.container(resource.data, path)
        key = path[-1]
        created = goscalar.resolve(text, timestamps=False)[1]
        current = holder[key] if _holds(holder, key) else _MISSING
        if current is _MISSING or type(current) is not type(created) or current != created:
            continue
        if walked(path) and "\n" not in text and goscalar.resolve_v2(text)[0] != "str":
            holder[key] = text
            continue
        kept.append((path, text))
    resource.untagged[:] = kept


_MISSING = object()


def _holds(holder: Any, key: str | int) -> bool:
    if isinstance(holder, dict):
        return key in holder
    return isinstance(holder, list) and isinstance(key, int) and 0 <= key < len(holder)


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
            create = bool(options.get("create"))
            for field_path in target.get("fieldPaths") or ["metadata.name"]:
                what = "find or create" if create else "find"
                try:
                    parts = split_path(field_path)
                    slots = _slots({"": resource.data}, "", parts, create, value)
                except _PathError as exc:
                    raise RenderError(
                        where,
                        f"replacements: unable to {what} field `{field_path}` in "
                        f"{resource.id}: {exc}",
                    ) from None
                if not slots:
                    raise RenderError(
                        where,
                        f"replacements: unable to {what} field `{field_path}` in {resource.id}"
                        + ("" if create else "; set options.create to add it"),
                    )
                for slot in slots:
                    _set(resource, slot, value, options, where)
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
