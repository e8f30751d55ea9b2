"""Record the printer's golden cases from the real ``kubectl kustomize``, or fuzz against it.

Usage (with the project's virtualenv Python; needs kubectl with Kustomize v5.5):

    python tests/emit_cases/record.py [--kubectl PATH] [NAME ...]
        writes cases/<name>/input.yaml and cases/<name>/expected.yaml (what kubectl printed),
        or expected.error (kubectl's complaint) when kubectl refuses the input
    python tests/emit_cases/record.py --fuzz N [--seed S]
        builds N random resources from a fixed seed, has kubectl print them, and compares
        with ``render.emit``; prints every difference and writes nothing
    python tests/emit_cases/record.py --fuzz-scalars N [--seed S]
        the same for N random plain scalars (numbers, timestamps, words) in block YAML, which
        checks how ``yamlsafe`` reads them against go-yaml v3

Each case is one kustomization with ``resources: [input.yaml]``. The tricky values sit in a
custom kind (``Thing``) that kustomize does not transform, or in a ConfigMap's data.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CASES_DIR = Path(__file__).parent / "cases"

HEADER = "apiVersion: example.com/v1\nkind: Thing\nmetadata:\n  name: {name}\n"


def thing(body: str, name: str = "t") -> str:
    """A Thing resource whose fields after metadata are ``body`` (YAML, top-level keys)."""
    return HEADER.format(name=name) + body


def values(items: dict[str, str]) -> str:
    """A Thing whose spec holds each key with its (YAML-written) value."""
    lines = "".join(f"  {dq(key)}: {value}\n" for key, value in items.items())
    return thing("spec:\n" + lines)


def dq(text: str) -> str:
    """``text`` as a YAML double-quoted scalar that any YAML reader decodes back exactly."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def strings(items: dict[str, str]) -> str:
    """A Thing whose spec holds each key with the given Python string value."""
    return values({key: dq(value) for key, value in items.items()})


INDICATORS = {
    "-": "dash",
    "?": "question",
    ":": "colon",
    ",": "comma",
    "[": "lbracket",
    "]": "rbracket",
    "{": "lbrace",
    "}": "rbrace",
    "#": "hash",
    "&": "amp",
    "*": "star",
    "!": "bang",
    "|": "pipe",
    ">": "gt",
    "'": "quote",
    '"': "dquote",
    "%": "percent",
    "@": "at",
    "`": "backtick",
}
LONG_WORDS = " ".join(f"word{n:02d}" for n in range(40))

