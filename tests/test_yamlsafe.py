"""The bounded YAML reader: core-schema values, positions, and every refusal with its place."""

from __future__ import annotations

import math
import time
import tracemalloc

import pytest

from rciots.controller import yamlsafe


def load_one(text: str) -> object:
    (document,) = yamlsafe.parse(text.encode())
    value, _ = yamlsafe.to_python(document)
    return value


def refusal(data: bytes, limits: yamlsafe.Limits = yamlsafe.DEFAULT_LIMITS) -> yamlsafe.YamlError:
    with pytest.raises(yamlsafe.YamlError) as caught:
        read_all(data, limits)
    return caught.value


def read_all(data: bytes, limits: yamlsafe.Limits) -> list[object]:
    return [yamlsafe.to_python(document)[0] for document in yamlsafe.parse(data, limits)]


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
        "d": 12,
        "f": 1500.0,
        "inf": -math.inf,
        "date": "2026-01-01",
        "q": "1",
        "forced": "12",
        "ver": 1.1,
    }


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
