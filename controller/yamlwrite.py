"""A small YAML writer for the documents the controller writes itself (status branch files).

Position in the flow: statusdocs, registrydocs -> **yamlwrite** -> bytes for the status writer.
Line by line, with no YAML library: fast (ten thousand documents at start-up), and exact: every
string reads back as the same string through any YAML 1.1 or 1.2 reader.
"""

from __future__ import annotations

import re

__all__ = ["entry", "scalar"]

# Plain (unquoted) only when no YAML reader could take it for anything but this string.
# A letter first; then letters, digits, spaces and some punctuation; a colon only inside a
# word (": " would start a mapping); no "#" (" #" would start a comment); no trailing space.
_PLAIN = re.compile(r"[A-Za-z](?:[A-Za-z0-9._/+(),' -]|:(?=[^\s]))*(?<! )")
_WORDS_OF_OTHER_TYPES = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", '"': '\\"', "\\": "\\\\", "\0": "\\0"}


def entry(indent: int, key: str, value: str | None) -> str:
    """``key: value`` at ``indent``; a multi-line text as a literal block, readable in diffs."""
    pad = " " * indent
    if value is None:
        return f"{pad}{key}: null"
    if _fits_literal_block(value):
        # content is indented two past the key; for "- resource" that is past the dash too
        content_pad = " " * (indent + 2 + (2 if key.startswith("- ") else 0))
        body = value[:-1] if value.endswith("\n") else value
        chomp = "+" if value.endswith("\n\n") else ("" if value.endswith("\n") else "-")
        lines = [f"{content_pad}{line}" if line else "" for line in body.split("\n")]
        return f"{pad}{key}: |{chomp}\n" + "\n".join(lines)
    return f"{pad}{key}: {scalar(value)}"


def scalar(text: str) -> str:
    if _PLAIN.fullmatch(text) and text.lower() not in _WORDS_OF_OTHER_TYPES:
        return text
    return '"' + "".join(_escape(char) for char in text) + '"'


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if _printable(char):
        return char
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"  # a lone surrogate cannot be written in UTF-8 (nor escaped in YAML)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _printable(char: str) -> bool:
    # YAML's printable set, minus what some reader treats as a line break or a byte order
    # mark (NEL, LS, PS, BOM): those are escaped instead.
    code = ord(char)
    return (
        0x20 <= code <= 0x7E
        or 0xA0 <= code <= 0xD7FF
        or (0xE000 <= code <= 0xFFFD and code not in (0xFEFF,))
        or 0x10000 <= code <= 0x10FFFF
    ) and code not in (0x2028, 0x2029)


def _fits_literal_block(text: str) -> bool:
    # A literal block keeps every character as written; it cannot hold what must be escaped,
    # and its indentation is taken from the first line, which must therefore not start blank.
    return (
        "\n" in text
        and text[0] not in " \t\n"
        and all(char == "\n" or _printable(char) for char in text)
    )
