"""The bounded YAML reader: core-schema values, positions, and every refusal with its place."""

from __future__ import annotations

import math
import time
import tracemalloc

import pytest

from rciots.controller import yamlsafe


def load_one(text: str) -> object:
    (document,) = yamlsafe.parse(text.encode())
    return yamlsafe.to_data(document)


def refusal(data: bytes, limits: yamlsafe.Limits = yamlsafe.DEFAULT_LIMITS) -> yamlsafe.YamlError:
    with pytest.raises(yamlsafe.YamlError) as caught:
        read_all(data, limits)
    return caught.value


def read_all(data: bytes, limits: yamlsafe.Limits) -> list[object]:
    return [yamlsafe.to_data(document) for document in yamlsafe.parse(data, limits)]


def billion_laughs(levels: int = 9) -> bytes:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels + 1):
        refs = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"l{level}: &l{level} [{refs}]")
    return ("\n".join(lines) + "\n").encode()


def test_yaml_1_2_core_schema_scalars() -> None:
    text = (
        "s: yes\nt: true\nn: ~\ne:\ni: 0o17\nx: 0x1F\nd: 012\nf: 1.5e3\ninf: -.inf\n"
        "date: 2026-01-01\nq: '1'\nforced: ! 12\nver: 1.10\n"
    )
    assert load_one(text) == {
        "s": "yes",
        "t": True,
        "n": None,
        "e": None,
        "i": 15,
        "x": 31,
        "d": 10,  # go-yaml v3, which kustomize reads with, takes a leading 0 for octal
        "f": 1500.0,
        "inf": -math.inf,
        "date": "2026-01-01T00:00:00Z",  # a timestamp, as JSON prints it
        "q": "1",
        "forced": "12",
        "ver": 1.1,
    }


SAME = object()  # the plain text stays a string as written


@pytest.mark.parametrize(
    ("text", "value"),
    [
        # words: YAML 1.2 only
        ("yes", "yes"), ("No", "No"), ("on", "on"), ("y", "y"), ("True", True), ("TRUE", True),
        ("tRUE", "tRUE"), ("false", False), ("Null", None), ("NULL", None), ("~", None),
        ("<<x", "<<x"),
        # integers the way Go's ParseInt(s, 0, 64) reads them, underscores dropped first
        ("012", 10), ("-012", -10), ("0o17", 15), ("0O17", 15), ("-0o17", -15), ("0b101", 5),
        ("-0b101", -5), ("0x1F", 31), ("0X1f", 31), ("+12", 12), ("1_000", 1000), ("1__0", 10),
        ("-0", 0), ("0", 0), ("9223372036854775807", 2**63 - 1), ("-9223372036854775808", -(2**63)),
        ("18446744073709551615", 2**64 - 1), ("0xFFFFFFFFFFFFFFFF", 2**64 - 1),
        # go-yaml's last try after a 0b or 0o prefix takes a sign after the prefix
        ("0b-101", -5), ("0b+101", 5), ("0o-17", -15), ("-0b-1", SAME), ("0B-1", SAME),
        # past 64 bits: a float, or a string when not decimal
        ("18446744073709551616", 1.8446744073709552e19), ("+18446744073709551615", 2.0**64),
        ("-9223372036854775809", -(2.0**63)), ("-0xFFFFFFFFFFFFFFFF", "-0xFFFFFFFFFFFFFFFF"),
        ("0777777777777777777777777", 7.777777777777778e23), ("1" * 30, 1.111111111111111e29),
        # floats
        ("08", 8.0), ("09.5", 9.5), ("1e3", 1000.0), (".5", 0.5), ("1.", 1.0), ("+.5", 0.5),
        (".5_0", 0.5), ("1_0.5", 10.5), ("-1.5e-3", -0.0015), ("1e-400", 0.0),
        ("1e400", "1e400"), (".5e400", ".5e400"), ("12e", "12e"), ("._5", "._5"), (".", "."),
        ("0x", "0x"), ("0b2", "0b2"), ("_1", "_1"), ("+", "+"), ("-x", "-x"), ("1_", 1),
        ("+.inf", math.inf), ("-.Inf", -math.inf), ("+.nan", "+.nan"), ("nan", "nan"),
        # timestamps become the RFC 3339 text JSON prints for them
        ("2001-12-14", "2001-12-14T00:00:00Z"), ("2001-1-2", "2001-01-02T00:00:00Z"),
        ("2001-12-14t21:59:43.10-05:00", "2001-12-14T21:59:43.1-05:00"),
        ("2001-12-14 21:59:43.10", "2001-12-14T21:59:43.1Z"),
        ("2001-12-14  21:59:43,5", "2001-12-14T21:59:43.5Z"),
        ("2001-12-14T21:59:43.1234567891Z", "2001-12-14T21:59:43.123456789Z"),
        ("2001-12-14T1:2:3+05:60", "2001-12-14T01:02:03+06:00"),
        ("2001-12-14T00:00:00-00:00", "2001-12-14T00:00:00Z"),
        ("2000-02-29", "2000-02-29T00:00:00Z"), ("0000-01-01", "0000-01-01T00:00:00Z"),
        ("2001-02-29", "2001-02-29"), ("2001-13-01", "2001-13-01"),
        ("2001-12-14T24:00:00Z", "2001-12-14T24:00:00Z"), ("2001-12-14T21:59:60Z", SAME),
        ("2001-12-14T21:59:43", "2001-12-14T21:59:43"), ("2001-12-14 21:59:43Z", SAME),
        ("2001-12-14T21:59:43z", SAME), ("2001-12-14T21:59:43+0500", SAME),
        ("2001-12-14T21:59:43.Z", SAME), ("12345-01-01", SAME), ("2001-012-14", SAME),
    ],
)  # fmt: skip
def test_plain_scalars_resolve_as_go_yaml_v3_does(text: str, value: object) -> None:
    expected = text if value is SAME else value
    loaded = load_one(f"v: {text}\n")
    assert loaded == {"v": expected}
    assert isinstance(loaded, dict)
    assert type(loaded["v"]) is type(expected)


