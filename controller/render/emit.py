"""The printer of ``kustomize build``: resources as JSON-like data in, its exact text out.

Position in the flow: render (load, transform: plain data) -> **emit** -> the manifests text
that is the desired state. Pure: no I/O, no clock.

kustomize prints each resource by marshalling it to JSON with Go's ``encoding/json`` and handing
that to sigs.k8s.io/yaml's ``JSONToYAML``, which reads the JSON with go-yaml v2 and marshals what
it read with go-yaml v2 again; documents are joined with ``---\\n``. The text therefore depends on
the resource's value alone: comments, key order, quoting and flow style of the input are gone.

``normalize`` is that JSON round trip on the data: an integral float becomes an int, an int past
64 bits a float, a raw NEL in a string folds like a line break in a quoted scalar, and what
either step refuses (NaN, infinities, DEL and C1 controls, keys longer than go-yaml v2 reads)
raises ValueError. ``dump_documents`` applies the same rules as it prints, so it needs no
normalized input.

The printing rules are go-yaml v2's emitter with the settings kustomize uses (block style, two
spaces, lines folded past column 80, unicode printed as is):

- mapping keys sorted in go-yaml v2's order (``key_less``): runs of digits compare as numbers,
  a non-letter sorts before a letter. That order is not transitive for some key sets
  (``a2a < a3a < a27 < a2a``, ``v1beta1 < v2 < v10 < v1beta1``); Go visits map keys in random
  order, so kustomize prints such a set differently from run to run; here it comes out in an
  order fixed by the keys' given order, which may or may not be one kustomize prints;
- a sequence that is a mapping value starts at the key's column (``- `` not indented);
- an empty mapping or sequence is ``{}`` / ``[]``;
- a string go-yaml v2 would read back as something else (``yes``, ``1``, ``1.5``, ``~``,
  ``2001-12-14``, ``1:20``, the empty string) is double-quoted; a string with a line feed is a
  literal block unless it holds a space before a line break, ends in a space or holds a
  character go-yaml does not print, then it is double-quoted with escapes; a string that may
  not be plain for its first character, a ``: `` or `` #`` inside, or a leading or trailing
  space is single-quoted; a string with a tab, a control character, a character outside the
  Basic Multilingual Plane or a byte-order mark is double-quoted with escapes;
- plain and quoted scalars that are not keys are folded at the first single space once the
  line is past column 80; continuation lines are indented two spaces deeper than the key or
  the ``-``;
- a key longer than 128 bytes or with a line break is written as ``? key`` and ``: value``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from rciots.controller import goscalar

__all__ = ["dump_documents", "key_less", "normalize"]

_INT64_MIN = -(2**63)
_UINT64_END = 2**64
_WIDTH = 80  # go-yaml's best_width: a line may grow past it until the next usable space
_SIMPLE_KEY_BYTES = 128  # longer keys are written as "? key"
_JSON_KEY_CHARS = 1024  # go-yaml v2 reads a JSON key only if its ':' is this close

# --- normalize: what the JSON round trip does to strings -------------------------------------

# Characters that make a string need a closer look: DEL, the C1 controls (NEL among them),
# surrogates and the two non-characters. Go's JSON prints them raw and go-yaml v2 then refuses
# them, except NEL, which its scanner takes for a line break inside the quoted string.
_JSON_ODD = re.compile("[\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_UNREADABLE = re.compile("[\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")
_NEL_RUN = re.compile(" *\x85[ \x85]*")
_NEL_DOCUMENT_MARKER = re.compile("\x85(?:---|\\.\\.\\.)[ \x85]")
# Go's JSON writes these as six-character escapes, which count against the key length limit.
_JSON_SIX = re.compile("[\x00-\x07\x0b\x0e-\x1f<>&\u2028\u2029]")
_JSON_TWO = re.compile('[\x08\t\n\x0c\r"\\\\]')


def normalize(value: Any) -> Any:
    """``value`` as kustomize holds it after its JSON round trip.

    Mappings keep their key order here (key order carries no meaning; the printer sorts).
    Raises ValueError for what kustomize cannot print and TypeError for what is not JSON-like.
    """
    kind = type(value)
    if kind is str:
        return value if _JSON_ODD.search(value) is None else _normalize_str(value)
    if kind is dict:
        return {_normalize_key(key): normalize(item) for key, item in value.items()}
    if kind is list:
        return [normalize(item) for item in value]
    if value is None or kind is bool:
        return value
    if kind is int and _INT64_MIN <= value < _UINT64_END:
        return value
    return _normalize_other(value)


def _normalize_other(value: Any) -> Any:
    if isinstance(value, str):
        return _normalize_str(value)
    if isinstance(value, dict):
        return {_normalize_key(key): normalize(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalize(item) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return _normalize_int(value)
    if isinstance(value, float):
        return _normalize_float(value)
    raise TypeError(f"{type(value).__name__} is not JSON-like data")


def _normalize_key(key: object) -> str:
    """A key as it comes back; keys are never changed, only refused (so none can collide)."""
    if key in _GOOD_KEYS:
        return key
    if not isinstance(key, str):
        raise TypeError(f"mapping key {key!r} is not a string")
    _normalize_str(key)
    if "\x85" in key:
        raise ValueError(
            f"mapping key {key!r} holds a NEL (U+0085): kustomize cannot print it "
            "(go-yaml reads it as a line break inside the JSON key)"
        )
    encoded = len(key) + 2 + len(_JSON_TWO.findall(key)) + 5 * len(_JSON_SIX.findall(key))
    if encoded > _JSON_KEY_CHARS:
        raise ValueError(
            f"mapping key {key[:40]!r}... is too long for kustomize to print: "
            f"{encoded} characters as JSON, go-yaml reads at most {_JSON_KEY_CHARS}"
        )
    if len(_GOOD_KEYS) >= 1 << 16:
        _GOOD_KEYS.clear()
    _GOOD_KEYS.add(key)
    return key


_GOOD_KEYS: set[str] = set()


def _normalize_str(text: str) -> str:
    if _JSON_ODD.search(text) is None:
        return text
    odd = _UNREADABLE.search(text)
    if odd is not None:
        raise ValueError(
            f"string {text[:40]!r} holds U+{ord(odd.group()):04X}: kustomize cannot print it "
            "(go-yaml refuses control characters and non-characters)"
        )
    if _NEL_DOCUMENT_MARKER.search(text):
        raise ValueError(
            f"string {text[:40]!r} has '---' or '...' after a NEL (U+0085): kustomize cannot "
            "print it (go-yaml reads a document marker there)"
        )
    return _NEL_RUN.sub(_fold_nel, text)


def _fold_nel(match: re.Match[str]) -> str:
    # Spaces around a line break in a quoted scalar vanish; one break is a space, and each
    # further one is a line feed.
    breaks = match.group().count("\x85")
    return " " if breaks == 1 else "\n" * (breaks - 1)


def _normalize_int(number: int) -> int | float:
    if _INT64_MIN <= number < _UINT64_END:
        return number
    # go-yaml v3 reads a bigger integer as a float, and so does everything after it.
    try:
        return _normalize_float(float(number))
    except OverflowError:
        raise ValueError(f"integer {number} is too large for kustomize") from None


def _normalize_float(number: float) -> int | float:
    if not math.isfinite(number):
        raise ValueError(f"{number} cannot be printed by kustomize: JSON has no NaN or infinity")
    if number == 0:
        return 0  # JSON "0" or "-0", which go-yaml reads as the integer 0
    size = abs(number)
    if size < 1e-6 or size >= 1e21 or not number.is_integer():
        return number  # JSON uses an exponent or a fraction: read back as this float
    # JSON prints the shortest digits padded with zeros, and go-yaml v2 reads that as an int
    # when it fits 64 bits (signed, or unsigned when positive).
    digits = int(Decimal(repr(number)))
    if _INT64_MIN <= digits < _UINT64_END:
        return digits
    return number


# --- scalars ---------------------------------------------------------------------------------


def _float_text(number: float) -> str:
    """A float as go-yaml v2 prints it (Go's %g with the shortest digits) after normalizing."""
    normalized = _normalize_float(number)
    if isinstance(normalized, int):
        return str(normalized)
    mantissa, _, exponent_text = repr(normalized).partition("e")
    negative = mantissa.startswith("-")
    whole, _, fraction = mantissa.lstrip("-").partition(".")
    if fraction == "0":
        fraction = ""
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + int(exponent_text or 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")
    exponent = point - 1
    sign = "-" if negative else ""
    if exponent < -4 or exponent >= 6:  # Go's %g with shortest digits switches at 1e6
        rest = "." + digits[1:] if len(digits) > 1 else ""
        return f"{sign}{digits[0]}{rest}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


# Characters go-yaml prints as they are: LF, printable ASCII and the Basic Multilingual Plane
# but for surrogates, the byte-order mark and the two non-characters. Anything else (tab, CR,
# NEL, characters outside the BMP) forces a double-quoted scalar with escapes. The classes
# here list what they exclude rather than what they keep: Python compiles a class of large
# ranges in the BMP slowly (milliseconds each, at every start of the command).
_NOT_PRINTABLE = "[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufeff\ufffe\uffff\U00010000-\U0010ffff]"
_BREAK = "[\n\r\x85\u2028\u2029]"
# A string that may not be a plain scalar in block context (beyond being multi-line or special):
# an indicator first, a leading or trailing space, ': ' or a final ':', ' #'.
_NOT_PLAIN = re.compile(
    r"^(?:[ #,\[\]{}&*!|>'\"%@`]|[-?:](?:[ \t]|\Z)|---|\.\.\.)"
    r"| \Z|:(?:[ \t]|\Z)|[ \t]#"
    f"|{_NOT_PRINTABLE}|{_BREAK}"
)
# ...nor single-quoted: a line break next to a space, or a special character.
_NOT_SINGLE = re.compile(f"{_NOT_PRINTABLE}|{_BREAK} | {_BREAK}")
# ...nor a literal block: a space before a line break, a trailing space, a special character.
_NOT_LITERAL = re.compile(f"{_NOT_PRINTABLE}| {_BREAK}| \\Z")
_ANY_BREAK = re.compile(_BREAK)
# The common case, settled without further checks: no spaces, nothing special.
_SAFE_PLAIN = re.compile(r"[A-Za-z/_$(][A-Za-z0-9/_$().=+-]*(?::[A-Za-z0-9/_$().=+-]+)*")

# Double-quoted: what needs an escape (besides everything, after a leading byte-order mark).
_ESCAPED = re.compile(
    '[\x00-\x1f"\\\\\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff\U00010000-\U0010ffff]'
)
_SHORT_ESCAPES = {
    "\x00": "\\0",
    "\x07": "\\a",
    "\x08": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\x0b": "\\v",
    "\x0c": "\\f",
    "\r": "\\r",
    "\x1b": "\\e",
    '"': '\\"',
    "\\": "\\\\",
    "\x85": "\\N",
    "\xa0": "\\_",
    "\u2028": "\\L",
    "\u2029": "\\P",
}

# Where a scalar may be folded: a single space with no space before it (and, but for
# double-quoted scalars, none after it); never its first or last character.
_FOLD_PLAIN = re.compile(r"(?<! ) (?! )")
_FOLD_DOUBLE = re.compile(r"(?<! ) ")
_LITERAL_LINES = re.compile("(\n|\u2028|\u2029)")
_LINE_BREAKS = frozenset("\n\u2028\u2029")
_WORD_START = frozenset("yYnNtTfFoO")  # may be a YAML 1.1 bool or a null

_PLAIN, _SINGLE, _DOUBLE, _LITERAL = range(4)


def _escape(char: str) -> str:
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"


def _escape_match(match: re.Match[str]) -> str:
    return _escape(match.group())


def _double_body(text: str) -> str:
    if text.startswith("\ufeff"):
        # go-yaml checks for the byte-order mark at the start of the string, not at the
        # character: a string that starts with one has every character escaped.
        return "".join(_escape(char) for char in text)
    return _ESCAPED.sub(_escape_match, text)


@functools.lru_cache(maxsize=8192)
def _style(text: str) -> tuple[int, str]:
    """The scalar style go-yaml v2 picks for a string, and the text inside its quotes."""
    if "\n" in text:
        if _NOT_LITERAL.search(text):
            return _DOUBLE, _double_body(text)
        return _LITERAL, text
    if goscalar.is_string_v2(text):
        if not _NOT_PLAIN.search(text):
            return _PLAIN, text
        if not _NOT_SINGLE.search(text):
            return _SINGLE, text.replace("'", "''")
    return _DOUBLE, _double_body(text)


def _fold(body: str, column: int, indent: int, double: bool) -> str:
    """``body`` (starting at ``column``) with a line break for each space go-yaml folds at."""
    pieces = []
    start = 0
    start_column = column
    last = len(body) - 1
    for match in (_FOLD_DOUBLE if double else _FOLD_PLAIN).finditer(body, 1):
        at = match.start()
        if at >= last:
            break
        if start_column + at - start > _WIDTH:
            pieces.append(body[start:at])
            start = at + 1
            if double and body[start] == " ":
                # an escaped line break keeps the space that follows it
                pieces.append("\n" + " " * indent + "\\")
                start_column = indent + 1
            else:
                pieces.append("\n" + " " * indent)
                start_column = indent
    pieces.append(body[start:])
    return "".join(pieces)


def _single_with_breaks(body: str, column: int, indent: int) -> str:
    """A single-quoted body holding U+2028/U+2029, written the way go-yaml's loop writes it.

    Such a break puts go-yaml at column 0 without a line feed; before the next character that
    is not a space it indents (with a line feed only if the spaces already reach the indent).
    """
    out = []
    spaces = breaks = indention = whitespace = False
    last = len(body) - 1

    def write_indent() -> None:
        nonlocal column, indention, whitespace
        if not indention or column > indent or (column == indent and not whitespace):
            out.append("\n")
            column = 0
        out.append(" " * (indent - column))
        column = max(column, indent)
        indention = whitespace = True

    for index, char in enumerate(body):
        if char == " ":
            following = body[index + 1] if index < last else ""
            if not spaces and column > _WIDTH and 0 < index < last and following != " ":
                write_indent()
            else:
                out.append(char)
                column += 1
            spaces = True
        elif char in _LINE_BREAKS:
            out.append(char)
            column = 0
            indention = breaks = True
        else:
            if breaks:
                write_indent()
            out.append(char)
            column += 1
            indention = spaces = breaks = False
    return "".join(out)


def _literal(text: str, indent: int) -> str:
    """A literal block scalar from its indicator to the end of its last line."""
    header = "|"
    if text[0] == " " or text[0] in _LINE_BREAKS:
        header += "2"  # go-yaml's indentation indicator is its indent step, whatever the depth
    if text[-1] not in _LINE_BREAKS:
        header += "-"
    elif len(text) == 1 or text[-2] in _LINE_BREAKS:
        header += "+"
    pad = " " * indent
    parts = [header, "\n"]
    for index, part in enumerate(_LITERAL_LINES.split(text)):
        if index % 2:
            parts.append(part)
        elif part:
            parts.append(pad + part)
    if text[-1] not in _LINE_BREAKS:
        parts.append("\n")
    return "".join(parts)


def _string_text(text: str, column: int, indent: int) -> str:
    """A string that is not a simple key, from ``column`` through the end of its line.

    A rendering that cannot depend on where it is written (no space to fold at, no line
    break) is remembered in ``_TEXTS``, with the space that separates it from ``:`` or ``-``.
    """
    if _SAFE_PLAIN.fullmatch(text) and (text[0] not in _WORD_START or goscalar.is_string_v2(text)):
        _remember(_TEXTS, text, " " + text + "\n")
        return text + "\n"
    style, body = _style(_normalize_str(text))
    if style == _LITERAL:
        return _literal(body, indent)
    if style == _SINGLE and ("\u2028" in body or "\u2029" in body):
        return "'" + _single_with_breaks(body, column + 1, indent) + "'\n"
    if " " not in body:
        written = _QUOTES[style] + body + _QUOTES[style]
        _remember(_TEXTS, text, " " + written + "\n")
        return written + "\n"
    if style == _PLAIN:
        if column + len(body) > _WIDTH + 2:
            body = _fold(body, column, indent, double=False)
        return body + "\n"
    if column + len(body) > _WIDTH:
        body = _fold(body, column + 1, indent, double=style == _DOUBLE)
    return _QUOTES[style] + body + _QUOTES[style] + "\n"


def _head(key: str) -> str:
    """``key:`` as go-yaml writes a simple key, or "" when the key needs the ``? `` form."""
    head = _HEADS.get(key)
    if head is None:
        text = _normalize_key(key)
        if len(text.encode()) > _SIMPLE_KEY_BYTES or _ANY_BREAK.search(text):
            head = ""
        else:
            style, body = _style(text)
            head = _QUOTES[style] + body + _QUOTES[style] + ":"
        _remember(_HEADS, key, head)
    return head


def _remember(cache: dict[str, str], key: str, text: str) -> None:
    if len(cache) >= _CACHE_SIZE:
        cache.clear()  # crude, but the entries in use are back after one resource
    cache[key] = text


_QUOTES = {_PLAIN: "", _SINGLE: "'", _DOUBLE: '"'}
_CACHE_SIZE = 1 << 16
# Texts that do not depend on their place: a scalar (with the space before it) and a key.
_TEXTS: dict[str, str] = {}
_HEADS: dict[str, str] = {}


# --- key order -------------------------------------------------------------------------------


def _wrap64(number: int) -> int:
    return (number + 2**63) % 2**64 - 2**63


def key_less(a: str, b: str) -> bool:
    """go-yaml v2's keyList.Less for two strings (sorter.go)."""
    for i in range(min(len(a), len(b))):
        ca, cb = a[i], b[i]
        if ca == cb:
            continue
        a_letter, b_letter = ca.isalpha(), cb.isalpha()
        if a_letter and b_letter:
            return ca < cb
        if a_letter or b_letter:
            return b_letter
        a_number = b_number = 0
        if ca == "0" or cb == "0":
            j = i - 1
            while j >= 0 and a[j].isdecimal():
                if a[j] != "0":
                    a_number = b_number = 1
                    break
                j -= 1
        a_end = i
        while a_end < len(a) and a[a_end].isdecimal():
            a_number = _wrap64(a_number * 10 + ord(a[a_end]) - 48)
            a_end += 1
        b_end = i
        while b_end < len(b) and b[b_end].isdecimal():
            b_number = _wrap64(b_number * 10 + ord(b[b_end]) - 48)
            b_end += 1
        if a_number != b_number:
            return a_number < b_number
        if a_end != b_end:
            return a_end < b_end
        return ca < cb
    return len(a) < len(b)


def _key_compare(a: str, b: str) -> int:
    return -1 if key_less(a, b) else (1 if key_less(b, a) else 0)


_KEY_ORDER = functools.cmp_to_key(_key_compare)
# For ASCII keys without digits go-yaml's order is code point order with every letter moved
# after every other character; this translation makes Python's sort do exactly that.
_LETTERS_LAST = str.maketrans({c: chr(ord(c) + 0x80) for c in map(chr, range(128)) if c.isalpha()})
_NO_DIGITS_ASCII = re.compile("[\x00-\x2f\x3a-\x7f]*")
_ORDER_CACHE: dict[tuple[str, ...], list[str]] = {}


def _sorted_keys(mapping: dict[str, Any]) -> list[str]:
    keys = tuple(mapping)
    order = _ORDER_CACHE.get(keys)
    if order is None:
        if all(_NO_DIGITS_ASCII.fullmatch(key) for key in keys):
            order = sorted(keys, key=lambda key: key.translate(_LETTERS_LAST))
        else:
            order = sorted(keys, key=_KEY_ORDER)
        if len(_ORDER_CACHE) >= 4096:
            _ORDER_CACHE.clear()
        _ORDER_CACHE[keys] = order
    return order


# --- blocks ----------------------------------------------------------------------------------
# The hot path: dispatch on exact types, text from the caches, one append per line. Anything
# else (subclasses, numbers, None, empty collections) goes through _value and _item.


def _mapping(mapping: dict[str, Any], indent: int, out: list[str], lead: str) -> None:
    """A non-empty block mapping with keys at ``indent``; ``lead`` replaces the first key's
    indentation (after ``-`` or ``:`` it is a single space)."""
    pad = " " * indent
    inner = indent + 2
    prefix = lead
    append = out.append
    heads = _HEADS
    texts = _TEXTS
    for key in _sorted_keys(mapping) if len(mapping) > 1 else mapping:
        value = mapping[key]
        head = heads.get(key) or _head(key)
        kind = type(value)
        if not head:
            _explicit_entry(key, value, indent, out, prefix)
        elif kind is str:
            text = texts.get(value)
            if text is None:
                text = " " + _string_text(value, indent + len(head) + 1, inner)
            append(prefix + head + text)
        elif kind is dict and value:
            append(prefix + head + "\n")
            _mapping(value, inner, out, " " * inner)
        elif kind is list and value:
            append(prefix + head + "\n")
            _sequence(value, indent, out, pad)
        elif kind is int and _INT64_MIN <= value < _UINT64_END:
            append(f"{prefix}{head} {value}\n")
        else:
            append(prefix + head)
            _value(value, indent, indent + len(head), out)
        prefix = pad


def _sequence(items: list[Any], indent: int, out: list[str], lead: str) -> None:
    """A non-empty block sequence whose ``-`` are at ``indent``; ``lead`` replaces the first
    item's indentation."""
    pad = " " * indent + "-"
    prefix = lead + "-"
    append = out.append
    texts = _TEXTS
    for item in items:
        if type(item) is str:
            text = texts.get(item)
            if text is None:
                text = " " + _string_text(item, indent + 2, indent + 2)
            append(prefix + text)
        else:
            append(prefix)
            _item(item, indent, out)
        prefix = pad


def _value(value: Any, indent: int, column: int, out: list[str]) -> None:
    """A mapping value after ``key:`` at ``indent``; ``column`` is the one after the colon."""
    if isinstance(value, str):
        out.append(" " + _string_text(value, column + 1, indent + 2))
    elif isinstance(value, dict):
        if value:
            out.append("\n")
            _mapping(value, indent + 2, out, " " * (indent + 2))
        else:
            out.append(" {}\n")
    elif isinstance(value, list):
        if value:
            out.append("\n")
            _sequence(value, indent, out, " " * indent)
        else:
            out.append(" []\n")
    else:
        out.append(" " + _other_scalar(value) + "\n")


def _item(item: Any, indent: int, out: list[str]) -> None:
    """What follows a ``-`` (or the ``:`` of a ``? key``) at ``indent``."""
    if isinstance(item, str):
        out.append(" " + _string_text(item, indent + 2, indent + 2))
    elif isinstance(item, dict):
        if item:
            _mapping(item, indent + 2, out, " ")
        else:
            out.append(" {}\n")
    elif isinstance(item, list):
        if item:
            _sequence(item, indent + 2, out, " ")
        else:
            out.append(" []\n")
    else:
        out.append(" " + _other_scalar(item) + "\n")


def _other_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        normalized = _normalize_int(value)
        return str(normalized) if isinstance(normalized, int) else _float_text(normalized)
    if isinstance(value, float):
        return _float_text(value)
    raise TypeError(f"{type(value).__name__} is not JSON-like data")


def _explicit_entry(key: str, value: Any, indent: int, out: list[str], prefix: str) -> None:
    """``? key`` then ``: value``, for a key too long or with a line break."""
    out.append(prefix + "? " + _string_text(key, indent + 2, indent + 2))
    out.append(" " * indent + ":")
    _item(value, indent, out)


def _document(resource: Any) -> str:
    out: list[str] = []
    if isinstance(resource, dict) and resource:
        _mapping(resource, 0, out, "")
    elif isinstance(resource, list) and resource:
        _sequence(resource, 0, out, "")
    elif isinstance(resource, str):
        out.append(_string_text(resource, 0, 2))
    elif isinstance(resource, dict):
        out.append("{}\n")
    elif isinstance(resource, list):
        out.append("[]\n")
    else:
        out.append(_other_scalar(resource) + "\n")
    return "".join(out)


def dump_documents(resources: Sequence[Any]) -> str:
    """The text ``kustomize build`` prints for ``resources``, in the given order.

    Each document ends with a line feed and the next one starts after ``---``; no resources
    print nothing. Raises ValueError or TypeError as ``normalize`` does.
    """
    return "---\n".join(_document(resource) for resource in resources)
