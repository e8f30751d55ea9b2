"""Safe, bounded YAML reading for everything the controller reads out of a fleet repo.

Every YAML byte the controller reads comes from a pull request, so it is untrusted: this module
is the one place that turns such bytes into data. It works on ruamel.yaml's event stream (an
iterative parser, so deep nesting cannot exhaust the Python stack) and builds a small node tree
of its own while enforcing limits as it goes:

- the input size, checked before parsing;
- the nesting depth, checked on every collection start;
- the number of nodes *after* alias expansion, so a "billion laughs" file fails after a few
  thousand events with a few kilobytes allocated (aliases share the anchored node; nothing is
  copied);
- the number of documents.

It accepts YAML 1.2 core-schema scalars only (``yes`` stays a string; timestamps stay strings),
rejects any tag outside the core schema (no arbitrary object construction), duplicate keys,
non-scalar keys and merge keys (``<<``). Errors carry the 1-based line and column.

``parse`` returns nodes (keeping scalar text and style, for consumers that must reproduce the
input); ``to_python`` turns a node into plain data plus a map from data path to position, which
is what the fleet model loader uses to put a line and column on every schema error. The
renderer uses ``to_data``, which can also give what kustomize holds for a resource after its
own go-yaml v3 round trip (``kyaml``).
"""

from __future__ import annotations

import base64
import functools
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ruamel.yaml import YAML
from ruamel.yaml import events as ev
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from rciots.controller import goscalar

try:
    # libyaml's parser, from ruamel.yaml.clib: the same events, about 15 times faster. Scalar
    # resolution is done here, so its YAML 1.1 resolver never applies.
    from _ruamel_yaml import CParser as _CParser
except ImportError:  # pragma: no cover - the pure-Python parser gives the same events
    _CParser = None

__all__ = [
    "DEFAULT_LIMITS",
    "FLEET",
    "KUSTOMIZATION",
    "MANIFEST",
    "Dialect",
    "Limits",
    "Node",
    "Position",
    "Positions",
    "YamlError",
    "parse",
    "to_python",
]

Kind = Literal["scalar", "mapping", "sequence"]
Position = tuple[int, int]
PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 1024 * 1024
    max_depth: int = 64
    max_nodes: int = 100_000
    max_documents: int = 1_000


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Dialect:
    """What a kind of file may use beyond plain data.

    Fleet files (the default) may use neither. Kubernetes manifests may use merge keys and
    ``!!binary``, as kustomize reads them. Kustomization files may repeat a key (the last
    wins), as kustomize's reader of them allows.
    """

    merge_keys: bool = False
    binary: bool = False
    duplicate_keys: bool = False


FLEET = Dialect()
MANIFEST = Dialect(merge_keys=True, binary=True)
KUSTOMIZATION = Dialect(merge_keys=True, duplicate_keys=True)


