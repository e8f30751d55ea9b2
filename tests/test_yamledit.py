"""Round-trip YAML edits: what people wrote survives, only the asked-for value changes."""

from __future__ import annotations

import pytest

from rciots.controller import yamledit

DEVICE = """\
# Gateway in the Berlin shop.
# Owner: platform team.

apiVersion: rciots.io/v1  # format v1
kind: Device
metadata:
  name: gw-01
  labels:
    site: 'berlin'
    rack: "12"

spec:
  # approved by the shop manager
  approved: false   # waiting
  enabled: true  # on
  template: web
"""

SEQUENCE_UNDER_KEY = """\
apiVersion: v1
kind: Thing
items:
- first
- 'second'  # quoted
- name: third
  value: "3"
after: end
"""

SEQUENCE_INDENTED = """\
apiVersion: v1
kind: Thing
spec:
  items:
    - first
    - name: second
      value: 2
  flow: {a: 1, b: [x, y]}
  long: this line is longer than eighty characters and must never be folded onto the next line
"""

BLOCK_SCALARS = """\
kind: Thing
script: |
  echo one
  echo two
folded: >-
  one
  two
empty:
"""

FOUR_SPACES = """\
---
# explicit start
kind: Thing
spec:
    nested:
        deep: 1
    list:
        - a
"""

COMMENT_BEFORE_START = """\
# about this file
---
kind: Thing
spec:
  enabled: true
"""


@pytest.mark.parametrize(
    "text",
    [
        DEVICE,
        SEQUENCE_UNDER_KEY,
        SEQUENCE_INDENTED,
        BLOCK_SCALARS,
        FOUR_SPACES,
        COMMENT_BEFORE_START,
        "a: 1\n\n\n",
        "a: 1\r\nb:\r\n  c: 2\r\n",
    ],
    ids=[
        "device",
        "sequence-under-key",
        "sequence-indented",
        "block-scalars",
        "four-spaces",
        "comment-before-start",
        "trailing-blank-lines",
        "crlf",
    ],
)
def test_round_trip_is_byte_identical(text: str) -> None:
    assert yamledit.round_trip(text) == text


def test_setting_a_value_already_set_returns_the_text_unchanged() -> None:
    # A round trip would write `a:` for `a: ~`; a no-op edit must not even do that.
    text = "a: ~\nspec:\n  enabled: true\n"
    assert yamledit.set_fields(text, ("spec",), {"enabled": True}) == text


def test_true_is_not_the_same_as_one() -> None:
    assert yamledit.set_fields("spec:\n  enabled: 1\n", ("spec",), {"enabled": True}) == (
        "spec:\n  enabled: true\n"
    )


def test_changing_a_value_keeps_every_other_byte() -> None:
    expected = DEVICE.replace("  enabled: true  # on", "  enabled: false  # on")
    assert yamledit.set_fields(DEVICE, ("spec",), {"enabled": False}) == expected


def test_gap_before_an_end_of_line_comment_is_kept_when_the_value_shrinks() -> None:
    expected = DEVICE.replace("  approved: false   # waiting", "  approved: true   # waiting")
    assert yamledit.set_fields(DEVICE, ("spec",), {"approved": True}) == expected


def test_quoted_value_keeps_its_quotes() -> None:
    text = "spec:\n  template: 'web'  # which\n"
    assert yamledit.set_fields(text, ("spec",), {"template": "webshop"}) == (
        "spec:\n  template: 'webshop'  # which\n"
    )


def test_new_key_goes_to_the_end_of_its_map() -> None:
    expected = DEVICE.replace("  template: web\n", "  template: web\n  description: till\n")
    assert yamledit.set_fields(DEVICE, ("spec",), {"description": "till"}) == expected


def test_missing_map_is_created_at_the_end() -> None:
    text = "kind: Device\nmetadata:\n  name: gw-01  # the name\n"
    assert yamledit.set_fields(text, ("spec",), {"approved": True}) == (
        "kind: Device\nmetadata:\n  name: gw-01  # the name\nspec:\n  approved: true\n"
    )


def test_missing_maps_on_a_longer_path_are_created() -> None:
    assert yamledit.set_fields("kind: Device\n", ("metadata", "labels"), {"site": "b"}) == (
        "kind: Device\nmetadata:\n  labels:\n    site: b\n"
    )