def test_timestamp_with_a_zone_json_cannot_print_is_refused() -> None:
    error = refusal(b"when: 2001-12-14T21:59:43+24:00\n")
    assert "zone offset of 24 hours" in error.message
    assert (error.line, error.column) == (1, 7)
    assert load_one("when: '2001-12-14T21:59:43+24:00'\n") == {"when": "2001-12-14T21:59:43+24:00"}


def test_keys_keep_their_text_and_get_go_yamls_tag() -> None:
    (document,) = yamlsafe.parse(b"012: a\nyes: b\n2001-12-14: c\n")
    assert [(key.text, key.tag) for key, _ in document.pairs] == [
        ("012", "int"),
        ("yes", "str"),
        ("2001-12-14", "timestamp"),
    ]
    # fleet files keep a key's text; manifests refuse keys kustomize cannot print
    (document,) = yamlsafe.parse(b"012: a\n")
    assert yamlsafe.to_python(document)[0] == {"012": "a"}
    with pytest.raises(yamlsafe.YamlError, match="read as a int, not a string"):
        yamlsafe.to_data(document)


def test_nan_is_read_as_nan() -> None:
    value = load_one("v: .nan\n")
    assert isinstance(value, dict)
    assert math.isnan(value["v"])


def test_positions_of_values_and_keys_are_one_based() -> None:
    (document,) = yamlsafe.parse(b"spec:\n  labels:\n    - a\n    - b\n")
    _, positions = yamlsafe.to_python(document)
    assert positions.of_value(("spec", "labels", 1)) == (4, 7)
    assert positions.of_key(("spec", "labels")) == (2, 3)
    # a path that does not exist falls back to its closest ancestor
    assert positions.of_value(("spec", "labels", 1, "missing")) == (4, 7)


def test_aliases_within_limits_are_shared_not_copied() -> None:
    value = load_one("a: &x [1, 2]\nb: *x\n")
    assert isinstance(value, dict)
    assert value == {"a": [1, 2], "b": [1, 2]}
    assert value["a"] is value["b"]


def test_several_documents() -> None:
    documents = yamlsafe.parse(b"a: 1\n---\nb: 2\n---\n")
    assert [yamlsafe.to_python(d)[0] for d in documents] == [{"a": 1}, {"b": 2}]


def test_billion_laughs_is_refused_fast_with_little_memory() -> None:
    tracemalloc.start()
    started = time.perf_counter()
    error = refusal(billion_laughs())
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "more than 100000 nodes after alias expansion" in error.message
    assert error.line == 6  # the first alias that goes over the limit
    assert elapsed < 1.0
    assert peak < 5 * 1024 * 1024


def test_deep_nesting_is_refused_at_the_limit() -> None:
    error = refusal(b"[" * 500_000)
    assert "nesting deeper than 64 levels" in error.message
    assert (error.line, error.column) == (1, 65)


def test_block_nesting_is_refused_too() -> None:
    text = "".join("  " * depth + f"k{depth}:\n" for depth in range(70))
    error = refusal(text.encode())
    assert "nesting deeper than 64 levels" in error.message
    assert error.line == 65