CASES: dict[str, str] = {
    # --- reading: how go-yaml v3 resolves plain scalars ------------------------------------
    "read_ints": values(
        {
            "decimal": "12",
            "octal_leading_zero": "012",
            "octal_0o": "0o17",
            "octal_0O": "0O17",
            "binary": "0b101",
            "binary_negative": "-0b101",
            "hex": "0x1F",
            "hex_upper_prefix": "0X1f",
            "plus": "+12",
            "underscores": "1_000",
            "double_underscore": "1__0",
            "minus_zero": "-0",
            "not_octal": "08",
            "octal_negative": "-0o17",
        }
    ),
    "read_int_limits": values(
        {
            "int64_max": "9223372036854775807",
            "int64_min": "-9223372036854775808",
            "uint64_first": "9223372036854775808",
            "uint64_max": "18446744073709551615",
            "past_uint64": "18446744073709551616",
            "below_int64": "-9223372036854775809",
            "hex_uint64_max": "0xFFFFFFFFFFFFFFFF",
            "hex_negative_too_big": "-0xFFFFFFFFFFFFFFFF",
            "plus_uint64_max": "+18446744073709551615",
            "octal_overflow": "0777777777777777777777777",
            "huge_decimal": "1" + "0" * 30,
        }
    ),
    "read_floats": values(
        {
            "trailing_zero": "1.50",
            "exponent": "1e3",
            "leading_dot": ".5",
            "trailing_dot": "1.",
            "plus_dot": "+.5",
            "dot_underscore": ".5_0",
            "negative_exponent": "-1.5e-3",
            "integral": "3.0",
            "negative_zero": "-0.0",
            "overflow": "1e400",
            "underflow": "1e-400",
            "not_a_number": "12e",
            "big_integral": "9223372036854775808.0",
            "ten_to_19": "1e19",
            "ten_to_20": "1e20",
            "ten_to_21": "1e21",
        }
    ),
    "read_words": values(
        {
            "yes": "yes",
            "no": "no",
            "on": "on",
            "off": "off",
            "y": "y",
            "upper_true": "TRUE",
            "title_true": "True",
            "false": "false",
            "tilde": "~",
            "null_title": "Null",
            "null_upper": "NULL",
            "empty": "",
            "mixed_case": "tRUE",
            "merge_value": "<<",
        }
    ),
    # after base-0 parsing fails, go-yaml retries ParseInt(text[2:], base) for a 0b prefix (v3:
    # also 0o), which takes a sign after the prefix
    "read_signed_after_prefix": values(
        {
            "binary_minus": "0b-101",
            "binary_plus": "0b+101",
            "binary_minus_zero": "0b-0",
            "octal_minus": "0o-17",
            "octal_plus": "0o+17",
            "minus_binary_minus": "-0b-1",
            "minus_octal_plus": "-0o+17",
            "upper_prefix": "0B-1",
            "plus_binary_minus": "+0b-1",
            "binary_min": "0b-1" + "0" * 63,
            "binary_too_small": "0b-1" + "0" * 64,
            "binary_underscores": "0b_-1_0",
        }
    ),
    "quote_signed_after_prefix": strings(
        {
            "binary_minus": "0b-101",
            "binary_plus": "0b+1",
            "octal_minus": "0o-17",
            "octal_plus": "0o+17",
            "minus_binary_minus": "-0b-1",
            "upper_prefix": "0B-1",
        }
    ),
    "read_timestamps": values(
        {
            "date": "2001-12-14",
            "short_date": "2001-1-2",
            "leap_day": "2000-02-29",
            "not_leap_day": "2001-02-29",
            "bad_month": "2001-13-01",
            "lower_t": "2001-12-14t21:59:43.10-05:00",
            "utc": "2001-12-14T21:59:43Z",
            "spaced": "2001-12-14 21:59:43.10",
            "two_spaces": "2001-12-14  21:59:43",
            "comma_fraction": "2001-12-14 21:59:43,5",
            "ten_digit_fraction": "2001-12-14T21:59:43.1234567891Z",
            "zero_fraction": "2001-12-14T21:59:43.000Z",
            "short_fields": "2001-1-2T3:4:5+01:00",
            "minus_zero_offset": "2001-12-14T21:59:43-00:00",
            "plus_zero_offset": "2001-12-14T00:00:00+00:00",
            "offset_60_minutes": "2001-12-14T21:59:43+05:60",
            "offset_23": "2001-12-14T21:59:43+23:00",
            "year_zero": "0000-01-01",
            "hour_24": "2001-12-14T24:00:00Z",
            "second_60": "2001-12-14T21:59:60Z",
            "lower_z": "2001-12-14T21:59:43z",
            "no_seconds": "2001-12-14T21:59Z",
            "no_zone": "2001-12-14T21:59:43",
            "spaced_with_zone": "2001-12-14 21:59:43Z",
            "compact_offset": "2001-12-14T21:59:43+0500",
            "dot_no_digits": "2001-12-14T21:59:43.Z",
            "five_digit_year": "12345-01-01",
        }
    ),
    "read_tags": values(
        {
            "int_tag_on_quoted": '!!int "12"',
            "float_tag_on_int": "!!float 1",
            "str_tag": "!!str 12",
            "null_tag": '!!null ""',
            "bool_tag_quoted": '!!bool "true"',
        }
    ),
    "read_styles": thing(
        "# a comment\n"
        "spec:\n"
        "  flow_map: {b: 1, a: [x, y]}  # trailing comment\n"
        "  flow_seq: [3, 2, 1]\n"
        "  folded: >\n"
        "    one\n"
        "    two\n"
        "\n"
        "    three\n"
        "  literal_keep: |+\n"
        "    a\n"
        "\n"
        "  single: 'it''s'\n"
        "  anchored: &x [1, 2]\n"
        "  alias: *x\n"
        "  quoted_key_yes: {'yes': 1}\n"
    ),
    "read_configmap_values": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n"
        "data:\n  int: 1\n  bool: true\n  none: null\n  text: x\n  quoted: '012'\n"
    ),
    # --- numbers printed back --------------------------------------------------------------
    "print_floats": values(
        {
            "tenth": "0.1",
            "micro": "0.000001",
            "below_micro": "0.0000015",
            "ten_to_minus_7": "1e-7",
            "ten_to_minus_5": "0.00001",
            "ten_to_minus_4": "0.0001",
            "six_digits": "123456.7",
            "seven_digits": "1234567.5",
            "nine_digits": "123456789.5",
            "huge": "1.5e300",
            "max": "1.7976931348623157e308",
            "denormal": "5e-324",
            "negative": "-2.5",
            "negative_small": "-1.5e-10",
            "third": "0.3333333333333333",
            "pi": "3.141592653589793",
            "ten_to_100": "1e100",
        }
    ),
    # --- strings go-yaml v2 would read as something else: double-quoted --------------------
    "quote_words": strings(
        {
            w: w
            for w in (
                *("yes", "Yes", "YES", "y", "Y", "no", "No", "NO", "n", "N"),
                *("on", "On", "ON", "off", "Off", "OFF", "true", "True", "TRUE"),
                *("false", "False", "FALSE", "null", "Null", "NULL", "~"),
            )
        }
        | {"empty": ""}
    ),
    "quote_numbers": strings(
        {
            "int": "1",
            "octal": "012",
            "hex": "0x1F",
            "exponent": "1e3",
            "underscores": "1_000",
            "dot": ".5",
            "trailing_dot": "1.",
            "plus": "+1",
            "minus": "-1",
            "binary": "0b101",
            "octal_0o": "0o17",
            "not_octal": "08",
            "base60": "1:20",
            "base60_long": "190:20:30.15",
            "base60_bad": "1:60",
            "inf": ".inf",
            "minus_inf": "-.Inf",
            "nan": ".NaN",
            "overflow": "1e400",
            "not_number": "12e",
            "date": "2001-12-14",
            "bad_date": "2001-02-29",
            "timestamp": "2001-12-14T21:59:43.10-05:00",
            "nan_word": "nan",
            "infinity": "Infinity",
            "plus_inf": "+.inf",
            "plus_nan": "+.nan",
            "underscore_first": "_1",
            "hex_no_digits": "0x",
            "dot_alone": ".",
            "plus_alone": "+",
            "version": "1.2.3",
        }
    ),
    # --- indicators and spaces: single-quoted or plain -------------------------------------
    "indicators_first": strings(
        {f"{name}_first": char + "a" for char, name in INDICATORS.items()}
        | {f"{name}_alone": char for char, name in INDICATORS.items()}
        | {f"{name}_spaced": char + " a" for char, name in INDICATORS.items() if char in "-?:"}
    ),
    "indicators_inside": strings(
        {
            "colon_space": "a: b",
            "colon_end": "a:",
            "colon_inside": "a:b",
            "url": "http://example.com/x?y=z#frag",
            "space_hash": "a #b",
            "hash_inside": "a#b",
            "three_dashes": "---",
            "three_dashes_word": "--- a",
            "three_dashes_glued": "---a",
            "three_dots": "...",
            "three_dots_glued": "...a",
            "two_dashes": "--a",
            "comma_inside": "a,b",
            "brackets_inside": "a[0]{x}",
            "question_inside": "a?b",
            "quote_inside": "it's",
            "double_quote_inside": 'say "hi"',
            "backslash": "a\\b",
            "dash_space_inside": "a - b",
            "percent_inside": "100%",
            "at_inside": "user@example.com",
            "star_inside": "a*b",
            "pipe_inside": "a|b",
            "image": "registry.example.com:5000/team/app:1.2.3",
            "shell": "echo $HOME && ls -la | grep x > out.txt",
        }
    ),
    "spaces": strings(
        {
            "leading": " a",
            "trailing": "a ",
            "both": " a ",
            "only_one": " ",
            "only_three": "   ",
            "double_inside": "a  b",
            "single_quote_and_space": " it's",
            "leading_yes": " yes",
        }
    ),
    # --- multi-line strings ----------------------------------------------------------------
    "literal_blocks": strings(
        {
            "strip": "a\nb",
            "clip": "a\nb\n",
            "keep": "a\nb\n\n",
            "keep_three": "a\n\n\n",
            "only_newline": "\n",
            "two_newlines": "\n\n",
            "leading_newline": "\na",
            "leading_space": " a\nb",
            "leading_space_clip": "  a\nb\n",
            "inner_blank_line": "a\n\nb",
            "indented_lines": "a\n  b\n    c\n",
            "yes_first": "yes\nno",
            "dash_first": "- a\n- b\n",
            "hash_first": "# not a comment\nx",
            "unicode": "é\nü\n",
            "long_line": LONG_WORDS + "\nend",
            "quotes": 'it\'s "quoted"\n',
        }
    ),
    "multiline_double_quoted": strings(
        {
            "space_before_break": "a \nb",
            "trailing_space": "a\nb ",
            "tab": "a\tb\nc",
            "carriage_return": "a\r\nb",
            "space_after_break": "a\n b",
            "emoji": "😀\nb",
            "long": LONG_WORDS + " \n" + LONG_WORDS,
        }
    ),
    # --- characters ------------------------------------------------------------------------
    "control_characters": strings(
        {
            "nul": "a\x00b",
            "bell": "\x07",
            "backspace": "\x08",
            "tab": "a\tb",
            "tab_only": "\t",
            "vertical_tab": "\x0b",
            "form_feed": "\x0c",
            "carriage_return": "a\rb",
            "escape": "\x1b[0m",
            "unit_separator": "\x1f",
            "soh": "\x01",
        }
    ),
    "unicode": strings(
        {
            "latin": "héllo",
            "cjk": "日本語",
            "greek_key_value": "αβγ",
            "nbsp": "a\xa0b",
            "nbsp_first": "\xa0a",
            "nel_inside": "a\x85b",
            "nel_spaces": "a \x85 b",
            "nel_two": "a\x85\x85b",
            "nel_three": "a\x85 \x85\x85b",
            "nel_only": "\x85",
            "line_separator": "a\u2028b",
            "line_separator_spaces": "a\u2028   b",
            "paragraph_separator": "a\u2029b",
            "bom_first": "\ufeffab c",
            "bom_inside": "a\ufeffb",
            "replacement": "\ufffd",
            "emoji": "😀",
            "emoji_in_text": "smile 😀 now",
            "private_use": "\ue000",
            "combining": "e\u0301",
            "rtl": "שלום",
            "zero_width_space": "a\u200bb",
        }
    ),
    # --- folding at column 80 --------------------------------------------------------------
    "folding_plain": strings(
        {
            "long": LONG_WORDS,
            "exactly_80": "x" * 70 + " " + "y" * 20,
            "long_word": "x" * 120,
            "long_word_then_words": "x" * 90 + " a b c",
            "double_spaces": "ab  " * 40,
            "break_before_double": "x" * 78 + " yy  zz",
            "break_at_81": "x" * 75 + " yy zz",
            "break_at_82": "x" * 76 + " yy zz",
            "many_short": "a " * 60 + "end",
        }
    ),
    "folding_quoted": strings(
        {
            "double_long": "yes " * 30 + "end",
            "double_spaces": "\t" + "ab  " * 30,
            "double_escapes": "\x01 " * 40,
            "double_trailing_spaces": "\t" + "x" * 85 + "   ",
            "single_long": "- " + LONG_WORDS,
            "single_quotes": "'" + "it's " * 30,
            "single_double_spaces": "- " + "ab  " * 30,
            "single_trailing": "x" * 85 + " y ",
            "multiline_double": "a \n" + LONG_WORDS,
        }
    ),
    "folding_nested": thing(
        "spec:\n"
        "  level1:\n"
        "    level2:\n"
        "      level3:\n"
        f"        text: {LONG_WORDS}\n"
        f"        quoted: {dq('- ' + LONG_WORDS)}\n"
        f"        items:\n        - {LONG_WORDS}\n        - - {LONG_WORDS}\n"
        f"        long_key_name_that_pushes_the_value_far_to_the_right_side: {LONG_WORDS}\n"
    ),
    "folding_line_separator": strings(
        {"single": "- " + "word " * 15 + "\u2028" + "   x " * 10 + "\u2028" + "word " * 20}
    ),
    # --- collections -----------------------------------------------------------------------
    "empty_collections": thing(
        "spec:\n"
        "  map: {}\n"
        "  list: []\n"
        "  in_list: [{}, [], [[]], {a: {}}]\n"
        "  nested: {a: {b: {}}}\n"
        "  nulls: [null, ~, '']\n"
    ),
    "nested_lists": thing(
        "spec:\n"
        "  lists: [[a, b], [[c], d], [], [[]]]\n"
        "  maps_in_lists: [{a: 1, b: [x, {c: 2}]}, {d: [[{e: 3}]]}]\n"
        "  deep: [[[[[x]]]]]\n"
        "  map_then_list: {k: [1, 2]}\n"
    ),
    "scalar_kinds": thing(
        "spec:\n  t: true\n  f: false\n  n: null\n  i: -7\n  x: 2.5\n  s: text\n"
        "  list: [true, false, null, 0, -1, 1.5, s]\n"
    ),
    # --- keys ------------------------------------------------------------------------------
    # go-yaml v2's key order is not transitive for some key sets (a2a < a3a < a27 < a2a; also
    # v1beta1 < v2 < v10 < v1beta1), and Go visits map keys in random order: kustomize then
    # prints such keys in a different order from run to run. The sets below have no cycle.
    "key_order_natural": values(
        dict.fromkeys(
            (
                *("a9", "a1", "a01", "a001", "a0", "a00", "a", "b", "B", "_a", "-a", ".a"),
                *("10", "9", "1", "01", "z", "Z", "a_b", "aB", "ab", "a-b", "a.b", "a1b"),
                *("a1a", "x2y10", "x2y9", "x10y1", "v1beta1", "v1", "v1alpha1", "v10"),
            ),
            "1",
        )
    ),
    "key_order_symbols": strings(
        {
            k: "v"
            for k in (
                "DB_HOST",
                "DBA",
                "DB-HOST",
                "DB.HOST",
                "DB HOST",
                "db~x",
                "db|x",
                "db{x",
                "db^x",
                "db[x",
                "db`x",
                "db\\x",
                "dbx",
                "DBX",
                "éa",
                "ea",
                "Éa",
                "日本",
                "\uff41",  # fullwidth a: a letter, but not ASCII
                "٣",
                "3",
                "a٣",
                "a3",
                "",
                " ",
                "!",
            )
        }
    ),
    "key_order_leading_zeros": values(
        dict.fromkeys(
            (
                *("x0", "x00", "x000", "x01", "x1", "x10", "x100", "x00a", "x0-", "x-"),
                *("x10a", "x10-", "x1-", "x99999999999999999999", "x99999999999999999998"),
            ),
            "1",
        )
    ),
    "key_order_versions": values(dict.fromkeys(("v1beta1", "v1", "v1alpha1", "v1beta2"), "1")),
    "keys_quoted": strings(
        {
            k: "v"
            for k in (
                "n",
                "y",
                "yes",
                "on",
                "1",
                "true",
                "null",
                "~",
                "- a",
                "a: b",
                " k",
                "k ",
                "#k",
                "it's",
                "1.5",
                "2001-12-14",
                "a\tb",
                "😀",
                "\ufeffk",
                "k" * 128,
            )
        }
    ),
    "keys_complex": thing(
        "spec:\n"
        f"  {dq('k' * 129)}: short\n"
        f"  {dq('é' * 65)}: bytes over 128\n"
        f"  {dq('a' * 100 + ' ' + 'b' * 100)}: [1, {{x: 1}}]\n"
        f"  {dq('m' * 130)}: {{a: 1, b: [2]}}\n"
        f"  {dq('e' * 131)}: {{}}\n"
        f"  {dq('l' * 132)}: []\n"
        f"  {dq('v' * 133)}: {dq(LONG_WORDS)}\n"
        f"  {dq('line one' + chr(10) + 'line two')}: v\n"
        f"  {dq('trailing ' + chr(10) + 'space')}: v\n"
        f"  {dq('key' + chr(13))}: v\n"
        f"  {dq('ls' + chr(0x2028) + 'x')}: v\n"
        f"  {dq('yes' + chr(10))}: {dq('multi' + chr(10) + 'line')}\n"
        f"  list: [{{{dq('n' * 140)}: 1, b: 2}}]\n"
    ),
    "key_long_json_ok": thing(f"spec:\n  ? {dq('k' * 1022)}\n  : v\n"),
    # --- documents and real resources ------------------------------------------------------
    "documents": (
        thing("spec: {a: 1}\n", name="a")
        + "---\n"
        + thing("spec: {b: 2}\n", name="b")
        + "---\n"
        + thing("spec: {c: 3}\n", name="c")
    ),
    "deployment": (
        "apiVersion: apps/v1\n"
        "kind: Deployment\n"
        "metadata:\n"
        "  name: web\n"
        "  labels: {app: web, tier: frontend, version: '1.10'}\n"
        "  annotations:\n"
        "    description: The front end web server, which serves every page of the site and"
        " proxies the API calls\n"
        "spec:\n"
        "  replicas: 3\n"
        "  selector: {matchLabels: {app: web}}\n"
        "  template:\n"
        "    metadata: {labels: {app: web}}\n"
        "    spec:\n"
        "      containers:\n"
        "      - name: web\n"
        "        image: registry.example.com/team/web:1.2.3\n"
        "        args: [--port=8080, --verbose, 'yes', '0755', '']\n"
        "        ports: [{containerPort: 8080, protocol: TCP}]\n"
        "        env:\n"
        "        - {name: MODE, value: production}\n"
        "        - {name: ENABLED, value: 'true'}\n"
        "        - {name: EMPTY, value: ''}\n"
        "        resources: {limits: {cpu: 500m, memory: 128Mi}, requests: {cpu: '0.25'}}\n"
        "        command:\n"
        "        - sh\n"
        "        - -c\n"
        "        - |\n"
        "          echo start\n"
        "          exec server --config /etc/web/config.yaml\n"
        "        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 10}\n"
    ),
    "configmap_data": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n"
        "data:\n"
        "  LOG_LEVEL: debug\n"
        "  DB_HOST: db.example.com\n"
        "  DB_PORT: '5432'\n"
        "  FEATURE_X: 'on'\n"
        "  config.yaml: |\n"
        "    server:\n"
        "      port: 8080\n"
        "  script.sh: \"#!/bin/sh\\necho 'hi'\\n\"\n"
        "  empty: ''\n"
        "  spaces: '  indented'\n"
    ),
    # --- more placement: folding, blocks and keys in every position -------------------------
    "fold_list_items": thing(
        "spec:\n"
        f"  items:\n  - {LONG_WORDS}\n  - {dq('- ' + LONG_WORDS)}\n  - {dq(chr(9) + LONG_WORDS)}\n"
        f"  nested:\n  - - - {LONG_WORDS}\n"
        f"  in_map:\n  - key: {LONG_WORDS}\n    other: [{LONG_WORDS}]\n"
    ),
    "fold_boundaries": strings(
        {
            f"at{width}": "x" * (width - len(f"  at{width}: ")) + " yy zz" + " w" * 10
            for width in range(76, 86)
        }
        | {
            f"quoted{width}": "- " + "x" * (width - len(f"  quoted{width}: '- ")) + " yy zz"
            for width in range(76, 86)
        }
    ),
    "fold_deep_indent": thing(
        "spec:\n"
        + "".join(f"{'  ' * (level + 1)}l{level:02d}:\n" for level in range(42))
        + f"{'  ' * 43}text: a b c d e f\n"
        + f"{'  ' * 43}quoted: {dq('- a b  c d')}\n"
        + f"{'  ' * 43}list: [a b c, {dq(chr(9) + 'a  b c')}]\n"
    ),
    "fold_double_spaces_quoted": strings(
        {
            "pairs": "\t" + "x" * 80 + "  " + "y" * 5 + "   " + "z" * 80 + "    end",
            "runs": "\t" + " ".join(["w" * 9] * 12) + "  " + " ".join(["v" * 9] * 12),
            "escapes_at_fold": "\t" + "x" * 79 + " \x01 \x02 " + "y" * 80,
        }
    ),
    "literal_positions": thing(
        "spec:\n"
        f"  in_list: [{dq('a' + chr(10) + 'b')}, {dq('c' + chr(10))}, {dq(chr(10) + chr(10))}]\n"
        f"  nested_list: [[{dq('x' + chr(10) + 'y')}]]\n"
        f"  keep_then_more: {dq('a' + chr(10) + chr(10))}\n"
        f"  keep_then_zzz: {dq('b' + chr(10) + chr(10) + chr(10))}\n"
        f"  map_in_list: [{{text: {dq('p' + chr(10) + 'q' + chr(10))}, z: 1}}]\n"
        f"  deep: {{a: {{b: {{c: {dq(' lead' + chr(10) + 'x')}}}}}}}\n"
    ),
    "literal_line_separators": strings(
        {
            "ls": "a\nb\u2028c",
            "ps_end": "a\nb\u2029",
            "ls_space": "a\n\u2028 b",
            "ls_first": "\u2028a\nb",
        }
    ),
    "explicit_keys_in_lists": thing(
        "spec:\n"
        f"  list:\n  - {dq('k' * 140)}: 1\n    b: 2\n"
        f"  - {dq('x' + chr(10) + 'y')}: [1, 2]\n"
        f"  - {dq('t' * 150)}: {dq('x' + chr(10) + 'y' + chr(10))}\n"
    ),
    "keys_numbers_and_words": strings(
        dict.fromkeys(
            ("1", "2", "10", "on", "Off", "y", "n", "N", "~", "0x1", "1.5", "-1", "+1", ".5"), "v"
        )
    ),
    "keys_unicode": strings(
        dict.fromkeys(("é", "e", "ê", "z", "Ω", "ω", "ß", "ss", "ﬁ", "中", "a中", "aZ", "a_"), "v")
    ),
    "values_in_lists": thing(
        "spec:\n"
        "  strings: ['', ' ', 'yes', 'no', '1', '- a', 'a: b', '#', x, 'it''s']\n"
        "  numbers: [0, -0, 012, 0x10, 1.0, 1.5, 1e3, 1e21, 1e-7, 18446744073709551615]\n"
        "  words: [yes, no, true, false, null, ~, on, off]\n"
        # block style: the YAML 1.1 reader the tests use refuses ':' in flow plain scalars
        "  stamps:\n  - 2001-12-14\n  - '2001-12-14'\n  - 2001-12-14 21:59:43.10\n"
    ),
    # not here: an empty value in a flow mapping ({x: }), which kustomize turns into ""
    "nulls": thing(
        "spec:\n  a:\n  b: null\n  c: ~\n  d: [null, ~, ]\n  e: {y: null}\n  f:\n  -\n  - x\n"
    ),
    "deep_nesting": thing(
        "spec:\n  d: " + "[" * 20 + "x, {k: [y]}" + "]" * 20 + "\n"
        "  m: " + "{a: " * 20 + "leaf" + "}" * 20 + "\n"
    ),
    "quote_mixtures": strings(
        {
            "both": 'it\'s "x"',
            "single_first": "'a' and \"b\"",
            "double_first": "\"a\" and 'b'",
            "backslashes": "C:\\path\\to",
            "backslash_n": "a\\nb",
            "dollar": "${VAR}",
            "template": "{{ .Values.x }}",
            "regex": "^[a-z]+$",
            "json": '{"a": [1, 2], "b": "c"}',
            "cron": "*/5 * * * *",
            "glob": "*.yaml",
            "ampersand": "&anchor",
            "bang": "!important",
            "percent": "%d items",
            "at": "@scope/pkg",
            "backtick": "`cmd`",
        }
    ),
    "hash_colon_dash_variants": strings(
        {
            "hash": "#",
            "hash_end": "a#",
            "space_hash_end": "a #",
            "tab_hash": "a\t#b",
            "colons": "::",
            "colon_colon_b": "a::b",
            "colon_end_space": "a: ",
            "url": "http://x",
            "ipv6": "::1",
            "time": "12:30",
            "time_seconds": "12:30:45",
            "time_60": "12:60",
            "dash": "-",
            "dashes": "--",
            "dash_space": "- ",
            "dash_dash": "- -",
            "dash_number": "-1",
            "dash_word": "-a",
            "question": "?",
            "question_space": "? ",
            "question_word": "?a",
            "dots": "..",
            "dots4": "....",
            "dashes4": "----",
        }
    ),
    "tabs_and_edges": strings(
        {
            "tab_first": "\ta",
            "tab_last": "a\t",
            "tab_middle": "a\tb",
            "space_tab": " \t",
            "newline_tab": "a\n\tb",
            "crlf_end": "a\r\n",
        }
    ),
    "read_escapes": values(
        {
            "hex": '"\\x41"',
            "unicode": '"\\u00e9"',
            "long_unicode": '"\\U0001F600"',
            "nbsp": '"\\_"',
            "nel": '"a\\Nb"',
            "line_sep": '"a\\Lb"',
            "para_sep": '"a\\Pb"',
            "escape": '"\\e"',
            "tab": '"\\t"',
            "space_escape": '"\\ "',
            "folded_quoted": '"a\n    b"',
        }
    ),
    "read_block_scalars": thing(
        "spec:\n"
        "  strip: |-\n    a\n    b\n"
        "  keep: |+\n    a\n\n"
        "  indent_indicator: |2\n     lead\n    x\n"
        "  folded_strip: >-\n    a\n    b\n"
        # not here: a folded scalar with more-indented lines or keep chomping, which
        # kustomize's round trip through go-yaml v3's folded writer changes
        "  folded: >\n    one two\n    three\n\n    para\n"
        "  plain_multiline: one\n    two\n    three\n"
        "  last: end\n"
    ),
    "big_configmap": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\n"
        "data:\n"
        + "".join(f"  key{n}: value {n}\n" for n in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89))
        + "".join(f"  KEY_{n}: '{n}'\n" for n in (1, 12, 123))
    ),
    "binary_data": (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n"
        "type: Opaque\n"
        "data:\n"
        "  tls.crt: " + "QUJD" * 60 + "\n"
        "  empty: ''\n"
        "stringData:\n"
        "  password: ' secret with spaces '\n"
    ),
    "service": (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n"
        "  annotations:\n"
        "    service.beta.kubernetes.io/aws-load-balancer-internal: 'true'\n"
        "    prometheus.io/port: '9090'\n"
        "spec:\n"
        "  type: LoadBalancer\n"
        "  selector: {app: web}\n"
        "  ports:\n"
        "  - {name: http, port: 80, targetPort: 8080, protocol: TCP}\n"
        "  - {name: https, port: 443, targetPort: https}\n"
    ),
    "cronjob": (
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: nightly\n"
        "spec:\n"
        "  schedule: '*/5 * * * *'\n"
        "  concurrencyPolicy: Forbid\n"
        "  jobTemplate:\n"
        "    spec:\n"
        "      template:\n"
        "        spec:\n"
        "          restartPolicy: OnFailure\n"
        "          containers:\n"
        "          - name: job\n"
        "            image: busybox:1.36\n"
        "            args: [/bin/sh, -c, 'date; echo Hello from the Kubernetes cluster, this is"
        " a long line that goes on and on']\n"
    ),
    "annotation_json": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  annotations:\n"
        "    kubectl.kubernetes.io/last-applied-configuration: "
        + dq(json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b c"}}) + "\n")
        + "\n"
        "    note: "
        + dq('{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {}}}')
        + "\n"
        "data: {}\n"
    ),
    "documents_mixed": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata: {x: '1'}\n"
        "---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: b\n"
        "spec: {replicas: 1}\n"
        "---\n" + thing("spec: {}\n", name="c")
    ),
    "empty_strings_and_spaces_in_keys": strings(
        {"": "", " ": " ", "  ": "  ", "a b": "a b", "a  b": "a  b", " a": " a", "a ": "a "}
    ),
    "long_words_no_spaces": thing(
        "spec:\n"
        f"  url: https://example.com/{'segment/' * 20}end\n"
        f"  token: {'A' * 300}\n"
        f"  quoted: {dq('yes' + 'X' * 200)}\n"
        f"  single: {dq('- ' + 'Y' * 200)}\n"
    ),
    # --- what kustomize refuses ------------------------------------------------------------
    "refuse_nan": values({"v": ".nan"}),
    "refuse_inf": values({"v": "-.inf"}),
    "refuse_del": strings({"v": "a\x7fb"}),
    "refuse_c1": strings({"v": "a\x80b"}),
    "refuse_noncharacter": strings({"v": "\ufffe"}),
    "refuse_nel_in_key": strings({"a\x85b": "v"}),
    "refuse_nel_document_marker": strings({"v": "a\x85--- b"}),
    "refuse_key_too_long": thing(f"spec:\n  ? {dq('k' * 1023)}\n  : v\n"),
    "refuse_key_too_long_escapes": thing(f"spec:\n  {dq('<' * 171)}: v\n"),
    "refuse_zone_24": values({"v": "2001-12-14T21:59:43+24:00"}),
}


