"""The kustomize printer: golden cases recorded from ``kubectl kustomize``, and its rules.

The golden cases live in emit_cases/cases/<name>/: input.yaml, and expected.yaml (what kubectl
printed) or expected.error (kubectl refused the input). emit_cases/record.py re-records them;
this file needs no kubectl.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from rciots.controller import yamlsafe
from rciots.controller.render import emit

CASES = Path(__file__).parent / "emit_cases" / "cases"
CASE_NAMES = sorted(path.name for path in CASES.iterdir() if (path / "input.yaml").exists())
PRINTED_CASES = [name for name in CASE_NAMES if (CASES / name / "expected.yaml").exists()]


def read_resources(data: bytes) -> list[Any]:
    return [yamlsafe.to_data(d) for d in yamlsafe.parse(data, dialect=yamlsafe.MANIFEST)]


def dump(*resources: Any) -> str:
    return emit.dump_documents([emit.normalize(resource) for resource in resources])


def value_line(value: Any) -> str:
    """The text printed for ``{"k": value}``."""
    return emit.dump_documents([{"k": value}])


def test_there_are_enough_golden_cases() -> None:
    assert len(CASE_NAMES) >= 60


@pytest.mark.parametrize("name", CASE_NAMES)
def test_golden_case(name: str) -> None:
    case = CASES / name
    data = (case / "input.yaml").read_bytes()
    expected = case / "expected.yaml"
    if expected.exists():
        printed = dump(*read_resources(data))
        assert printed == expected.read_text(encoding="utf-8")
    else:
        with pytest.raises((ValueError, TypeError)):
            dump(*read_resources(data))  # YamlError is a ValueError too


@pytest.mark.parametrize("name", PRINTED_CASES)
def test_golden_case_without_normalize_prints_the_same(name: str) -> None:
    case = CASES / name
    expected = case / "expected.yaml"
    printed = emit.dump_documents(read_resources((case / "input.yaml").read_bytes()))
    assert printed == expected.read_text(encoding="utf-8")


# --- documents -------------------------------------------------------------------------------


def test_no_resources_print_nothing() -> None:
    assert emit.dump_documents([]) == ""


def test_documents_are_separated_by_three_dashes() -> None:
    assert emit.dump_documents([{"a": 1}, {"b": 2}]) == "a: 1\n---\nb: 2\n"


def test_empty_root_mapping_is_flow() -> None:
    assert emit.dump_documents([{}]) == "{}\n"


# --- structure -------------------------------------------------------------------------------


def test_sequence_under_a_key_is_not_indented() -> None:
    assert value_line(["a", "b"]) == "k:\n- a\n- b\n"


def test_nested_sequences_share_the_line() -> None:
    assert value_line([["a", "b"], [["c"]]]) == "k:\n- - a\n  - b\n- - - c\n"


def test_mapping_in_sequence_starts_after_the_dash() -> None:
    assert value_line([{"b": 1, "a": [2]}]) == "k:\n- a:\n  - 2\n  b: 1\n"


def test_empty_collections_are_flow() -> None:
    assert value_line({"m": {}, "l": [], "in": [{}, []]}) == (
        "k:\n  in:\n  - {}\n  - []\n  l: []\n  m: {}\n"
    )


def test_scalars_of_other_kinds() -> None:
    assert value_line([None, True, False, 0, -3, 2.5]) == (
        "k:\n- null\n- true\n- false\n- 0\n- -3\n- 2.5\n"
    )


# --- key order -------------------------------------------------------------------------------


def keys_in_order(*keys: str) -> list[str]:
    printed = emit.dump_documents([dict.fromkeys(keys, 1)])
    return [line.rsplit(":", 1)[0].strip('"') for line in printed.splitlines()]


def test_digit_runs_sort_as_numbers() -> None:
    assert keys_in_order("a10", "a9", "a1", "b", "a") == ["a", "a1", "a9", "a10", "b"]


def test_non_letters_sort_before_letters() -> None:
    assert keys_in_order("DBA", "DB_HOST", "dbx", "DB.X") == ["DB.X", "DB_HOST", "DBA", "dbx"]


def test_upper_case_sorts_before_lower_case() -> None:
    assert keys_in_order("b", "B", "a", "A") == ["A", "B", "a", "b"]


def test_a_digit_run_against_a_letter_compares_at_the_first_difference() -> None:
    # go-yaml compares from the first differing character: '3' is not a letter, 'b' is
    assert keys_in_order("a12b", "a123") == ["a123", "a12b"]


def test_shorter_zero_run_first() -> None:
    assert keys_in_order("x00", "x0", "x000") == ["x0", "x00", "x000"]


# --- quoting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["yes", "No", "ON", "off", "y", "N", "true", "False", "null", "~", "", "1", "012", "0x1F",
     "1e3", "1_000", ".5", "1.", "-1", "+1", "0b101", "0o17", "08", ".inf", "-.Inf", ".NaN",
     "1:20", "2001-12-14", "2001-12-14T21:59:43Z", "0b-101", "0b+1"],
)  # fmt: skip
def test_strings_read_back_as_other_types_are_double_quoted(text: str) -> None:
    assert value_line(text) == f'k: "{text}"\n'


@pytest.mark.parametrize(
    "text",
    ["1e400", "12e", "nan", "Infinity", "2001-02-29", "2001-12-14T24:00:00Z", "<<", "1.2.3",
     "_1", "a:b", "a#b", "it's", "http://x/y?z#f", "a,b", "-a", "é", "--a", "0o-17"],
)  # fmt: skip
def test_strings_that_stay_plain(text: str) -> None:
    assert value_line(text) == f"k: {text}\n"


@pytest.mark.parametrize(
    "text",
    ["- a", "-", "? a", ": a", "a: b", "a:", "a #b", " a", "a ", "#a", "&a", "*a", "!a", "|a",
     ">a", "'a", '"a', "%a", "@a", "`a", "[a", "]a", "{a", "}a", ",a", "---", "...", "--- a"],
)  # fmt: skip
def test_indicators_and_edge_spaces_are_single_quoted(text: str) -> None:
    assert value_line(text) == "k: '" + text.replace("'", "''") + "'\n"


def test_single_quotes_double_inside_single_quoted() -> None:
    assert value_line("'a' b") == "k: '''a'' b'\n"


def test_keys_are_quoted_like_values() -> None:
    assert emit.dump_documents([{"n": 1, "- a": 2, "": 3}]) == '"": 3\n\'- a\': 2\n"n": 1\n'


# --- escapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        ("a\tb", r'"a\tb"'),
        ("a\rb", r'"a\rb"'),
        ("\x00", r'"\0"'),
        ("\x07\x08\x0b\x0c\x1b", r'"\a\b\v\f\e"'),
        ("\x01", r'"\x01"'),
        ("\U0001f600", r'"\U0001F600"'),
        ("\ufeffab c", r'"\uFEFF\x61\x62\x20\x63"'),
        ('\t"\\', r'"\t\"\\"'),
        ("a\ufeffb", r'"a\uFEFFb"'),
    ],
)
def test_double_quoted_escapes(text: str, printed: str) -> None:
    assert value_line(text) == f"k: {printed}\n"


def test_unicode_is_printed_as_is() -> None:
    assert value_line("héllo 日本") == "k: héllo 日本\n"


def test_nel_becomes_a_space_on_the_way_through_json() -> None:
    assert emit.normalize("a \x85 b") == "a b"
    assert emit.normalize("a\x85\x85\x85b") == "a\n\nb"
    assert value_line("a\x85b") == "k: a b\n"


def test_line_separator_is_printed_raw_with_go_yamls_indent() -> None:
    # go-yaml thinks it is at column 0 after U+2028 and indents, without a line feed
    assert value_line("a\u2028b") == "k: 'a\u2028  b'\n"
    assert emit.dump_documents([{"a": {"k": "a\u2028b"}}]) == "a:\n  k: 'a\u2028    b'\n"


# --- literal blocks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        ("a\nb", "|-\n  a\n  b\n"),
        ("a\nb\n", "|\n  a\n  b\n"),
        ("a\nb\n\n", "|+\n  a\n  b\n\n"),
        ("\n", "|2+\n\n"),
        (" a\nb", "|2-\n   a\n  b\n"),
        ("a\n\nb", "|-\n  a\n\n  b\n"),
        ("yes\n", "|\n  yes\n"),
    ],
)
def test_literal_blocks(text: str, printed: str) -> None:
    assert value_line(text) == f"k: {printed}"


def test_literal_block_indent_follows_depth() -> None:
    assert emit.dump_documents([{"a": {"b": ["x\ny"]}}]) == "a:\n  b:\n  - |-\n    x\n    y\n"


@pytest.mark.parametrize("text", ["a \nb", "a\nb ", "a\tb\nc", "a\r\nb", "\U0001f600\n"])
def test_multi_line_strings_that_cannot_be_literal_are_double_quoted(text: str) -> None:
    assert value_line(text).startswith('k: "')


# --- folding ---------------------------------------------------------------------------------


def test_plain_scalars_fold_at_the_first_space_past_column_80() -> None:
    text = "x" * 76 + " yy zz"  # the space after "yy" is at column 82
    assert value_line(text) == "k: " + "x" * 76 + " yy\n  zz\n"


def test_no_fold_while_the_line_is_at_column_80() -> None:
    text = "x" * 75 + " yy zz"  # the space after "yy" is at column 81 only after it
    assert value_line(text) == "k: " + "x" * 75 + " yy\n  zz\n"
    assert value_line("x" * 74 + " yy zz") == "k: " + "x" * 74 + " yy zz\n"


def test_plain_scalars_never_fold_at_double_spaces() -> None:
    text = "x" * 90 + "  y"
    assert value_line(text) == f"k: {text}\n"


def test_double_quoted_fold_keeps_a_following_space_with_a_backslash() -> None:
    text = "\t" + "x" * 85 + "  y"
    assert value_line(text) == 'k: "\\t' + "x" * 85 + '\n  \\ y"\n'


def test_simple_keys_never_fold() -> None:
    key = "a " * 63 + "b"  # 128 bytes: still a simple key
    assert emit.dump_documents([{key: 1}]) == f"{key}: 1\n"


def test_explicit_keys_fold_like_values() -> None:
    key = "a" * 100 + " " + "b" * 100
    assert emit.dump_documents([{key: 1}]) == "? " + "a" * 100 + "\n  " + "b" * 100 + "\n: 1\n"


def test_continuation_indent_is_two_past_the_dash() -> None:
    text = " ".join(["word"] * 20)
    assert emit.dump_documents([{"a": [text]}]) == (
        "a:\n- word word word word word word word word word word word word word word word word\n"
        "  word word word word\n"
    )


# --- complex keys ----------------------------------------------------------------------------


def test_long_keys_use_the_explicit_form() -> None:
    key = "k" * 129
    assert emit.dump_documents([{key: "v"}]) == f"? {key}\n: v\n"
    assert emit.dump_documents([{key: {"a": 1, "b": 2}}]) == f"? {key}\n: a: 1\n  b: 2\n"
    assert emit.dump_documents([{key: [1, 2]}]) == f"? {key}\n: - 1\n  - 2\n"


def test_keys_are_measured_in_bytes() -> None:
    assert emit.dump_documents([{"é" * 64: 1}]) == "é" * 64 + ": 1\n"
    assert emit.dump_documents([{"é" * 65: 1}]).startswith("? ")


def test_multi_line_keys_use_the_explicit_form() -> None:
    assert emit.dump_documents([{"a\nb": 1}]) == "? |-\n  a\n  b\n: 1\n"


# --- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "printed"),
    [
        (1.0, "1"),
        (-0.0, "0"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (1e-7, "1e-07"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (123456.5, "123456.5"),
        (1234567.5, "1.2345675e+06"),
        (1e19, "10000000000000000000"),
        (1e20, "1e+20"),
        (1e21, "1e+21"),
        (2.0**63, "9223372036854776000"),
        (1.8446744073709552e19, "1.8446744073709552e+19"),
        (-(2.0**63), "-9.223372036854776e+18"),  # JSON: -9223372036854776000
        (-1e19, "-1e+19"),
        (2**64 - 1, "18446744073709551615"),
        (2**64, "1.8446744073709552e+19"),
        (-(2**63) - 1, "-9.223372036854776e+18"),
    ],
)
def test_numbers_print_as_after_the_json_round_trip(number: float, printed: str) -> None:
    assert value_line(number) == f"k: {printed}\n"


def test_normalize_turns_integral_floats_into_ints() -> None:
    assert emit.normalize({"a": [1.0, 2.5, 1e21, 2**64]}) == {
        "a": [1, 2.5, 1e21, 1.8446744073709552e19]
    }
    assert type(emit.normalize(3.0)) is int


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(number: float) -> None:
    with pytest.raises(ValueError, match="JSON has no NaN"):
        emit.normalize({"v": number})
    with pytest.raises(ValueError, match="JSON has no NaN"):
        emit.dump_documents([{"v": number}])


@pytest.mark.parametrize("text", ["a\x7fb", "\x80", "\x9f", "\ufffe", "\uffff", "\ud800"])
def test_characters_go_yaml_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="cannot print"):
        emit.normalize([text])
    with pytest.raises(ValueError, match="cannot print"):
        emit.dump_documents([{"k": text}])


def test_keys_go_yaml_cannot_read_back() -> None:
    with pytest.raises(ValueError, match="NEL"):
        emit.normalize({"a\x85b": 1})
    emit.normalize({"k" * 1022: 1})
    with pytest.raises(ValueError, match="too long"):
        emit.normalize({"k" * 1023: 1})
    with pytest.raises(ValueError, match="too long"):
        emit.dump_documents([{"<" * 171: 1}])  # JSON writes '<' as \u003c


def test_non_json_data_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        emit.normalize({1: "a"})
    with pytest.raises(TypeError):
        emit.dump_documents([{"a": (1, 2)}])


def test_go_yamls_key_order_can_be_circular() -> None:
    # kustomize then prints these keys in a different order from run to run
    assert emit.key_less("a2a", "a3a")
    assert emit.key_less("a3a", "a27")
    assert emit.key_less("a27", "a2a")
