"""Registry files on the status branch: stable bytes, no secrets, read back as written."""

from __future__ import annotations

from rciots.controller import registrydocs
from tests.test_registry import pending, registration


def test_a_registration_file_reads_back_as_the_same_entry():
    entry = registration(labels={"site": "lyon", "example.com/role": "gw", "9": "yes"})
    content = registrydocs.render_registration(entry)
    path = registrydocs.registration_path("acme", "gw-01")
    assert path == "registry/acme/gw-01.yaml"
    imported = registrydocs.read_documents([(path, content)])
    assert imported.problems == []
    assert imported.registrations == [entry]


def test_a_pending_file_reads_back_as_the_same_entry():
    entry = pending()
    path = registrydocs.pending_path("acme", "gw-09")
    imported = registrydocs.read_documents([(path, registrydocs.render_pending(entry))])
    assert imported.pending == [entry]


def test_the_same_entry_gives_the_same_bytes_in_a_fixed_order():
    content = registrydocs.render_registration(registration()).decode()
    assert content == registrydocs.render_registration(registration()).decode()
    assert content.startswith(
        "apiVersion: rciots.io/v1\nkind: DeviceRegistration\nmetadata:\n  tenant: acme\n"
        "  name: gw-01\nspec:\n  deviceId: id-1\n"
    )
    assert "  template: edge\n" in content
    assert "  previousCertificateSerial: null\n" in content
    assert "  labels:\n    site: lyon\n" in content


def test_a_file_in_the_wrong_place_or_broken_is_reported_and_skipped():
    good = registrydocs.render_registration(registration())
    imported = registrydocs.read_documents(
        [
            ("registry/acme/other.yaml", good),
            ("registry/acme/broken.yaml", b"kind: [\n"),
            ("pending/acme/gw-01.yaml", good),
            ("status/acme/gw-01.yaml", b"not read at all"),
        ]
    )
    assert imported.registrations == []
    assert [p.split(":")[0] for p in imported.problems] == [
        "registry/acme/other.yaml",
        "registry/acme/broken.yaml",
        "pending/acme/gw-01.yaml",
    ]