def run_kustomize(kubectl: str, text: str) -> tuple[bool, str]:
    """(succeeded, stdout or stderr) of ``kubectl kustomize`` on one resource file."""
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        (root / "input.yaml").write_text(text, encoding="utf-8")
        (root / "kustomization.yaml").write_text("resources:\n- input.yaml\n", encoding="utf-8")
        done = subprocess.run([kubectl, "kustomize", str(root)], capture_output=True, check=False)
    if done.returncode == 0:
        return True, done.stdout.decode("utf-8")
    message = done.stderr.decode("utf-8", "replace").replace(str(root), "<dir>")
    return False, message


def key_cycles(value: Any) -> list[tuple[str, str, str]]:
    """Three keys of one mapping that go-yaml v2 orders in a circle (a < b < c < a)."""
    from rciots.controller.render import emit

    found = []
    if isinstance(value, dict):
        for a, b, c in itertools.permutations(value, 3):
            if emit.key_less(a, b) and emit.key_less(b, c) and emit.key_less(c, a):
                found.append((a, b, c))
        for item in value.values():
            found += key_cycles(item)
    elif isinstance(value, list):
        for item in value:
            found += key_cycles(item)
    return found


def error_gist(stderr: str) -> str:
    """The go error at the end of kubectl's complaint, without its dump of the resource."""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "failed"
    for marker in ("}}: ", 'err="'):
        if marker in last:
            last = last.rsplit(marker, 1)[1]
            break
    return last.rstrip('"')[:300]