class YamlError(ValueError):
    """Input that is not acceptable YAML; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass(eq=False, slots=True)
class Node:
    """One YAML node. ``tag`` is resolved: str, int, float, bool, null, map or seq; ``!`` for
    a scalar with the non-specific tag ``!`` (a string, except where go-yaml v3 reads it: see
    ``to_data``).

    ``value`` is the scalar's text for scalars, a list of nodes for sequences and a list of
    (key, value) pairs for mappings. ``style`` is a scalar's quote or block indicator (``'``,
    ``"``, ``|``, ``>``; None when plain) and ``flow`` for a collection written in flow style
    (``{...}``, ``[...]``). ``size`` counts the nodes below and including this one, with aliases
    expanded.
    """

    kind: Kind
    tag: str
    line: int
    column: int
    text: str = ""
    style: str | None = None
    items: list[Node] = field(default_factory=list)
    pairs: list[tuple[Node, Node]] = field(default_factory=list)
    size: int = 1


_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {"str", "int", "float", "bool", "null"}


def _resolve_plain(text: str) -> str:
    """The tag go-yaml v3 gives an untagged plain scalar: what kustomize reads it as.

    That is YAML 1.2 words (``yes`` is a string) with go-yaml's numbers (``012`` is octal,
    ``0b101``, ``1_000``, ``08`` is a float) and timestamps (tag ``timestamp``).
    """
    return goscalar.resolve(text)[0]


def _explicit_tag(tag: str, kind: Kind, line: int, column: int, dialect: Dialect = FLEET) -> str:
    if tag == "!":
        # the non-specific tag: a collection is what it is; a scalar is a string (but see
        # Node and to_data)
        return "!" if kind == "scalar" else ("map" if kind == "mapping" else "seq")
    short = tag[len(_CORE) :] if tag.startswith(_CORE) else None
    allowed = _SCALAR_TAGS if kind == "scalar" else {"map" if kind == "mapping" else "seq"}
    if dialect.binary and kind == "scalar":
        allowed = allowed | {"binary"}
    if short not in allowed:
        written = f"!!{short}" if short is not None else tag
        raise YamlError(
            f"tag {written!r} is not allowed: fleet files use plain YAML data only; remove the tag",
            line,
            column,
        )
    return short


# shared by every scalar node: nothing is ever appended to a scalar's children
_NO_ITEMS: list[Node] = []
_NO_PAIRS: list[tuple[Node, Node]] = []


def _position(event: ev.Event) -> Position:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


class _Builder:
    """Builds one document's node tree from events, enforcing the limits."""

    def __init__(self, limits: Limits, dialect: Dialect = FLEET) -> None:
        self.limits = limits
        self.dialect = dialect
        self.anchors: dict[str, Node] = {}
        self.open_anchors: set[str] = set()
        self.nodes = 0
        # open collections: the node, its anchor, and (mappings) the keys seen so far
        self.stack: list[tuple[Node, str | None, dict[str, Node]]] = []
        self.pending_key: list[Node | None] = []
        self.root: Node | None = None

    def count(self, size: int, position: Position) -> None:
        self.nodes += size
        if self.nodes > self.limits.max_nodes:
            raise YamlError(
                f"document has more than {self.limits.max_nodes} nodes after alias expansion; "
                "split it into smaller files or use fewer aliases",
                *position,
            )

    def add(self, node: Node) -> None:
        if not self.stack:
            self.root = node
            return
        parent, _, seen_keys = self.stack[-1]
        parent.size += node.size
        if parent.kind == "sequence":
            parent.items.append(node)
            return
        key = self.pending_key[-1]
        if key is None:
            if node.kind != "scalar":
                raise YamlError(
                    "mapping keys must be plain scalars, not collections", node.line, node.column
                )
            if node.text == "<<" and node.style is None and not self.dialect.merge_keys:
                raise YamlError(
                    "merge keys ('<<') are not supported: write the keys out",
                    node.line,
                    node.column,
                )
            existing = seen_keys.get(node.text)
            if existing is not None and self.dialect.duplicate_keys:
                parent.pairs[:] = [(k, v) for k, v in parent.pairs if k.text != node.text]
            elif existing is not None:
                raise YamlError(
                    f"duplicate key {node.text!r} (first at line {existing.line}): "
                    "remove one of them",
                    node.line,
                    node.column,
                )
            seen_keys[node.text] = node
            self.pending_key[-1] = node
        else:
            parent.pairs.append((key, node))
            self.pending_key[-1] = None

    def start(self, kind: Kind, event: ev.CollectionStartEvent) -> None:
        line, column = _position(event)
        if len(self.stack) >= self.limits.max_depth:
            raise YamlError(
                f"nesting deeper than {self.limits.max_depth} levels; flatten the structure",
                line,
                column,
            )
        self.count(1, (line, column))
        default = "map" if kind == "mapping" else "seq"
        explicit = event.tag if event.ctag is not None else None
        tag = _explicit_tag(explicit, kind, line, column, self.dialect) if explicit else default
        node = Node(kind, tag, line, column, "", None, [], [])
        if event.flow_style:
            node.style = "flow"
        if event.anchor:
            self.open_anchors.add(event.anchor)
        self.stack.append((node, event.anchor, {}))
        self.pending_key.append(None)

    def end(self) -> None:
        node, anchor, _ = self.stack.pop()
        self.pending_key.pop()
        if anchor:
            self.open_anchors.discard(anchor)
            self.anchors[anchor] = node
        self.add(node)

    def scalar(self, event: ev.ScalarEvent) -> None:
        # the hot path of parsing: kept flat on purpose
        mark = event.start_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            self.count(0, (line, column))
        style = event.style or None
        text = event.value
        # (ctag is the tag as parsed; the tag property, a Python call, only when there is one)
        if event.ctag is not None and event.tag:
            tag = _explicit_tag(event.tag, "scalar", line, column, self.dialect)
        elif style is not None or (text and text[0] not in goscalar.TYPED_START):
            tag = "str"  # (settled here, without a call, for most keys and values)
        else:
            tag = _resolve_plain(text)
        node = Node("scalar", tag, line, column, text, style, _NO_ITEMS, _NO_PAIRS)
        if event.anchor:
            self.anchors[event.anchor] = node
        stack = self.stack
        if not stack:
            self.root = node
            return
        parent, _, seen_keys = stack[-1]
        if parent.kind == "sequence":
            parent.size += 1
            parent.items.append(node)
            return
        pending = self.pending_key
        key = pending[-1]
        if key is not None:
            parent.size += 1
            parent.pairs.append((key, node))
            pending[-1] = None
        elif text in seen_keys or (text == "<<" and style is None):
            self.add(node)  # a repeated key or a merge key: the general path decides
        else:
            parent.size += 1
            seen_keys[text] = node
            pending[-1] = node

    def alias(self, event: ev.AliasEvent) -> None:
        position = _position(event)
        name = event.anchor
        if name in self.open_anchors:
            raise YamlError(f"alias *{name} refers to a node that contains it", *position)
        node = self.anchors.get(name)
        if node is None:
            raise YamlError(f"alias *{name} has no anchor &{name} before it", *position)
        self.count(node.size, position)
        self.add(node)


