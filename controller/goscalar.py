"""How go-yaml resolves an untagged plain scalar: the one rule kustomize both reads and quotes by.

Position in the flow: fleet repo bytes -> ``yamlsafe`` (reads each plain scalar the way go-yaml
v3 does, which is what kustomize reads resources with) -> render -> ``render.emit`` (prints a
string quoted exactly when go-yaml v2, which kustomize prints with, would read it back as
something other than a string). Pure.

The two go-yaml versions share nearly everything. Words: v3 knows only ``true``/``false``
(three spellings each), v2 also the YAML 1.1 words ``yes``, ``no``, ``on``, ``off``, ``y`` and
``n``. Then both try, in this order, a timestamp, Go's ``strconv.ParseInt`` with base 0 (so
``012`` is octal, ``0b101``/``0o17``/``0x1F`` have their prefixes, one sign is allowed,
underscores anywhere are dropped first), ``ParseUint`` (up to 2**64-1, no sign), a decimal float
(one that overflows is not a float at all but a string: ``1e400``), and last ``ParseInt`` of
what follows a ``0b`` prefix (v3: also ``0o``), which takes a sign there: ``0b-101`` is -5.

A timestamp is resolved only from the four layouts go-yaml accepts, with Go's ``time.Parse``
leniencies (one- or two-digit month, day, hour, minute and second; a fraction after ``.`` or
``,`` of any length, cut to nanoseconds; one or more spaces in the space-separated layout;
offsets up to 24:60). Decoded into ``interface{}`` it is a ``time.Time``, which JSON prints in
RFC 3339 with nanoseconds, so that text is its value here.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["TYPED_START", "Tag", "is_string_v2", "resolve", "resolve_v2"]

Tag = Literal["null", "bool", "int", "float", "timestamp", "str"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1

_V3_WORDS: dict[str, tuple[Tag, object]] = {
    **dict.fromkeys(("true", "True", "TRUE"), ("bool", True)),
    **dict.fromkeys(("false", "False", "FALSE"), ("bool", False)),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), ("null", None)),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), ("float", float("nan"))),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), ("float", float("inf"))),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), ("float", float("-inf"))),
}
_V2_WORDS: dict[str, tuple[Tag, object]] = {
    **_V3_WORDS,
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "on", "On", "ON"), ("bool", True)),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "off", "Off", "OFF"), ("bool", False)),
}

# go-yaml looks at the first byte only to decide what to try: a word from the table, a float
# that starts with '.', or a number/timestamp after a sign or digit. Anything else is a string.
_WORD_START = frozenset("yYnNtTfFoO~")
_NUMBER_START = frozenset("+-0123456789")
TYPED_START = _WORD_START | _NUMBER_START | {"."}

# strconv.ParseInt(s, 0, 64) after the underscores are gone: a leading 0 means octal.
_GO_INT = re.compile(
    r"([-+]?)(?:0[xX]([0-9a-fA-F]+)|0[bB]([01]+)|0[oO]([0-7]+)|(0[0-7]*)|([1-9][0-9]*))"
)
# go-yaml's own float pattern, applied to the text with underscores removed.
_YAML_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
# strconv.ParseFloat of a text starting with '.': underscores only between digits.
_DOT_FLOAT = re.compile(r"\.[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+(?:_[0-9]+)*)?")
# isBase60Float in go-yaml v2's encoder: quoted for the sake of YAML 1.1 readers.
_BASE60_FLOAT = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")

# time.Parse with go-yaml's layouts "2006-1-2T15:4:5.999999999Z07:00" (and with 't'),
# "2006-1-2 15:4:5.999999999" and "2006-1-2". Each one- or two-digit field is read greedily.
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})"
    r"(?:"
    r"(?:[Tt]|( +))([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(?:[.,]([0-9]+))?"
    r"(Z|[-+][0-9]{2}:[0-9]{2})?"
    r")?"
)
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def resolve(text: str, *, timestamps: bool = True) -> tuple[Tag, object]:
    """The tag and value go-yaml v3 gives the untagged plain scalar ``text``.

    Values are None, bool, int, float (including nan and infinities), the RFC 3339 text of a
    timestamp, or ``text`` itself. A timestamp whose zone offset JSON cannot print (24 hours
    or more) has the value None: kustomize fails on it. ``timestamps=False`` skips them, as
    go-yaml does for a scalar with an explicit tag.
    """
    if text and text[0] not in TYPED_START:
        return "str", text
    return _resolve(text, _V3_WORDS, timestamps, _V3_PREFIXES)


def resolve_v2(text: str) -> tuple[Tag, object]:
    """The tag and value go-yaml v2 (YAML 1.1 words: ``yes``, ``on``, ``y``...) gives ``text``;
    kustomize reads kustomization files this way."""
    if text and text[0] not in TYPED_START:
        return "str", text
    return _resolve(text, _V2_WORDS, False, _V2_PREFIXES)


def is_string_v2(text: str) -> bool:
    """Whether go-yaml v2 reads the plain scalar ``text`` back as a string.

    When it does not, its encoder double-quotes the string; base-60 floats (``1:20``) are
    quoted too although v2 reads them as strings.
    """
    if text and text[0] not in TYPED_START:
        return True
    if _resolve(text, _V2_WORDS, True, _V2_PREFIXES)[0] != "str":
        return False
    return not (":" in text and _BASE60_FLOAT.fullmatch(text))


def _resolve(
    text: str,
    words: dict[str, tuple[Tag, object]],
    timestamps: bool,
    prefixes: tuple[tuple[str, int], ...],
) -> tuple[Tag, object]:
    word = words.get(text)
    if word is not None:
        return word
    first = text[0]
    if first == ".":
        if _DOT_FLOAT.fullmatch(text):
            value = float(text.replace("_", ""))
            if value != float("inf"):
                return "float", value
        return "str", text
    if first not in _NUMBER_START:
        return "str", text
    if timestamps and first != "+" and first != "-":
        stamp = _timestamp(text)
        if stamp is not False:
            return "timestamp", stamp
    plain = text.replace("_", "")
    number = _go_int(plain)
    if number is not None:
        return "int", number
    if _YAML_FLOAT.fullmatch(plain):
        value = float(plain)
        if abs(value) != float("inf"):  # Go: ErrRange, so not a float
            return "float", value
    number = _prefixed_int(plain, prefixes)
    if number is not None:
        return "int", number
    return "str", text


def _go_int(plain: str) -> int | None:
    match = _GO_INT.fullmatch(plain)
    if match is None:
        return None
    sign, hexa, binary, octal, leading_zero, decimal = match.groups()
    if hexa is not None:
        number = int(hexa, 16)
    elif binary is not None:
        number = int(binary, 2)
    elif octal is not None:
        number = int(octal, 8)
    elif leading_zero is not None:
        number = int(leading_zero, 8)
    elif len(decimal) > 20:
        return None  # past 2**64 anyway, and int() refuses very long decimal texts
    else:
        number = int(decimal)
    return _fits(-number if sign == "-" else number, signed=bool(sign))


def _fits(number: int, signed: bool) -> int | None:
    """``number`` if ParseInt, or (without a sign) ParseUint, takes it in 64 bits."""
    if _INT64_MIN <= number <= _INT64_MAX:
        return number
    if not signed and 0 <= number <= _UINT64_MAX:
        return number
    return None


def _prefixed_int(plain: str, prefixes: tuple[tuple[str, int], ...]) -> int | None:
    """go-yaml's last try: ``strconv.ParseInt(text[2:], base)`` after a ``0b`` (v3 also
    ``0o``) prefix, which takes a sign after the prefix (``0b-101`` is -5), or the same after
    ``-0b`` with the minus moved in front of the digits."""
    negative = plain[:1] == "-"
    for prefix, base in prefixes:
        if plain.startswith(prefix, 1 if negative else 0):
            match = _PREFIXED_DIGITS[base].fullmatch(plain, 3 if negative else 2)
            if match is None or (negative and match[1]):
                return None
            number = int(match[2], base)
            if negative or match[1] == "-":
                return _fits(-number, signed=True)
            return _fits(number, signed=bool(match[1]))
    return None


_V2_PREFIXES = (("0b", 2),)
_V3_PREFIXES = (("0b", 2), ("0o", 8))
_PREFIXED_DIGITS = {2: re.compile("([-+]?)([01]+)"), 8: re.compile("([-+]?)([0-7]+)")}


def _timestamp(text: str) -> str | Literal[False] | None:
    """RFC 3339 text of a go-yaml timestamp; None if JSON cannot print it; False if none."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return False
    year, month, day = int(match[1]), int(match[2]), int(match[3])
    spaced, hour_text, fraction, zone = match[4], match[5], match[8], match[9]
    if hour_text is not None and (spaced is None) == (zone is None):
        return False  # 'T' needs a zone, the spaced layout takes none
    if not 1 <= month <= 12 or not 1 <= day <= _days_in(month, year):
        return False
    stamp = f"{year:04d}-{month:02d}-{day:02d}T"
    if hour_text is None:
        return stamp + "00:00:00Z"
    hour, minute, second = int(hour_text), int(match[6]), int(match[7])
    if hour > 23 or minute > 59 or second > 59:
        return False
    stamp += f"{hour:02d}:{minute:02d}:{second:02d}"
    if fraction:
        stamp += ("." + fraction[:9].ljust(9, "0")).rstrip("0").rstrip(".")
    if zone is None or zone == "Z":
        return stamp + "Z"
    zone_hours, zone_minutes = int(zone[1:3]), int(zone[4:6])
    if zone_hours > 24 or zone_minutes > 60:
        return False
    offset = zone_hours * 60 + zone_minutes
    if offset == 0:
        return stamp + "Z"
    if offset >= 24 * 60:
        return None  # time.Time.MarshalJSON: timezone hour outside of range [0,23]
    return stamp + f"{zone[0]}{offset // 60:02d}:{offset % 60:02d}"


def _days_in(month: int, year: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _DAYS_IN_MONTH[month]