def record(kubectl: str, names: list[str]) -> int:
    from rciots.controller import yamlsafe

    unknown = [name for name in names if name not in CASES]
    if unknown:
        print(f"no such case: {', '.join(unknown)}", file=sys.stderr)
        return 2
    problems = 0
    for name in names or list(CASES):
        text = CASES[name]
        try:
            data = [yamlsafe.to_python(d)[0] for d in yamlsafe.parse(text.encode())]
        except yamlsafe.YamlError:
            data = []
        cycles = [cycle for value in data for cycle in key_cycles(value)]
        if cycles:
            print(f"{name}: not recorded, keys in a cycle, e.g. {cycles[0]}", file=sys.stderr)
            problems += 1
            continue
        runs = [run_kustomize(kubectl, text) for _ in range(3)]
        if len({(ok, out if ok else error_gist(out)) for ok, out in runs}) > 1:
            print(f"{name}: not recorded, kubectl prints it differently each time", file=sys.stderr)
            problems += 1
            continue
        case = CASES_DIR / name
        case.mkdir(parents=True, exist_ok=True)
        for old in ("expected.yaml", "expected.error"):
            (case / old).unlink(missing_ok=True)
        (case / "input.yaml").write_text(text, encoding="utf-8", newline="")
        ok, output = runs[0]
        if ok:
            (case / "expected.yaml").write_text(output, encoding="utf-8", newline="")
        else:
            (case / "expected.error").write_text(error_gist(output) + "\n", encoding="utf-8")
        print(f"{name}: {'printed' if ok else 'refused'}")
    return 1 if problems else 0