def _text_of(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlError(f"not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None


def _yaml_error(exc: YAMLError) -> YamlError:
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        return YamlError(f"invalid YAML: {problem}", line, column)
    return YamlError(f"invalid YAML: {exc}")


def _next_event_function(text: str, fast: bool) -> Callable[[], ev.Event]:
    if fast and _CParser is not None:
        get_event: Callable[[], ev.Event] = _CParser(io.StringIO(text)).get_event
        return get_event
    events = YAML(typ="safe", pure=True).parse(io.StringIO(text))
    return lambda: next(events)


def _is_empty_document(root: Node) -> bool:
    # a document with no content at all (a trailing '---') holds nothing
    return root.kind == "scalar" and root.text == "" and root.style is None and root.tag == "null"


def parse(data: bytes, limits: Limits = DEFAULT_LIMITS, dialect: Dialect = FLEET) -> list[Node]:
    """Parse every document of ``data``; raise YamlError on the first problem."""
    if len(data) > limits.max_bytes:
        raise YamlError(
            f"file is {len(data)} bytes, over the limit of {limits.max_bytes}; split it up"
        )
    text = _text_of(data)
    if dialect.binary:  # manifests: what kustomize's reader of manifests refuses
        _check_manifest_text(text)
    try:
        return _build_documents(_next_event_function(text, True), limits, dialect)
    except _ParserRefused as refused:
        # only for this one difference: the pure parser is slow on large hostile input
        if _CParser is None or "found unexpected ':'" not in refused.message:
            raise
    # libyaml follows YAML 1.1 in places where YAML 1.2 (and go-yaml, hence kustomize) is
    # more lenient, e.g. a ':' inside a plain scalar in a flow collection ([a:b]); the
    # pure-Python parser reads those, and reports what neither can read.
    return _build_documents(_next_event_function(text, False), limits, dialect)


_SEPARATOR_WITH_CONTENT = re.compile(r"^---[ \t]*[^\s#].*$", re.MULTILINE)
_DIRECTIVE = re.compile(r"^%", re.MULTILINE)
_DOUBLE_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"')


def _check_manifest_text(text: str) -> None:
    """kustomize splits manifest files on '---' lines before parsing them with go-yaml, which
    also knows no '\\/' escape: refuse what that refuses, with the line."""
    separator = _SEPARATOR_WITH_CONTENT.search(text)
    if separator:
        line = text.count("\n", 0, separator.start()) + 1
        raise YamlError(f"invalid document separator: {separator.group(0)}", line, 1)
    directive = _DIRECTIVE.search(text)
    if directive:
        line = text.count("\n", 0, directive.start()) + 1
        raise YamlError("YAML directives (%YAML, %TAG) are not supported in manifests", line, 1)
    if "\\/" in text:
        for quoted in _DOUBLE_QUOTED.finditer(text):
            if re.search(r"(?<!\\)(?:\\\\)*\\/", quoted.group(0)):
                line = text.count("\n", 0, quoted.start()) + 1
                raise YamlError("unknown escape character '\\/' in a quoted string", line, 1)


class _ParserRefused(YamlError):
    """The parser itself (not a limit or rule of ours) refused the input."""


def _build_documents(
    next_event: Callable[[], ev.Event], limits: Limits, dialect: Dialect
) -> list[Node]:
    documents: list[Node] = []
    builder: _Builder | None = None
    # the event classes, looked up once (the loop runs once per event)
    scalar, mapping_start, sequence_start = (
        ev.ScalarEvent,
        ev.MappingStartEvent,
        ev.SequenceStartEvent,
    )
    mapping_end, sequence_end = ev.MappingEndEvent, ev.SequenceEndEvent
    try:
        while True:
            event = next_event()
            kind = type(event)
            if kind is scalar and builder is not None:
                builder.scalar(event)  # type: ignore[arg-type]
            elif (kind is mapping_end or kind is sequence_end) and builder:
                builder.end()
            elif kind is mapping_start and builder is not None:
                builder.start("mapping", event)  # type: ignore[arg-type]
            elif kind is sequence_start and builder is not None:
                builder.start("sequence", event)  # type: ignore[arg-type]
            elif kind is ev.AliasEvent and builder is not None:
                builder.alias(event)  # type: ignore[arg-type]
            elif kind is ev.DocumentStartEvent:
                if len(documents) >= limits.max_documents:
                    raise YamlError(
                        f"more than {limits.max_documents} documents; split the file",
                        *_position(event),
                    )
                builder = _Builder(limits, dialect)
            elif kind is ev.DocumentEndEvent and builder is not None:
                if builder.root is not None and not _is_empty_document(builder.root):
                    documents.append(builder.root)
                builder = None
            elif kind is ev.StreamEndEvent:
                return documents
    except YAMLError as exc:
        error = _yaml_error(exc)
        raise _ParserRefused(error.message, error.line, error.column) from None
    except StopIteration:
        return documents


def _scalar_value(node: Node, resolved: str | None = None) -> object:
    """The value go-yaml v3 decodes ``node`` to, as kustomize holds it after its JSON step;
    ``resolved`` replaces the node's tag.

    A timestamp is the RFC 3339 text JSON prints for it (``2001-12-14`` is
    ``2001-12-14T00:00:00Z``); ``.nan`` and ``.inf`` are read, although kustomize cannot
    print them.
    """
    text = node.text
    wanted = resolved or node.tag
    if wanted == "str" or wanted == "!":
        return text
    # Explicit tags (!!int, ...) resolve the text the same way, without timestamps; a
    # plain scalar's tag came from resolving it, so the two agree.
    tag, value = goscalar.resolve(text, timestamps=wanted == "timestamp")
    if tag == wanted:
        if tag == "timestamp" and value is None:
            raise YamlError(
                f"timestamp {text!r} has a zone offset of 24 hours or more, which kustomize "
                "cannot print; quote it to keep it a string",
                node.line,
                node.column,
            )
        return value
    if wanted == "float" and tag == "int":
        assert isinstance(value, int)
        return float(value)
    raise YamlError(f"{text!r} is not a valid !!{wanted}", node.line, node.column)


@dataclass
class Positions:
    """Where each part of a document came from, by path into ``to_python``'s result.

    ``values[path]`` is where the value at ``path`` starts; ``keys[path]`` is where the key
    that leads to ``path`` starts (mapping entries only).
    """

    values: dict[PathKey, Position] = field(default_factory=dict)
    keys: dict[PathKey, Position] = field(default_factory=dict)

    def of_value(self, path: PathKey) -> Position:
        """The position of ``path``, or of its closest ancestor that has one."""
        for end in range(len(path), -1, -1):
            found = self.values.get(path[:end])
            if found is not None:
                return found
        return (1, 1)

    def of_key(self, path: PathKey) -> Position:
        return self.keys.get(path) or self.of_value(path)


def to_python(root: Node) -> tuple[object, Positions]:
    """Plain data (dict, list, str, int, float, bool, None) and the positions of its parts.

    Aliased subtrees become shared Python objects; positions are recorded for the anchored
    occurrence only. The walk is iterative and bounded by the node limit ``parse`` enforced.
    """
    positions = Positions()
    result: list[object] = []
    # (node, path, container to put the value in, key or index in it)
    work: list[tuple[Node, PathKey, dict[str, object] | list[object] | None, str | int]] = [
        (root, (), None, 0)
    ]
    built: dict[int, object] = {}
    while work:
        node, path, container, slot = work.pop()
        positions.values.setdefault(path, (node.line, node.column))
        value: object
        if id(node) in built:
            value = built[id(node)]
        elif node.kind == "scalar":
            # fleet files keep dates and times as written: their fields say what they accept
            value = node.text if node.tag == "timestamp" else _scalar_value(node)
        elif node.kind == "sequence":
            items: list[object] = [None] * len(node.items)
            built[id(node)] = value = items
            for index, child in enumerate(node.items):
                work.append((child, (*path, index), items, index))
        else:
            mapping: dict[str, object] = {}
            built[id(node)] = value = mapping
            for key, child in node.pairs:
                key_value = key.text  # keys are compared and kept as written
                mapping[key_value] = None  # keep the file's key order
                positions.keys.setdefault((*path, key_value), (key.line, key.column))
                work.append((child, (*path, key_value), mapping, key_value))
        if container is None:
            result.append(value)
        elif isinstance(container, list):
            assert isinstance(slot, int)
            container[slot] = value
        else:
            container[str(slot)] = value
    return result[0], positions


def to_data(
    root: Node,
    *,
    yaml11: bool = False,
    annotation_text: bool = False,
    kyaml: bool = False,
    patch: bool = False,
) -> object:
    """Plain data like ``to_python``, without positions: the renderer's faster path.

    It also applies what the manifest dialect lets through: merge keys (explicit keys win,
    then the merged mappings in order) and ``!!binary`` (decoded to text). A key that is not
    a string (``true:``, ``1:``) is refused, since kustomize cannot print it. Recursion depth
    is bounded by ``Limits.max_depth``, enforced while parsing. ``yaml11`` reads plain words
    as YAML 1.1 does (``yes`` is true), as kustomize reads kustomization files.
    ``annotation_text`` keeps the values of the top-level ``metadata.annotations`` as the text
    written (kustomize prints them back as strings of that text).

    ``kyaml`` gives the values kustomize holds for a resource (or a strategic merge patch),
    which its kyaml library reads with go-yaml v3 and, before printing, writes out as YAML with
    go-yaml v3 and reads back, keeping each node's style. These things differ from a plain
    reading: a plain scalar with the non-specific tag (``! 12``) is resolved as if untagged;
    in a flow collection, an empty plain scalar (``{x: }``) is written as ``''`` and read
    back as an empty string, not null, and a timestamp with a time (``[2001-12-14 21:59:43]``)
    is quoted, as ``:`` is a flow indicator, and read back as the string written; and a block
    scalar (``|``, ``>``) comes back as ``_block_round_trip`` says. With ``patch`` (a
    strategic merge patch) an empty value stays null: there it deletes a field rather than
    being written out.
    """
    built: dict[int, object] = {}
    # annotation values become the text written (see _annotations_as_text)
    as_text = (
        {id(v) for _, v in _annotation_pairs(root)}
        if annotation_text and root.kind == "mapping"
        else set()
    )

    def scalar(node: Node, flow: bool) -> object:
        if node.tag == "binary":
            return _binary_text(node)
        if kyaml and id(node) in as_text:
            # kustomize sets annotations again as strings of the text, in literal style when
            # they hold a line feed, before it writes the resource out
            if "\n" in node.text:
                _block_round_trip(node.text, False, node.line, node.column)
        elif kyaml:
            empty = node.style is None and node.text == "" and node.tag in ("null", "!")
            if flow and empty and not patch:
                return ""
            if flow and node.tag == "timestamp" and ":" in node.text:
                return node.text  # quoted when written back (':' in a flow collection)
            if node.tag == "!" and node.style is None:
                return _scalar_value(node, _resolve_plain(node.text))
            if node.style in (">", "|") and node.tag in ("str", "!"):
                return _block_round_trip(node.text, node.style == ">", node.line, node.column)
        if yaml11 and node.style is None and node.tag == "str":
            tag, value = goscalar.resolve_v2(node.text)
            if tag != "str":
                return value
        return _scalar_value(node)

    def convert(node: Node, flow: bool = False) -> object:
        if node.kind == "scalar":
            # most scalars are plain strings as written (the call below settles the rest)
            text = node.text
            plain_word = not yaml11 or (text and text[0] not in goscalar.TYPED_START)
            if node.tag == "str" and node.style is None and plain_word:
                return text
            return scalar(node, flow)
        known = built.get(id(node))
        if known is not None:
            return known
        inner = node.style == "flow"
        if node.kind == "sequence":
            items: list[object] = []
            built[id(node)] = items
            items.extend(convert(child, inner) for child in node.items)
            return items
        mapping: dict[str, object] = {}
        built[id(node)] = mapping
        merged: list[Node] = []
        for key, child in node.pairs:
            if key.text == "<<" and key.style is None:
                merged.extend(child.items if child.kind == "sequence" else [child])
                continue
            key_tag = key.tag
            if key_tag == "!":
                key_tag = _resolve_plain(key.text) if kyaml and key.style is None else "str"
            if kyaml and inner and key_tag == "timestamp" and ":" in key.text:
                key_tag = "str"  # quoted when written back, as its value would be
            if key.style is None and (key_tag not in ("str", "null") or key.text == "null"):
                raise YamlError(
                    f"mapping key {key.text!r} is read as a {key_tag}, not a string: quote it",
                    key.line,
                    key.column,
                )
            name = key.text
            if kyaml and key.style in (">", "|"):
                name = _block_round_trip(name, key.style == ">", key.line, key.column)
            mapping[name] = convert(child, inner)
        for source in merged:
            value = convert(source)
            if not isinstance(value, dict):
                raise YamlError(
                    "a merge key ('<<') takes mappings only", source.line, source.column
                )
            for name, item in value.items():
                mapping.setdefault(name, item)
        return mapping

    data = convert(root)
    if annotation_text and isinstance(data, dict):
        _annotations_as_text(root, data)
    return data


# go-yaml's line breaks; its reader has already turned CR, CR LF and NEL into LF in a value
_GO_BREAKS = "\n\r\x85\u2028\u2029"
_GO_BREAK = re.compile("[\n\r\x85\u2028\u2029]")
# What makes go-yaml v3 write a string double-quoted whatever its style: a trailing space, a
# space before a line break, or a character it does not print as is (a tab it does).
# (The last class lists what go-yaml does not print, which Python compiles much faster than
# the ranges it does.)
_GO_NOT_BLOCK = re.compile(
    " \\Z| [\n\r\x85\u2028\u2029]"
    "|[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufeff\ufffe\uffff\U00010000-\U0010ffff]"
)


def _block_round_trip(value: str, folded: bool, line: int, column: int) -> str:
    """A block scalar's value after kustomize writes it with go-yaml v3 and reads it back.

    go-yaml v3 writes a literal or folded scalar in its style, with an indentation indicator
    only when the value starts with a space or a line break, so a value starting with a tab
    cannot be read back: kustomize fails, and so does this.

    A literal scalar otherwise comes back as it was. A folded one may not: the writer has to
    double a line feed so that reading does not fold it into a space, except after a line
    starting with a space or tab and before one (where reading keeps it anyway). go-yaml
    decides the latter by looking at the start of the whole value (past its leading line
    breaks) instead of at the next line. So when the value starts with a letter, a line feed
    before a more-indented line comes back doubled; when it starts with a space, single line
    feeds between lines of text come back as spaces; and keep chomping (``>+``) gets one more
    line feed before its trailing blank lines. The text is written here as go-yaml writes it
    and read back with the parser, whose block scalar reading is go-yaml's.
    """
    if not value or _GO_NOT_BLOCK.search(value):
        return value  # written double-quoted, which reads back exactly
    if value[0] == "\t":
        raise YamlError(
            "a block scalar starting with a tab: kustomize writes it out again without an "
            "indentation indicator and cannot read it back (found a tab character where an "
            "indentation space is expected)",
            line,
            column,
        )
    if not folded or not _GO_BREAK.search(value):
        return value
    return _reread_folded(value)


@functools.lru_cache(maxsize=1024)
def _reread_folded(value: str) -> str:
    header = ">"
    if value[0] == " " or value[0] in _GO_BREAKS:
        header += "2"  # go-yaml's indentation indicator is its indent step, 2 in kustomize
    if value[-1] not in _GO_BREAKS:
        header += "-"
    elif len(value) == 1 or value[-2] in _GO_BREAKS:
        header += "+"
    start = value.lstrip(_GO_BREAKS)[:1]
    doubles = start not in ("", " ", "\t")  # what go-yaml looks at: see _block_round_trip
    written = ["k: ", header, "\n"]
    at_break = leading_blank = True
    for char in value:
        if char in _GO_BREAKS:
            if doubles and char == "\n" and not at_break and not leading_blank:
                written.append("\n")
            at_break = True
        elif at_break:
            written.append("  ")
            leading_blank = char in " \t"
            at_break = False
        written.append(char)
    if not at_break:
        written.append("\n")
    data = "".join(written).encode()
    # (a value read within the limits may grow past max_bytes as written: this is not input)
    (document,) = parse(data, Limits(max_bytes=len(data)))
    return document.pairs[0][1].text


def _annotation_pairs(root: Node) -> list[tuple[Node, Node]]:
    """The (key, value) nodes of the top-level ``metadata.annotations``, if a mapping."""
    pairs: list[tuple[Node, Node]] = []
    metadata_node = next((v for k, v in root.pairs if k.text == "metadata"), None)
    if metadata_node is not None:
        for key, value in metadata_node.pairs:
            if key.text == "annotations" and value.kind == "mapping":
                pairs.extend(value.pairs)
    return pairs


def _annotations_as_text(root: Node, data: dict[str, object]) -> None:
    metadata = data.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if not isinstance(annotations, dict):
        return
    for name, item in _annotation_pairs(root):
        if item.kind == "scalar" and item.tag != "binary" and name.text in annotations:
            annotations[name.text] = item.text


def _binary_text(node: Node) -> object:
    try:
        decoded = base64.b64decode("".join(node.text.split()), validate=True)
    except ValueError:
        raise YamlError(
            f"{node.text[:20]!r} is not valid !!binary", node.line, node.column
        ) from None
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(decoded).decode()
