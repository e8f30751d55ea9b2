"""Provisioning token secrets, hashes, expiry parsing and the token file's text."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from ruamel.yaml import YAML

from rciots.controller import schemas, timestamps, tokens

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HINT = "write a date (2027-12-31) or an RFC 3339 time with zone (2027-12-31T18:00:00Z)"
HASH = "sha256:090410f8d85802fba85efa7d5967d52308895f7b93bebe59cc532410e885b438"


def test_generated_token_is_prefix_and_43_url_safe_characters() -> None:
    assert re.fullmatch(r"rciots-pt-[A-Za-z0-9_-]{43}", tokens.generate_token())


def test_generated_tokens_differ() -> None:
    assert tokens.generate_token() != tokens.generate_token()


def test_hash_is_sha256_of_the_whole_token() -> None:
    assert tokens.hash_token("rciots-pt-example") == HASH


def test_date_means_midnight_utc() -> None:
    assert tokens.parse_expires("2027-12-31", NOW) == datetime(2027, 12, 31, tzinfo=UTC)


def test_time_with_z() -> None:
    expected = datetime(2027, 12, 31, 18, 0, tzinfo=UTC)
    assert tokens.parse_expires("2027-12-31T18:00:00Z", NOW) == expected


def test_time_with_offset() -> None:
    when = tokens.parse_expires("2027-12-31T18:00:00+02:00", NOW)
    assert when == datetime(2027, 12, 31, 16, 0, tzinfo=UTC)


def test_time_with_negative_offset() -> None:
    when = tokens.parse_expires("2027-12-31T18:00:00-05:30", NOW)
    assert when == datetime(2027, 12, 31, 23, 30, tzinfo=UTC)


def test_lowercase_separators_are_rfc_3339_too() -> None:
    expected = datetime(2027, 12, 31, 18, 0, tzinfo=UTC)
    assert tokens.parse_expires("2027-12-31t18:00:00z", NOW) == expected


def test_fraction_of_a_second_is_kept_to_microseconds() -> None:
    when = tokens.parse_expires("2027-12-31T18:00:00.1234567Z", NOW)
    assert when == datetime(2027, 12, 31, 18, 0, 0, 123456, tzinfo=UTC)


def test_time_without_zone_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^the time has no zone: add Z for UTC"):
        tokens.parse_expires("2027-12-31T18:00:00", NOW)


def test_time_with_space_and_no_zone_is_refused_as_naive() -> None:
    with pytest.raises(ValueError, match=r"^the time has no zone"):
        tokens.parse_expires("2027-12-31 18:00", NOW)


@pytest.mark.parametrize(
    "text",
    [
        "2026-13-01",
        "2027-02-30",
        "31.12.2027",
        "2027-12-31T25:00:00Z",
        "2027-12-31T18:00:00+24:00",
        "2027-12-31T18:00Z",
        "tomorrow",
        "",
    ],
)
def test_malformed_expiry_gets_the_hint(text: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(HINT)}$"):
        tokens.parse_expires(text, NOW)


def test_past_date_is_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"^that is not in the future \(it is now 2026-06-01T12:00:00Z\): give a later",
    ):
        tokens.parse_expires("2026-05-31", NOW)


def test_expiry_equal_to_now_is_refused() -> None:
    with pytest.raises(ValueError, match="not in the future"):
        tokens.parse_expires("2026-06-01T12:00:00Z", NOW)


def test_format_timestamp_converts_to_utc() -> None:
    when = datetime(2027, 12, 31, 18, 0, tzinfo=timezone(timedelta(hours=2)))
    assert timestamps.format_timestamp(when) == "2027-12-31T16:00:00Z"


def test_format_timestamp_keeps_microseconds() -> None:
    when = datetime(2027, 12, 31, 18, 0, 0, 500000, tzinfo=UTC)
    assert timestamps.format_timestamp(when) == "2027-12-31T18:00:00.500000Z"


def test_minimal_token_file() -> None:
    assert tokens.render_token_file("line-1", HASH, approval="manual") == (
        "# Created by `rciots token create`.\n"
        "# Only a hash of the secret is stored here; the token itself was shown once.\n"
        "apiVersion: rciots.io/v1\n"
        "kind: ProvisioningToken\n"
        "metadata:\n"
        "  name: line-1\n"
        "spec:\n"
        f"  secretHash: {HASH}\n"
        "  approval: manual\n"
        "  enabled: true\n"
    )


def test_full_token_file() -> None:
    text = tokens.render_token_file(
        "line-1",
        HASH,
        approval="auto",
        expires=datetime(2027, 12, 31, tzinfo=UTC),
        max_devices=10,
        template="web",
        labels={"site": "berlin", "example.com/tier": "edge"},
    )
    assert text.endswith(
        "spec:\n"
        f"  secretHash: {HASH}\n"
        "  approval: auto\n"
        "  enabled: true\n"
        '  expires: "2027-12-31T00:00:00Z"\n'
        "  maxDevices: 10\n"
        "  template: web\n"
        "  labels:\n"
        "    site: berlin\n"
        "    example.com/tier: edge\n"
    )


def test_label_values_that_look_like_other_types_are_quoted() -> None:
    text = tokens.render_token_file(
        "line-1", HASH, approval="auto", labels={"ready": "true", "rack": "12"}
    )
    assert text.endswith("  labels:\n    ready: 'true'\n    rack: '12'\n")


def test_token_file_matches_the_provisioningtoken_schema() -> None:
    text = tokens.render_token_file(
        "line-1",
        HASH,
        approval="auto",
        expires=datetime(2027, 12, 31, tzinfo=UTC),
        max_devices=10,
        template="web",
        labels={"ready": "true"},
    )
    assert schemas.validate("ProvisioningToken", YAML(typ="safe", pure=True).load(text)) == []