# --- fuzzing ---------------------------------------------------------------------------------

FRAGMENTS = [
    "a", "word", "x", "yes", "no", "on", "true", "null", "~", "1", "012", "0x1F", "1.5", "1e3",
    ".5", "-", "?", ":", ",", "[", "]", "{", "}", "#", "&", "*", "!", "|", ">", "'", '"', "%",
    "@", "`", ": ", " #", " ", "  ", "\n", "\t", "\r", "é", "日本", "😀", "\u2028", "\xa0",
    "\ufeff", "\x85", "\\", "2001-12-14", "1:20", "---", "...", "_", "0", "9", "Ab", "zZ",
]  # fmt: skip
KEY_FRAGMENTS = ["a", "b", "B", "_", "-", ".", "0", "1", "9", "10", "01", "x", "é", "Z", "y"]


def random_string(rng: random.Random, long: bool = False) -> str:
    if long or rng.random() < 0.1:
        choices = ["word", "ab", "x" * rng.randint(1, 30), "yes", "- a"]
        words = [rng.choice(choices) + rng.choice([" ", " ", " ", "  ", "\n"]) for _ in range(40)]
        return "".join(words)[: rng.randint(60, 250)]
    return "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 4)))


def random_key(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.05:
        return "k" * rng.randint(120, 140)
    if roll < 0.1:
        return random_string(rng)
    return "".join(rng.choice(KEY_FRAGMENTS) for _ in range(rng.randint(1, 4)))


def random_number(rng: random.Random) -> int | float:
    roll = rng.random()
    if roll < 0.3:
        return rng.randint(-1000, 1000)
    if roll < 0.4:
        return rng.choice([2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**25])
    if roll < 0.7:
        return rng.uniform(-1, 1) * 10.0 ** rng.randint(-12, 25)
    return float(rng.randint(-(10**6), 10**6)) * 10.0 ** rng.randint(-3, 20)


def random_value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth < 4 and roll < 0.15:
        return {random_key(rng): random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    if depth < 4 and roll < 0.3:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if roll < 0.7:
        return random_string(rng)
    if roll < 0.9:
        return random_number(rng)
    return rng.choice([True, False, None])


def as_yaml(value: Any) -> str:
    """JSON, which YAML readers take as flow YAML, with astral characters as \\U escapes."""
    text = json.dumps(value, ensure_ascii=True)

    def astral(match: re.Match[str]) -> str:
        high, low = int(match[1], 16), int(match[2], 16)
        return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08x}"

    return re.sub(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})", astral, text)


