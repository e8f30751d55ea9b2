"""Round-trip edits of fleet repo YAML files that keep what people wrote.

The editing commands (``cmd_device``, ``cmd_token``) sit between the command line and the
working tree: they read a file, pass its text through the pure text -> text functions here, and
write the result back. People review those changes in a pull request, so an edit must change
the value it was asked to change and nothing else: comments, key order, quoting, indentation
and an explicit ``---`` survive, and an edit that changes nothing returns the text unchanged.

Known limits of the round trip: an explicit ``null`` or ``~`` is written back as an empty
value, and a file that mixes indentation widths is re-indented to the first width it uses.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping, Sequence

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString
from ruamel.yaml.tokens import CommentToken

__all__ = ["Scalar", "double_quoted", "render", "round_trip", "set_fields"]

Scalar = str | bool | int

# Wide enough that no line a person wrote is ever folded onto two.
_WIDTH = 1_000_000
# A document start line with nothing but an optional comment after it.
_DOCUMENT_START = re.compile(r"---[ \t]*(#.*)?")
# Where the end-of-line comment sits in ruamel's per-item comment slots.
_MAP_EOL_SLOT = 2
_SEQ_EOL_SLOT = 0


def double_quoted(value: str) -> str:
    """Mark a string to be written in double quotes, e.g. a timestamp kept as a string."""
    quoted: str = DoubleQuotedScalarString(value)
    return quoted


def render(data: Mapping[str, object], header: Sequence[str] = ()) -> str:
    """Text of a new file: ``header`` lines as comments, then ``data`` as block YAML.

    Strings that would read back as another type (``"true"``, ``"1"``) come out quoted.
    """
    yaml = _new_yaml(mapping=2, sequence=4, offset=2)
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header)
    return comments + _dump(yaml, _to_commented(data))


def set_fields(text: str, path: tuple[str, ...], values: Mapping[str, Scalar]) -> str:
    """Set ``values`` in the mapping at ``path`` (creating missing maps) and return the new text.

    Raises ValueError naming the line and column when the text is not YAML, holds no mapping,
    or something on ``path`` is not a mapping.
    """

    def change(root: CommentedMap, body: str, first_line: int) -> bool:
        parent, missing = _existing_part(root, path, first_line)
        if missing:
            # Build the whole missing branch first so that it goes into the file in one piece.
            _put(parent, missing[0], _branch(missing[1:], values), body)
            return True
        return _update(parent, values, body)

    return _rewrite(text, change)


def round_trip(text: str) -> str:
    """Load and write back with no change: what every edit does to the parts it leaves alone."""
    return _rewrite(text, lambda root, body, first_line: True)


def _rewrite(text: str, change: Callable[[CommentedMap, str, int], bool]) -> str:
    """Load ``text``, let ``change`` edit the mapping, and write it back if it says it changed.

    ``change`` gets the top mapping, the text it came from, and the file's line number of that
    text's first line (for messages).
    """
    crlf = "\r\n" in text
    prefix, body = _split_document_start(text.replace("\r\n", "\n") if crlf else text)
    first_line = prefix.count("\n") + 1
    yaml = _new_yaml(*_guess_indent(body))
    root = _load_mapping(yaml, body, first_line)
    if not change(root, body, first_line):
        return text
    result = prefix + _dump(yaml, root)
    # The emitter writes "\n" only: put back the line ends the file had.
    return result.replace("\n", "\r\n") if crlf else result


def _new_yaml(mapping: int, sequence: int, offset: int) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = _WIDTH
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def _dump(yaml: YAML, data: object) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _split_document_start(text: str) -> tuple[str, str]:
    """Split off comments and ``---`` before the document, which the round trip would drop."""
    offset = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if _DOCUMENT_START.fullmatch(stripped) and line.startswith("---"):
            end = offset + len(line)
            return text[:end], text[end:]
        if stripped and not stripped.startswith(("#", "%")):
            break
        offset += len(line)
    return "", text


def _guess_indent(body: str) -> tuple[int, int, int]:
    """Guess (mapping indent, sequence indent, dash offset) from the first nested blocks."""
    mapping: int | None = None
    sequence: int | None = None
    offset: int | None = None
    parent: int | None = None  # column of the previous line's key when it opened a block
    for line in body.splitlines():
        content = line.lstrip(" ")
        if not content or content.startswith("#"):
            continue
        column = len(line) - len(content)
        if parent is not None and content.startswith("- ") and offset is None:
            offset = column - parent
            sequence = offset + 1 + len(content[1:]) - len(content[1:].lstrip(" "))
        elif parent is not None and column > parent and mapping is None:
            mapping = column - parent
        parent = _block_key_column(content, column)
        if mapping is not None and offset is not None:
            break
    mapping = mapping or 2
    if sequence is None or offset is None or offset < 0:
        return mapping, max(mapping, 2), 0
    return mapping, sequence, offset


def _block_key_column(content: str, column: int) -> int | None:
    """Column of the key when the line is ``key:`` opening a nested block, else None."""
    while content.startswith("- "):
        stripped = content[2:].lstrip(" ")
        column += len(content) - len(stripped)
        content = stripped
    without_comment = re.sub(r"\s+#.*$", "", content).rstrip()
    return column if without_comment.endswith(":") else None


def _load_mapping(yaml: YAML, body: str, first_line: int) -> CommentedMap:
    try:
        data = yaml.load(body)
    except MarkedYAMLError as error:
        raise ValueError(_describe_yaml_error(error, first_line)) from None
    except ReaderError as error:
        line, column = _line_and_column(body, int(error.position))
        raise ValueError(
            f"line {line + first_line}, column {column}: {error.reason} (character "
            f"#x{int(error.character):04x} is not allowed in YAML)"
        ) from None
    except YAMLError as error:
        raise ValueError(f"line {first_line}, column 1: {error}") from None
    if not isinstance(data, CommentedMap):
        found = "nothing" if data is None else _kind(data)
        raise ValueError(
            f"line {first_line}, column 1: the file must hold a mapping (key: value lines) at "
            f"the top, found {found}"
        )
    return data


def _describe_yaml_error(error: MarkedYAMLError, first_line: int) -> str:
    mark = error.problem_mark or error.context_mark
    line, column = (0, 0) if mark is None else (mark.line, mark.column)
    # Some problems (duplicate keys) go on with advice about loader options: keep line one.
    problem = str(error.problem).splitlines()[0] if error.problem else "not valid YAML"
    context = f"{error.context}: " if error.context else ""
    return f"line {line + first_line}, column {column + 1}: {context}{problem}"


def _line_and_column(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    return before.count("\n"), position - (before.rfind("\n") + 1) + 1


def _kind(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a sequence"
    return f"the value {value!r}"


def _existing_part(
    root: CommentedMap, path: tuple[str, ...], first_line: int
) -> tuple[CommentedMap, tuple[str, ...]]:
    """The deepest mapping on ``path`` that exists, and the keys below it still to create."""
    node = root
    for depth, key in enumerate(path):
        child = node.get(key)
        if child is None:
            return node, path[depth:]
        if not isinstance(child, CommentedMap):
            line, column = node.lc.key(key)
            dotted = ".".join(path[: depth + 1])
            raise ValueError(
                f"line {line + first_line}, column {column + 1}: {dotted} must be a mapping, "
                f"found {_kind(child)}"
            )
        node = child
    return node, ()


def _branch(keys: tuple[str, ...], values: Mapping[str, Scalar]) -> CommentedMap:
    block = CommentedMap((key, _to_node(value)) for key, value in values.items())
    for key in reversed(keys):
        block = CommentedMap([(key, block)])
    return block


def _update(node: CommentedMap, values: Mapping[str, Scalar], body: str) -> bool:
    changed = False
    for key, value in values.items():
        if key in node and _same(node[key], value):
            continue
        _put(node, key, _to_node(value), body)
        changed = True
    return changed


def _same(current: object, wanted: Scalar) -> bool:
    # True == 1 in Python, but `enabled: 1` is not `enabled: true` in the file.
    return isinstance(current, bool) == isinstance(wanted, bool) and current == wanted


def _to_node(value: Scalar) -> object:
    if isinstance(value, str) and "\n" in value:
        return LiteralScalarString(value)
    return value


def _to_commented(data: object) -> object:
    if isinstance(data, Mapping):
        return CommentedMap((key, _to_commented(value)) for key, value in data.items())
    if isinstance(data, list):
        return CommentedSeq(_to_commented(item) for item in data)
    return data


def _put(node: CommentedMap, key: str, value: object, body: str) -> None:
    """Set one key, keeping the comments around it where a reader expects them."""
    if key not in node:
        _append(node, key, value)
    elif isinstance(value, CommentedMap):
        _replace_with_block(node, key, value)
    else:
        _set_scalar(node, key, value, body)


def _append(node: CommentedMap, key: str, value: object) -> None:
    # Comment lines after a block's last item belong to its last leaf: move them below the new
    # key, or the new key would land under a comment that was meant to close the block.
    trailing = _take_trailing_lines(_last_leaf_comment(node))
    node[key] = value
    _give_trailing_lines(node, trailing)


def _replace_with_block(node: CommentedMap, key: str, value: CommentedMap) -> None:
    # `spec:  # note` followed by comments: the note stays on the key, the lines after it
    # move below the new block.
    slots = node.ca.items.get(key)
    token = slots[_MAP_EOL_SLOT] if slots else None
    trailing = _take_trailing_lines(token)
    node[key] = value
    _give_trailing_lines(node, trailing)


def _set_scalar(node: CommentedMap, key: str, value: object, body: str) -> None:
    """Set a value and move its end-of-line comment so the gap before the comment stays."""
    slots = node.ca.items.get(key)
    token: CommentToken | None = slots[_MAP_EOL_SLOT] if slots else None
    line, value_column = node.lc.value(key)
    lines = body.splitlines()
    # Assigning over a quoted string keeps its quotes, so measure the new text afterwards.
    node[key] = value
    if token is None or token.value.startswith("\n") or line >= len(lines):
        return
    new_text = _scalar_text(node[key])
    if token.column <= value_column or "\n" in new_text:
        return
    old_text = lines[line][value_column : token.column].rstrip()
    gap = token.column - value_column - len(old_text)
    token.column = value_column + len(new_text) + gap


def _scalar_text(value: object) -> str:
    yaml = _new_yaml(mapping=2, sequence=2, offset=0)
    return _dump(yaml, CommentedMap([("k", value)]))[len("k: ") :].rstrip("\n")


def _last_leaf_comment(node: CommentedMap | CommentedSeq) -> CommentToken | None:
    leaf = _last_leaf(node)
    if leaf is None:
        return None
    container, key = leaf
    slots = container.ca.items.get(key)
    slot = _MAP_EOL_SLOT if isinstance(container, CommentedMap) else _SEQ_EOL_SLOT
    token: CommentToken | None = slots[slot] if slots else None
    return token


def _last_leaf(
    node: CommentedMap | CommentedSeq,
) -> tuple[CommentedMap | CommentedSeq, object] | None:
    """The innermost last item of a block: where the comments that end the block are kept."""
    container: CommentedMap | CommentedSeq = node
    while True:
        if len(container) == 0:
            return None
        key = list(container)[-1] if isinstance(container, CommentedMap) else len(container) - 1
        value = container[key]
        if isinstance(value, CommentedMap | CommentedSeq) and len(value) > 0:
            container = value
            continue
        return container, key


def _take_trailing_lines(token: CommentToken | None) -> str:
    """Cut the lines after the first line of an end-of-line comment; return them."""
    if token is None:
        return ""
    first, newline, rest = token.value.partition("\n")
    if not rest:
        return ""
    token.value = first + newline
    return rest


def _give_trailing_lines(node: CommentedMap, trailing: str) -> None:
    if not trailing:
        return
    leaf = _last_leaf(node)
    if leaf is None:
        return
    container, key = leaf
    slot = _MAP_EOL_SLOT if isinstance(container, CommentedMap) else _SEQ_EOL_SLOT
    slots = container.ca.items.setdefault(key, [None, None, None, None])
    existing: CommentToken | None = slots[slot]
    if existing is not None:
        existing.value = existing.value + trailing
    else:
        slots[slot] = CommentToken("\n" + trailing, CommentMark(0), None)
