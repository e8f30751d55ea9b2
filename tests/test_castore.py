"""The CA on disk: created once, loaded after, keys private, bad folders explained."""

from __future__ import annotations

import logging
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rciots.controller import ca, castore

NOW = datetime(2027, 3, 1, tzinfo=UTC)
NAMES = ["localhost", "127.0.0.1"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_a_ca_with_private_keys_for_the_owner_only(tmp_path):
    folder = tmp_path / "ca"
    authority = castore.load_or_create(folder, NAMES, NOW)
    assert sorted(p.name for p in folder.iterdir()) == sorted(castore.FILES)
    assert mode(folder) == 0o700
    for key in ("root.key", "device-ca.key", "server.key"):
        assert mode(folder / key) == 0o600
    assert mode(folder / "root.pem") == 0o644
    assert ca.server_names_of(authority.server) == NAMES


def test_a_second_start_loads_the_same_ca(tmp_path):
    first = castore.load_or_create(tmp_path / "ca", NAMES, NOW)
    second = castore.load_or_create(tmp_path / "ca", NAMES, NOW + timedelta(days=1))
    assert second.root == first.root
    assert second.device_ca == first.device_ca
    assert second.server == first.server


def test_new_server_names_get_a_new_server_certificate_from_the_same_root(tmp_path):
    first = castore.load_or_create(tmp_path / "ca", NAMES, NOW)
    second = castore.load_or_create(tmp_path / "ca", ["controller.example"], NOW)
    assert second.root == first.root
    assert ca.server_names_of(second.server) == ["controller.example"]
    second.server.verify_directly_issued_by(second.root)
    third = castore.load_or_create(tmp_path / "ca", ["controller.example"], NOW)
    assert third.server == second.server


def test_a_server_certificate_close_to_expiry_is_issued_again(tmp_path):
    first = castore.load_or_create(tmp_path / "ca", NAMES, NOW)
    later = castore.load_or_create(tmp_path / "ca", NAMES, NOW + timedelta(days=350))
    assert later.server != first.server
    assert later.server.not_valid_after_utc > first.server.not_valid_after_utc


def test_without_root_key_the_server_certificate_is_kept_with_a_warning(tmp_path, caplog):
    castore.load_or_create(tmp_path / "ca", NAMES, NOW)
    (tmp_path / "ca" / "root.key").unlink()
    with caplog.at_level(logging.WARNING):
        authority = castore.load_or_create(tmp_path / "ca", ["other.example"], NOW)
    assert authority.root_key is None
    assert ca.server_names_of(authority.server) == NAMES
    assert "cannot be issued again without root.key" in caplog.text


def test_a_key_others_can_read_is_refused(tmp_path):
    castore.load_or_create(tmp_path / "ca", NAMES, NOW)
    (tmp_path / "ca" / "device-ca.key").chmod(0o644)
    with pytest.raises(castore.CaStoreError, match=r"device-ca.key can be read by others.*chmod"):
        castore.load_or_create(tmp_path / "ca", NAMES, NOW)


def test_part_of_a_ca_is_an_error_naming_what_is_missing(tmp_path):
    castore.load_or_create(tmp_path / "ca", NAMES, NOW)
    (tmp_path / "ca" / "server.pem").unlink()
    with pytest.raises(castore.CaStoreError, match=r"not server\.pem"):
        castore.load_or_create(tmp_path / "ca", NAMES, NOW)


def test_a_key_that_does_not_match_its_certificate_is_refused(tmp_path):
    castore.load_or_create(tmp_path / "ca", NAMES, NOW)
    other = castore.load_or_create(tmp_path / "other", NAMES, NOW)
    assert other
    (tmp_path / "ca" / "server.key").write_bytes((tmp_path / "other" / "server.key").read_bytes())
    with pytest.raises(castore.CaStoreError, match=r"server\.key is not the key of server\.pem"):
        castore.load_or_create(tmp_path / "ca", NAMES, NOW)


def test_a_device_ca_from_another_root_is_refused(tmp_path):
    castore.load_or_create(tmp_path / "ca", NAMES, NOW)
    castore.load_or_create(tmp_path / "other", NAMES, NOW)
    for name in ("device-ca.pem", "device-ca.key"):
        (tmp_path / "ca" / name).write_bytes((tmp_path / "other" / name).read_bytes())
    with pytest.raises(castore.CaStoreError, match=r"device-ca\.pem is not signed by root\.pem"):
        castore.load_or_create(tmp_path / "ca", NAMES, NOW)