def test_empty_value_becomes_a_map_keeping_its_comment() -> None:
    assert yamledit.set_fields("kind: Device\nspec:  # later\n", ("spec",), {"a": True}) == (
        "kind: Device\nspec:  # later\n  a: true\n"
    )


def test_comment_closing_a_map_stays_after_a_new_key() -> None:
    text = "spec:\n  enabled: true\n\n# the end\n"
    assert yamledit.set_fields(text, ("spec",), {"approved": True}) == (
        "spec:\n  enabled: true\n  approved: true\n\n# the end\n"
    )


def test_comment_closing_the_file_stays_after_a_new_map() -> None:
    text = "metadata:\n  name: gw-01  # name\n# the end\n"
    assert yamledit.set_fields(text, ("spec",), {"approved": True}) == (
        "metadata:\n  name: gw-01  # name\nspec:\n  approved: true\n# the end\n"
    )


def test_new_map_uses_the_file_indentation() -> None:
    assert yamledit.set_fields(FOUR_SPACES, ("other",), {"x": 1}) == (
        FOUR_SPACES + "other:\n    x: 1\n"
    )


def test_comment_before_document_start_survives_an_edit() -> None:
    assert yamledit.set_fields(COMMENT_BEFORE_START, ("spec",), {"enabled": False}) == (
        "# about this file\n---\nkind: Thing\nspec:\n  enabled: false\n"
    )


def test_crlf_line_ends_are_kept_in_an_edit() -> None:
    assert yamledit.set_fields("a: 1\r\nspec:\r\n  x: 1\r\n", ("spec",), {"x": 2}) == (
        "a: 1\r\nspec:\r\n  x: 2\r\n"
    )


def test_string_that_reads_as_a_boolean_is_quoted() -> None:
    assert yamledit.set_fields("a: 1\n", ("labels",), {"ready": "true"}) == (
        "a: 1\nlabels:\n  ready: 'true'\n"
    )


def test_multi_line_string_is_a_literal_block() -> None:
    assert yamledit.set_fields("a: 1\n", ("spec",), {"description": "one\ntwo"}) == (
        "a: 1\nspec:\n  description: |-\n    one\n    two\n"
    )


def test_syntax_error_names_line_and_column() -> None:
    with pytest.raises(ValueError, match=r"^line 3, column 7: mapping values are not allowed"):
        yamledit.set_fields("a: 1\nb:\n  c: d: e\n", ("spec",), {"x": True})


def test_syntax_error_line_counts_lines_before_document_start() -> None:
    with pytest.raises(ValueError, match=r"^line 4, column 7: mapping values are not allowed"):
        yamledit.set_fields("# c\n---\nb:\n  c: d: e\n", ("spec",), {"x": True})


def test_duplicate_key_names_the_second_one() -> None:
    with pytest.raises(ValueError, match=r'^line 2, column 1: .*found duplicate key "a"'):
        yamledit.set_fields("a: 1\na: 2\n", ("spec",), {"x": True})


def test_top_level_sequence_is_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"^line 1, column 1: the file must hold a mapping \(key: value lines\) at the "
        "top, found a sequence$",
    ):
        yamledit.set_fields("- a\n", ("spec",), {"x": True})


def test_empty_file_is_refused() -> None:
    with pytest.raises(ValueError, match=r"found nothing$"):
        yamledit.set_fields("# only a comment\n", ("spec",), {"x": True})


def test_path_through_a_scalar_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"^line 2, column 1: spec must be a mapping, found the value 'on'$"
    ):
        yamledit.set_fields("a: 1\nspec: on\n", ("spec",), {"x": True})


def test_render_writes_header_comments_then_block_yaml() -> None:
    assert yamledit.render({"a": {"b": [1, 2]}, "c": "yes"}, header=("one", "two")) == (
        "# one\n# two\na:\n  b:\n    - 1\n    - 2\nc: yes\n"
    )


def test_render_keeps_double_quoted_strings() -> None:
    assert yamledit.render({"when": yamledit.double_quoted("2027-12-31T00:00:00Z")}) == (
        'when: "2027-12-31T00:00:00Z"\n'
    )


def test_control_character_is_refused_with_its_place() -> None:
    with pytest.raises(
        ValueError,
        match=r"^line 2, column 4: special characters are not allowed \(character #x0007 is "
        r"not allowed in YAML\)$",
    ):
        yamledit.set_fields("a: 1\nb: \x07\n", ("spec",), {"x": True})
