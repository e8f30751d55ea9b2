"""The device registry store: durable, indexed, and telling the controller what changed."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from rciots.controller import registry

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def registration(name: str = "gw-01", device_id: str = "id-1", **changes: object):
    base = registry.Registration(
        device_id=device_id,
        tenant="acme",
        name=name,
        token="rollout",
        approval="auto",
        device_token_hash="sha256:" + "a" * 64,
        key_fingerprint=f"sha256:key-of-{name}",
        certificate_serial="1f",
        certificate_fingerprint="sha256:" + "c" * 64,
        certificate_not_after=NOW,
        enrolled_at=NOW,
        labels={"site": "lyon"},
        template="edge",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def pending(name: str = "gw-09") -> registry.Pending:
    return registry.Pending(
        tenant="acme",
        name=name,
        token="manual",
        key_fingerprint="sha256:k",
        address="192.0.2.7",
        requested_at=NOW,
        last_request_at=NOW,
        labels={"site": "lyon"},
        system={"os": "rhel"},
    )


def test_a_registration_is_found_by_id_name_and_key(tmp_path):
    store = registry.Registry(tmp_path / "r.db")
    entry = registration()
    store.put(entry)
    assert store.get("id-1") == entry
    assert store.by_name("acme", "gw-01") == entry
    assert store.by_key("sha256:key-of-gw-01") == entry
    assert store.get("id-2") is None
    assert store.registrations() == [entry]


def test_what_is_written_survives_reopening(tmp_path):
    store = registry.Registry(tmp_path / "r.db")
    store.put(registration())
    store.put_pending(pending())
    store.close()
    again = registry.Registry(tmp_path / "r.db")
    assert again.registrations() == [registration()]
    assert again.all_pending() == [pending()]


def test_a_renewal_replaces_the_entry_and_its_indexes(tmp_path):
    store = registry.Registry(tmp_path / "r.db")
    store.put(registration())
    renewed = registration(key_fingerprint="sha256:new", previous_certificate_serial="1f")
    store.put(renewed)
    assert store.by_key("sha256:key-of-gw-01") is None
    assert store.by_key("sha256:new") == renewed
    assert store.registrations() == [renewed]


def test_counts_by_tenant_and_token(tmp_path):
    store = registry.Registry(tmp_path / "r.db")
    store.put(registration("a", "1"))
    store.put(registration("b", "2", token="other"))
    store.put(registration("c", "3", tenant="globex"))
    assert store.count("acme") == 2
    assert store.count("acme", "rollout") == 1
    assert store.count("globex", "rollout") == 1
    assert store.count("initech") == 0
    store.put(registration("a", "1", key_fingerprint="sha256:renewed"))  # a renewal
    store.remove("2")
    assert (store.count("acme"), store.count("acme", "rollout")) == (1, 1)
    assert store.count("acme", "other") == 0
    store.close()
    again = registry.Registry(tmp_path / "r.db")
    assert (again.count("acme"), again.count("globex"), again.count("acme", "other")) == (1, 1, 0)


def test_removing_frees_the_name_and_the_key(tmp_path):
    store = registry.Registry(tmp_path / "r.db")
    store.put(registration())
    assert store.remove("id-1") == registration()
    assert store.remove("id-1") is None
    assert store.by_name("acme", "gw-01") is None
    assert store.by_key("sha256:key-of-gw-01") is None
    assert registry.Registry(tmp_path / "r.db").registrations() == []


def test_pending_entries_are_counted_per_token_and_removed(tmp_path):
    store = registry.Registry(tmp_path / "r.db")
    store.put_pending(pending("a"))
    store.put_pending(pending("b"))
    assert store.pending_count("acme", "manual") == 2
    assert store.pending_count("acme", "other") == 0
    assert store.remove_pending("acme", "a") == pending("a")
    assert store.remove_pending("acme", "a") is None
    assert [p.name for p in store.all_pending()] == ["b"]


def test_the_listener_hears_every_change(tmp_path):
    heard: list[tuple[str, tuple[str, str], object]] = []
    store = registry.Registry(tmp_path / "r.db", lambda *change: heard.append(change))
    store.put(registration())
    store.put_pending(pending())
    store.remove("id-1")
    store.remove_pending("acme", "gw-09")
    store.remove("id-1")  # nothing to remove: nothing heard
    assert heard == [
        ("registration", ("acme", "gw-01"), registration()),
        ("pending", ("acme", "gw-09"), pending()),
        ("registration", ("acme", "gw-01"), None),
        ("pending", ("acme", "gw-09"), None),
    ]


def test_atomic_sections_do_not_interleave(tmp_path):
    """Check-then-write under ``atomic`` from many threads never exceeds a limit."""
    store = registry.Registry(tmp_path / "r.db")
    limit = 5

    def enroll(index: int) -> None:
        with store.atomic():
            if store.count("acme") < limit:
                store.put(registration(f"d{index}", f"id-{index}"))

    threads = [threading.Thread(target=enroll, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.count("acme") == limit


def test_an_unusable_database_is_an_error_naming_it(tmp_path):
    path = tmp_path / "r.db"
    path.write_bytes(b"this is no database" * 100)
    with pytest.raises(registry.RegistryError, match=str(path)):
        registry.Registry(path)
