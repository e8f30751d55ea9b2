"""Status documents: exact YAML, only the given fields, coarse lastSeen, capped errors."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from ruamel.yaml import YAML

from rciots.controller import statusdocs, yamlsafe

REVISION = "5f3c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e"
DIGEST = "sha256:" + "ab" * 32
NOON = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)


def read(document: bytes, *, yaml11: bool = False) -> object:
    (node,) = yamlsafe.parse(document)
    return yamlsafe.to_data(node, yaml11=yaml11)


def applied(**changes: object) -> statusdocs.DeviceStatus:
    fields: dict[str, object] = {
        "tenant": "acme-sensors",
        "device": "berlin-gw-01",
        "result": statusdocs.APPLIED,
        "desired_revision": REVISION,
        "desired_digest": DIGEST,
        "attempted_revision": REVISION,
        "applied_revision": REVISION,
        "applied_digest": DIGEST,
        "last_seen": NOON + timedelta(minutes=17, seconds=3),
        "connected": True,
    }
    fields.update(changes)
    return statusdocs.DeviceStatus(**fields)  # type: ignore[arg-type]


def test_render_status_writes_this_exact_document() -> None:
    status = applied(
        result=statusdocs.APPLY_FAILED,
        resource_errors=[
            ("Service/mqtt", "port 1883 is in use"),
            ("Deployment/collector", "image pull failed:\nno such host"),
        ],
    )
    assert statusdocs.render_status(status) == (
        b"apiVersion: rciots.io/v1\n"
        b"kind: DeviceStatus\n"
        b"metadata:\n"
        b"  tenant: acme-sensors\n"
        b"  name: berlin-gw-01\n"
        b"status:\n"
        b"  result: ApplyFailed\n"
        b"  connected: true\n"
        b'  lastSeen: "2027-03-01T12:00:00Z"\n'
        b'  desiredRevision: "5f3c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e"\n'
        b"  desiredDigest: sha256:" + b"ab" * 32 + b"\n"
        b'  lastAttemptedRevision: "5f3c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e"\n'
        b"  renderError: null\n"
        b'  lastAppliedRevision: "5f3c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e"\n'
        b"  lastAppliedDigest: sha256:" + b"ab" * 32 + b"\n"
        b"  resourceErrors:\n"
        b"  - resource: Deployment/collector\n"
        b"    message: |-\n"
        b"      image pull failed:\n"
        b"      no such host\n"
        b"  - resource: Service/mqtt\n"
        b"    message: port 1883 is in use\n"
    )


def test_render_status_holds_exactly_the_given_fields() -> None:
    status = statusdocs.DeviceStatus(
        tenant="northwind-retail",
        device="store-7",
        result=statusdocs.RENDER_FAILED,
        desired_revision="a" * 40,
        desired_digest=DIGEST,
        attempted_revision="b" * 40,
        render_error="kustomization.yaml: unknown field 'resourcez'",
        applied_revision=None,
        applied_digest=None,
        resource_errors=[("ConfigMap/settings", "forbidden")],
        last_seen=None,
        connected=False,
    )
    assert read(statusdocs.render_status(status)) == {
        "apiVersion": "rciots.io/v1",
        "kind": "DeviceStatus",
        "metadata": {"tenant": "northwind-retail", "name": "store-7"},
        "status": {
            "result": "RenderFailed",
            "connected": False,
            "lastSeen": None,
            "desiredRevision": "a" * 40,
            "desiredDigest": DIGEST,
            "lastAttemptedRevision": "b" * 40,
            "renderError": "kustomization.yaml: unknown field 'resourcez'",
            "lastAppliedRevision": None,
            "lastAppliedDigest": None,
            "resourceErrors": [{"resource": "ConfigMap/settings", "message": "forbidden"}],
        },
    }


def test_a_new_device_has_every_key_with_null_values() -> None:
    document = statusdocs.render_status(statusdocs.DeviceStatus("acme", "gw-1"))
    assert read(document) == {
        "apiVersion": "rciots.io/v1",
        "kind": "DeviceStatus",
        "metadata": {"tenant": "acme", "name": "gw-1"},
        "status": {
            "result": "Pending",
            "connected": False,
            "lastSeen": None,
            "desiredRevision": None,
            "desiredDigest": None,
            "lastAttemptedRevision": None,
            "renderError": None,
            "lastAppliedRevision": None,
            "lastAppliedDigest": None,
            "resourceErrors": [],
        },
    }


def test_resource_errors_are_written_in_one_order_whatever_the_input_order() -> None:
    errors = [(f"ConfigMap/c{i}", f"error {i}") for i in range(5)]
    first = statusdocs.render_status(applied(resource_errors=errors))
    second = statusdocs.render_status(applied(resource_errors=list(reversed(errors))))
    assert first == second


def test_heartbeats_within_the_granularity_leave_the_document_unchanged() -> None:
    documents = {
        statusdocs.render_status(applied(last_seen=NOON + timedelta(seconds=20 * beat)))
        for beat in range(180)  # an hour of heartbeats every 20 s
    }
    assert len(documents) == 1
    next_hour = statusdocs.render_status(applied(last_seen=NOON + timedelta(hours=1)))
    assert next_hour not in documents


def test_a_disconnect_changes_the_document_and_records_the_second() -> None:
    seen = NOON + timedelta(minutes=42, seconds=7, microseconds=900)
    online = statusdocs.render_status(applied(last_seen=seen))
    offline = statusdocs.render_status(applied(last_seen=seen, connected=False))
    assert online != offline
    assert read(online)["status"]["lastSeen"] == "2027-03-01T12:00:00Z"  # type: ignore[index]
    assert read(offline)["status"]["lastSeen"] == "2027-03-01T12:42:07Z"  # type: ignore[index]


def test_written_last_seen_granularity_is_configurable_and_utc() -> None:
    seen = datetime(2027, 3, 1, 14, 7, 59, tzinfo=timezone(timedelta(hours=2)))
    assert statusdocs.written_last_seen(seen, True, timedelta(minutes=5)) == datetime(
        2027, 3, 1, 12, 5, tzinfo=UTC
    )
    assert statusdocs.written_last_seen(seen, True) == datetime(2027, 3, 1, 12, tzinfo=UTC)
    assert statusdocs.written_last_seen(None, True) is None
    document = statusdocs.render_status(applied(last_seen=seen), granularity=timedelta(minutes=5))
    assert b'lastSeen: "2027-03-01T12:05:00Z"' in document


def test_a_time_without_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        statusdocs.render_status(applied(last_seen=datetime(2027, 3, 1, 12)))


def test_long_errors_are_capped_and_marked_truncated() -> None:
    text = "é" * 3000  # 6000 bytes; the cut must not split a character
    status = applied(render_error=text, resource_errors=[("Deployment/app", "x" * 5000)])
    data = read(statusdocs.render_status(status))
    render_error = data["status"]["renderError"]  # type: ignore[index]
    message = data["status"]["resourceErrors"][0]["message"]  # type: ignore[index]
    assert len(render_error.encode()) <= statusdocs.MAX_ERROR_BYTES
    assert render_error.startswith("é" * 900)
    assert render_error.endswith("[truncated: 6000 bytes in all]")
    assert len(message.encode()) <= statusdocs.MAX_ERROR_BYTES
    assert message.endswith("[truncated: 5000 bytes in all]")
    short = read(statusdocs.render_status(applied(render_error="short")))
    assert short["status"]["renderError"] == "short"  # type: ignore[index]


def test_many_resource_errors_are_counted_beyond_the_cap() -> None:
    errors = [(f"ConfigMap/c{i:03d}", "bad") for i in range(60)]
    data = read(statusdocs.render_status(applied(resource_errors=errors)))
    status = data["status"]  # type: ignore[index]
    assert len(status["resourceErrors"]) == statusdocs.MAX_RESOURCE_ERRORS
    assert status["resourceErrorsOmitted"] == 10


def test_credentials_in_urls_never_reach_the_document() -> None:
    status = applied(
        render_error="fetching https://bot:s3cret@git.example.com/fleet.git failed",
        resource_errors=[("Deployment/app", "pull from https://user:hunter2@registry/app")],
    )
    document = statusdocs.render_status(status)
    assert b"s3cret" not in document
    assert b"hunter2" not in document
    assert b"https://git.example.com/fleet.git" in document


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yes",
        "No",
        "null",
        "~",
        "true",
        "1",
        "0x1F",
        "1e3",
        "12:30:00",
        "-",
        "- item",
        "a: b",
        "a:",
        "key: value\nsecond: line",
        "#comment",
        " leading space",
        "trailing space ",
        "tab\there",
        'quote " and backslash \\',
        "'single'",
        "line\n",
        "two\n\n",
        "three\n\n\n",
        "\nstarts with a newline",
        "  indented\nlines",
        "windows\r\nline ends",
        "nel\x85ls\u2028ps\u2029bom\ufeff",
        "control \x00\x07\x1b\x7f\x9f",
        "unicode ✓ 日本 🚀",
        "--- not a document",
        "...",
        "{flow: map}",
        "[flow, seq]",
        "*alias",
        "&anchor",
        "!tag",
        "%directive",
        "@at",
        "port 1883 is in use",
        "a - b, c (d) it's",
        "end:",
        "x:y z:",
        "word #not-comment",
        "`backtick",
        "multi\nline with: colon\n  and indent\n- and dash\n# and hash",
    ],
)
def test_any_text_reads_back_unchanged(text: str) -> None:
    status = applied(render_error=text, desired_revision=text, resource_errors=[(text, text)])
    document = statusdocs.render_status(status)
    expected = {
        "renderError": text,
        "desiredRevision": text,
        "resourceErrors": [{"resource": text, "message": text}],
    }
    for yaml11 in (False, True):
        status_data = read(document, yaml11=yaml11)["status"]  # type: ignore[index]
        assert {key: status_data[key] for key in expected} == expected
    loaded = YAML(typ="safe", pure=True).load(io.BytesIO(document))["status"]
    assert {key: loaded[key] for key in expected} == expected


def test_a_lone_surrogate_is_written_as_a_replacement_character() -> None:
    document = statusdocs.render_status(applied(render_error="bad \udcff byte"))
    assert read(document)["status"]["renderError"] == "bad \ufffd byte"  # type: ignore[index]


@pytest.mark.parametrize(
    ("tenant", "device"),
    [("acme", "../etc"), ("acme", "a/b"), ("..", "gw"), ("Acme", "gw"), ("acme", "")],
)
def test_names_that_could_leave_the_status_folder_are_refused(tenant: str, device: str) -> None:
    with pytest.raises(ValueError, match="DNS-1123"):
        statusdocs.status_path(tenant, device)
    with pytest.raises(ValueError, match="DNS-1123"):
        statusdocs.render_status(statusdocs.DeviceStatus(tenant, device))


def test_status_path() -> None:
    assert statusdocs.status_path("acme", "gw-01") == "status/acme/gw-01.yaml"


@pytest.mark.parametrize("result", ["applied", "Apply Failed", "", "Ok!"])
def test_a_result_must_be_a_camel_case_reason(result: str) -> None:
    with pytest.raises(ValueError, match="CamelCase"):
        statusdocs.render_status(applied(result=result))


def test_urls_in_errors_lose_their_credentials() -> None:
    status = statusdocs.DeviceStatus(
        "acme", "gw-1", statusdocs.RENDER_FAILED, render_error="fetch https://u:p@ss@h/x failed"
    )
    text = statusdocs.render_status(status).decode()
    assert "https://h/x" in text
    assert "u:p" not in text
    assert "ss@" not in text


def test_readme_says_the_controller_writes_the_branch() -> None:
    assert statusdocs.README_PATH == "README.md"
    assert b"written by the RCIoTs controller" in statusdocs.README