def test_oversize_input_is_refused_before_parsing() -> None:
    error = refusal(b"a: b\n" * 10, yamlsafe.Limits(max_bytes=49))
    assert error.message == "file is 50 bytes, over the limit of 49; split it up"


def test_too_many_documents() -> None:
    error = refusal(b"---\na: 1\n" * 4, yamlsafe.Limits(max_documents=3))
    assert "more than 3 documents" in error.message
    assert error.line == 7


def test_duplicate_key_names_both_places() -> None:
    error = refusal(b"spec:\n  enabled: true\n  enabled: false\n")
    assert error.message == "duplicate key 'enabled' (first at line 2): remove one of them"
    assert (error.line, error.column) == (3, 3)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a: !!python/object/apply:os.system [ls]\n", "!!python/object/apply:os.system"),
        ("a: !custom 1\n", "!custom"),
        ("a: !!binary aGVsbG8=\n", "!!binary"),
        ("a: !!map [1]\n", "!!map"),
    ],
)
def test_tags_outside_the_core_schema_are_refused(text: str, shown: str) -> None:
    error = refusal(text.encode())
    assert error.message.startswith(f"tag {shown!r} is not allowed")
    assert error.line == 1


def test_core_tags_are_accepted() -> None:
    assert load_one("a: !!str 12\nb: !!int '7'\n") == {"a": "12", "b": 7}


def test_tags_resolve_the_text_like_go_yaml() -> None:
    text = "a: !!int '0x1F'\nb: !!float 1\nc: !!null ''\nd: !!bool 'True'\ne: !!str 2001-12-14\n"
    assert load_one(text) == {"a": 31, "b": 1.0, "c": None, "d": True, "e": "2001-12-14"}
    assert refusal(b"a: !!int 2001-12-14\n").message == "'2001-12-14' is not a valid !!int"
    assert refusal(b"a: !!bool yes\n").message == "'yes' is not a valid !!bool"
    assert refusal(b"a: !!int 1.5\n").message == "'1.5' is not a valid !!int"


def test_invalid_explicitly_tagged_value() -> None:
    error = refusal(b"a:\n  b: !!int twelve\n")
    assert error.message == "'twelve' is not a valid !!int"
    assert (error.line, error.column) == (2, 6)


def test_merge_keys_are_refused() -> None:
    error = refusal(b"base: &b {x: 1}\nother:\n  <<: *b\n")
    assert "merge keys ('<<') are not supported" in error.message
    assert (error.line, error.column) == (3, 3)


def test_collection_keys_are_refused() -> None:
    error = refusal(b"? [a, b]\n: 1\n")
    assert error.message == "mapping keys must be plain scalars, not collections"


def test_undefined_alias() -> None:
    error = refusal(b"a: *nowhere\n")
    assert error.message == "alias *nowhere has no anchor &nowhere before it"


def test_recursive_alias() -> None:
    error = refusal(b"a: &loop [1, *loop]\n")
    assert error.message == "alias *loop refers to a node that contains it"


def test_syntax_error_has_position() -> None:
    error = refusal(b"a: 1\nb: [unclosed\nc: 2\n")
    assert error.message.startswith("invalid YAML: ")
    assert error.line == 3


def test_not_utf8() -> None:
    error = refusal(b"a: \xff\n")
    assert error.message == "not UTF-8 text (byte 3); save the file as UTF-8"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("args: [--listen=0.0.0.0:80]\n", {"args": ["--listen=0.0.0.0:80"]}),
        ("image: {name: nginx:1.25}\n", {"image": {"name": "nginx:1.25"}}),
        ("urls: [http://example.com/x]\n", {"urls": ["http://example.com/x"]}),
    ],
)
def test_colons_inside_flow_plain_scalars_are_read_as_yaml_1_2_does(
    text: str, value: object
) -> None:
    assert load_one(text) == value


def test_fleet_files_keep_dates_and_times_as_written() -> None:
    (document,) = yamlsafe.parse(b"day: 2030-01-31\nat: 2030-01-31 10:00:00\n")
    value, _ = yamlsafe.to_python(document)
    assert value == {"day": "2030-01-31", "at": "2030-01-31 10:00:00"}


# --- kyaml: what kustomize holds for a resource after writing it out and reading it back -----


def load_resource(text: str, *, patch: bool = False) -> object:
    (document,) = yamlsafe.parse(text.encode(), dialect=yamlsafe.MANIFEST)
    return yamlsafe.to_data(document, annotation_text=True, kyaml=True, patch=patch)