def fuzz(kubectl: str, count: int, seed: int) -> int:
    from rciots.controller import yamlsafe
    from rciots.controller.render import emit

    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    mismatches = checked = refused_both = cyclic = 0
    batch = 25
    for first in range(0, count, batch):
        resources: list[dict[str, Any]] = []
        for number in range(first, min(first + batch, count)):
            spec = {random_key(rng): random_value(rng, 0) for _ in range(rng.randint(1, 8))}
            while key_cycles(spec):  # kustomize's own order for these is random
                cyclic += 1
                spec = {random_key(rng): random_value(rng, 0) for _ in range(rng.randint(1, 8))}
            resources.append(
                {
                    "apiVersion": "example.com/v1",
                    "kind": "Thing",
                    "metadata": {"name": f"fuzz-{number:05d}"},
                    "spec": spec,
                }
            )
        # one kubectl run per resource would be slow; a failing resource fails its batch, so
        # a failed batch is retried one resource at a time
        text = "---\n".join(as_yaml(resource) + "\n" for resource in resources)
        ok, printed = run_kustomize(kubectl, text)
        groups = (
            [(text, resources)]
            if ok
            else [(as_yaml(resource) + "\n", [resource]) for resource in resources]
        )
        for group_text, group in groups:
            if not ok:
                group_ok, printed = run_kustomize(kubectl, group_text)
            else:
                group_ok = True
            try:
                read = [
                    yamlsafe.to_python(document)[0]
                    for document in yamlsafe.parse(group_text.encode())
                ]
                mine: str | None = emit.dump_documents([emit.normalize(r) for r in read])
            except (ValueError, TypeError) as exc:
                mine, reason = None, str(exc)
            checked += len(group)
            if not group_ok and mine is None:
                refused_both += len(group)
                continue
            if group_ok and mine == printed:
                continue
            mismatches += 1
            print(f"--- mismatch in {[r['metadata']['name'] for r in group]}")
            print("input:", group_text[:2000])
            if mine is None:
                print("emit refused:", reason)
            if not group_ok:
                print("kubectl refused:", printed.strip().splitlines()[-1][-300:])
            elif mine is not None:
                for line_number, (a, b) in enumerate(
                    zip(printed.splitlines(), mine.splitlines(), strict=False), 1
                ):
                    if a != b:
                        print(f"line {line_number}:\n kubectl: {a!r}\n    emit: {b!r}")
                        break
                else:
                    print("lengths differ:", len(printed), len(mine))
    print(
        f"fuzz: {checked} resources, {refused_both} refused by both, "
        f"{mismatches} mismatching groups, {cyclic} drafts with key cycles redrawn (seed {seed})"
    )
    return 1 if mismatches else 0


SCALAR_PIECES = [
    "0", "1", "7", "8", "9", "12", "2001", "-", "+", "_", ".", "e", "E", "x", "X", "o", "b",
    "a", "f", "F", ":", "T", "t", "Z", "z", " ", "inf", "nan", "Inf", "NaN", "true", "yes",
    "null", "~", "0x", "0o", "0b", "1e", "2001-12-14", "21:59:43", ".5", "05:00",
]  # fmt: skip


def random_digits(rng: random.Random, alphabet: str = "0123456789") -> str:
    digits = "".join(rng.choice(alphabet) for _ in range(rng.choice([1, 1, 2, 3, 5, 19, 20, 25])))
    if rng.random() < 0.15:
        at = rng.randint(0, len(digits))
        digits = digits[:at] + "_" * rng.randint(1, 2) + digits[at:]
    return digits


def random_scalar(rng: random.Random) -> str:
    """A plain scalar text that is often almost a number, a timestamp or a word."""
    roll = rng.random()
    sign = rng.choice(["", "", "", "-", "+"])
    if roll < 0.3:
        text = sign + random_digits(rng)
        if rng.random() < 0.5:
            text += "." + rng.choice(["", random_digits(rng)])
        if rng.random() < 0.3:
            text += rng.choice("eE") + rng.choice(["", "-", "+"]) + random_digits(rng)
        return text
    if roll < 0.45:
        prefix = rng.choice(["0x", "0X", "0o", "0O", "0b", "0B", "0", "."])
        inner = rng.choice(["", "", "-", "+"])  # go-yaml takes 0b-101 and (v3) 0o+17
        digits = random_digits(rng, rng.choice(["01", "01234567", "0123456789abcdefF"]))
        return sign + prefix + inner + digits
    if roll < 0.7:

        def field(low: int, high: int) -> str:
            return str(rng.randint(low, high)).zfill(rng.choice([1, 2, 2, 2]))

        text = f"{rng.choice([0, 1999, 2000, 2001, 2024, 9999]):04d}-{field(0, 13)}-{field(0, 31)}"
        if rng.random() < 0.7:
            clock = f"{field(0, 24)}:{field(0, 60)}:{field(0, 60)}"
            text += rng.choice(["T", "t", " ", "  ", "T"]) + clock
            if rng.random() < 0.5:
                text += rng.choice([".", ","]) + random_digits(rng)
            if rng.random() < 0.7:
                zone = f"{rng.choice('+-')}{field(0, 25).zfill(2)}:{field(0, 61).zfill(2)}"
                text += rng.choice(["Z", "Z", "z", zone, zone, "+0500"])
        return text
    if roll < 0.85:
        word = rng.choice(["true", "false", "null", "yes", "no", "on", "off", "y", "n", "~",
                           ".inf", ".nan", "inf", "nan"])  # fmt: skip
        return sign + "".join(c.upper() if rng.random() < 0.3 else c for c in word)
    return "".join(rng.choice(SCALAR_PIECES) for _ in range(rng.randint(1, 6))).strip()