@pytest.mark.parametrize(
    ("block", "plain_reading", "kyaml_reading"),
    [
        # a line feed before a more-indented line comes back doubled
        (
            ">\n  normal\n    indented\n  back\n",
            "normal\n  indented\nback\n",
            "normal\n\n  indented\nback\n",
        ),
        # ...as does the one before the trailing blank lines of keep chomping
        (">+\n  kept\n\n\n", "kept\n\n\n", "kept\n\n\n\n"),
        # a value starting with a space loses its double line feeds: lines fold
        (">2\n   lead\n  b\n\n  c\n", " lead\nb\nc\n", " lead\nb c\n"),
        # leading line breaks are skipped when go-yaml looks at the start
        (">\n\n  x\n    y\n  z\n", "\nx\n  y\nz\n", "\nx\n\n  y\nz\n"),
        # nothing to double: plain folding, a single line, literal scalars
        (">\n  one\n  two\n\n  three\n", "one two\nthree\n", "one two\nthree\n"),
        (">-\n  alone\n", "alone", "alone"),
        ("|+\n  line\n    more\n\n\n", "line\n  more\n\n\n", "line\n  more\n\n\n"),
        # written double-quoted (a space before a line break), so read back exactly
        (">\n  a \n    b\n", "a \n  b\n", "a \n  b\n"),
    ],
)
def test_block_scalars_come_back_as_from_go_yaml_v3(
    block: str, plain_reading: str, kyaml_reading: str
) -> None:
    assert load_one(f"k: {block}") == {"k": plain_reading}
    assert load_resource(f"k: {block}") == {"k": kyaml_reading}


def test_block_scalar_starting_with_a_tab_cannot_come_back() -> None:
    text = "a: 1\nk: |2\n  \tx\n  y\n"
    assert load_one(text) == {"a": 1, "k": "\tx\ny\n"}
    with pytest.raises(yamlsafe.YamlError) as caught:
        load_resource(text)
    assert "found a tab character where an indentation space is expected" in caught.value.message
    assert (caught.value.line, caught.value.column) == (2, 4)


def test_annotations_keep_the_text_but_must_survive_a_literal_round_trip() -> None:
    folded = "metadata:\n  annotations:\n    a: >\n      x\n        y\n"
    assert load_resource(folded) == {"metadata": {"annotations": {"a": "x\n  y\n"}}}
    assert load_resource('metadata:\n  annotations:\n    a: "\\tx"\n') == {
        "metadata": {"annotations": {"a": "\tx"}}
    }
    with pytest.raises(yamlsafe.YamlError):
        load_resource('metadata:\n  annotations:\n    a: "\\tx\\ny"\n')


def test_empty_values_in_flow_collections_come_back_as_empty_strings() -> None:
    text = "f: {x: , y: [k: ], n: null}\ns: [a, {k: }]\nb:\n"
    assert load_one(text) == {
        "f": {"x": None, "y": [{"k": None}], "n": None},
        "s": ["a", {"k": None}],
        "b": None,
    }
    assert load_resource(text) == {
        "f": {"x": "", "y": [{"k": ""}], "n": None},
        "s": ["a", {"k": ""}],
        "b": None,
    }
    # in a strategic merge patch an empty value deletes a field: it stays null
    assert load_resource("f: {x: }\n", patch=True) == {"f": {"x": None}}


def test_the_non_specific_tag_resolves_like_no_tag_in_go_yaml_v3() -> None:
    text = "i: ! 12\nb: ! true\ns: ! word\nq: ! '12'\ne: !\nm: ! {x: 1}\nl: ! [1]\n"
    assert load_resource(text) == {
        "i": 12,
        "b": True,
        "s": "word",
        "q": "12",
        "e": None,
        "m": {"x": 1},
        "l": [1],
    }
    assert load_one("i: ! 12\ne: !\n") == {"i": "12", "e": ""}


def test_timestamps_with_a_time_in_flow_collections_stay_text() -> None:
    text = "f: [2001-12-14 21:59:43.10, 2002-12-14]\nb: 2001-12-14 21:59:43.10\n"
    assert load_resource(text) == {
        "f": ["2001-12-14 21:59:43.10", "2002-12-14T00:00:00Z"],
        "b": "2001-12-14T21:59:43.1Z",
    }


def test_timestamp_keys_with_a_time_are_strings_in_flow_mappings_only() -> None:
    assert load_resource("m: {2001-12-14 21:59:43: v}\n") == {"m": {"2001-12-14 21:59:43": "v"}}
    with pytest.raises(yamlsafe.YamlError):
        load_resource("m:\n  2001-12-14 21:59:43: v\n")