def fuzz_plain_scalars(kubectl: str, count: int, seed: int) -> int:
    """Random plain scalar texts in block YAML: is each one read as go-yaml v3 reads it?"""
    from rciots.controller import yamlsafe

    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    texts: list[str] = []
    while len(texts) < count:
        text = random_scalar(rng)
        try:
            (document,) = yamlsafe.parse(f"v: {text}\n".encode())
        except yamlsafe.YamlError:
            continue
        node = document.pairs[0][1]
        if node.kind == "scalar" and node.style is None and node.text == text:
            texts.append(text)
    mismatches = 0
    for first in range(0, count, 200):
        chunk = texts[first : first + 200]
        # one kubectl run per chunk; a refused chunk is retried one text at a time
        tries = [chunk]
        ok, printed = run_kustomize(kubectl, scalars_thing(chunk))
        if not ok:
            tries = [[text] for text in chunk]
        for part in tries:
            text = scalars_thing(part)
            if len(tries) > 1:
                ok, printed = run_kustomize(kubectl, text)
            mine = emit_text(text)
            if mine != (printed if ok else None):
                mismatches += 1
                print(f"mismatch for {part if len(part) == 1 else 'a chunk'}:")
                print(f"  kubectl: {printed if ok else 'refused'}\n  emit: {mine}")
    print(f"fuzz-scalars: {count} plain scalars, {mismatches} mismatches (seed {seed})")
    return 1 if mismatches else 0


def scalars_thing(texts: list[str]) -> str:
    return thing("spec:\n" + "".join(f"  k{n:04d}: {text}\n" for n, text in enumerate(texts)))


def emit_text(text: str) -> str | None:
    """What ``yamlsafe`` and ``render.emit`` make of a resource file; None if they refuse it."""
    from rciots.controller import yamlsafe
    from rciots.controller.render import emit

    try:
        values = [yamlsafe.to_python(document)[0] for document in yamlsafe.parse(text.encode())]
        return emit.dump_documents([emit.normalize(value) for value in values])
    except (ValueError, TypeError):  # YamlError is a ValueError
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="cases to record (default: all)")
    parser.add_argument("--kubectl", default=shutil.which("kubectl") or "kubectl")
    parser.add_argument("--fuzz", type=int, metavar="N", help="compare N random resources")
    parser.add_argument(
        "--fuzz-scalars", type=int, metavar="N", help="compare the reading of N plain scalars"
    )
    parser.add_argument("--seed", type=int, default=20241126)
    args = parser.parse_args()
    if args.fuzz_scalars:
        return fuzz_plain_scalars(args.kubectl, args.fuzz_scalars, args.seed)
    if args.fuzz:
        return fuzz(args.kubectl, args.fuzz, args.seed)
    return record(args.kubectl, args.names)


if __name__ == "__main__":
    sys.exit(main())
