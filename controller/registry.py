"""The device registry: every enrolled identity and every pending enrollment, kept durably.

Position in the flow: enrollment (decides) -> **registry** (records) -> status branch
(``registry/`` and ``pending/``, the published copy), connector (who may connect), reconcile
(devices enrolled without a Device file still get a workload).

The registry of record is the status branch of the fleet repo; this store is the controller's
working copy of it in its state directory (SQLite, one transaction per change, synchronous), so
that an answer given to a device is never lost in a crash, even before the batched status
commit. On start the controller imports from the branch what the store does not have (a new
state directory recovers every identity from Git) and queues what the branch lacks.

Thread safety: one lock guards the store; ``atomic()`` holds it across a decision and its
writes, which is what makes ``maxDevices`` hold under concurrent enrollments. Reads come from
an in-memory index kept in step with the database.
"""

from __future__ import annotations

import collections
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from rciots.controller import timestamps

__all__ = [
    "Listener",
    "Pending",
    "Registration",
    "Registry",
    "RegistryError",
    "pending_from_json",
    "pending_to_json",
    "registration_from_json",
    "registration_to_json",
]


class RegistryError(Exception):
    """The registry database cannot be opened or written."""


@dataclass(frozen=True)
class Registration:
    """One enrolled device identity. Holds hashes and fingerprints only, never a secret."""

    device_id: str
    tenant: str
    name: str
    token: str  # the provisioning token's name (its file name under tokens/)
    approval: Literal["auto", "manual"]  # of the token, at enrollment
    device_token_hash: str  # "sha256:<hex>" of the device token
    key_fingerprint: str  # "sha256:<hex>" of the device's public key
    certificate_serial: str
    certificate_fingerprint: str
    certificate_not_after: datetime
    enrolled_at: datetime
    labels: Mapping[str, str] = field(default_factory=dict)  # given at enrollment
    template: str | None = None  # given at enrollment (the token's)
    # the certificate before the last renewal: still accepted until it expires, in case the
    # device did not store its new one
    previous_certificate_serial: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.name)


@dataclass(frozen=True)
class Pending:
    """An enrollment with a manual-approval token, waiting for a pull request."""

    tenant: str
    name: str
    token: str
    key_fingerprint: str
    address: str  # where the request came from
    requested_at: datetime  # the first request
    last_request_at: datetime  # the latest one (the agent polls)
    labels: Mapping[str, str] = field(default_factory=dict)  # asked for by the device
    system: Mapping[str, str] = field(default_factory=dict)  # what the device says it is

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.name)


# Called after every committed change: (the new registration or pending entry, or None when
# it was removed, with its (tenant, name)); the controller queues status branch files from it.
Listener = Callable[[Literal["registration", "pending"], tuple[str, str], object | None], None]

_SCHEMA = """
create table if not exists registrations (
    device_id text primary key,
    tenant text not null,
    name text not null,
    data text not null,
    unique (tenant, name)
);
create table if not exists pending (
    tenant text not null,
    name text not null,
    data text not null,
    primary key (tenant, name)
);
"""


class Registry:
    """The store; ``Registry(path)`` opens (or creates) it and loads its index."""

    def __init__(self, path: Path, listener: Listener | None = None) -> None:
        self.path = path
        self.listener = listener
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("pragma journal_mode=wal")
            self._db.execute("pragma synchronous=full")  # an answer given is on disk
            self._db.executescript(_SCHEMA)
            rows = self._db.execute("select data from registrations").fetchall()
            pending_rows = self._db.execute("select data from pending").fetchall()
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open the device registry {path}: {exc}") from None
        self._by_id: dict[str, Registration] = {}
        self._by_name: dict[tuple[str, str], Registration] = {}
        self._by_key: dict[str, Registration] = {}
        # enrolled devices per tenant and per (tenant, token): every enrollment checks the
        # limits, which a count over every registration made slower as the fleet grew
        self._per_tenant: collections.Counter[str] = collections.Counter()
        self._per_token: collections.Counter[tuple[str, str]] = collections.Counter()
        for (data,) in rows:
            self._index(registration_from_json(json.loads(data)))
        self._pending: dict[tuple[str, str], Pending] = {}
        for (data,) in pending_rows:
            entry = pending_from_json(json.loads(data))
            self._pending[entry.key] = entry

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Hold the store across reads and writes that must not interleave with others'."""
        with self._lock:
            yield

    # -- reads ----------------------------------------------------------------------------

    def get(self, device_id: str) -> Registration | None:
        return self._by_id.get(device_id)

    def by_name(self, tenant: str, name: str) -> Registration | None:
        return self._by_name.get((tenant, name))

    def by_key(self, key_fingerprint: str) -> Registration | None:
        return self._by_key.get(key_fingerprint)

    def registrations(self) -> list[Registration]:
        with self._lock:
            return list(self._by_id.values())

    def count(self, tenant: str, token: str | None = None) -> int:
        """Devices enrolled in ``tenant`` (with ``token``, when given)."""
        if token is None:
            return self._per_tenant[tenant]
        return self._per_token[(tenant, token)]

    def pending(self, tenant: str, name: str) -> Pending | None:
        return self._pending.get((tenant, name))

    def all_pending(self) -> list[Pending]:
        with self._lock:
            return list(self._pending.values())

    def pending_count(self, tenant: str, token: str) -> int:
        with self._lock:
            return sum(1 for p in self._pending.values() if p.tenant == tenant and p.token == token)

    # -- writes ---------------------------------------------------------------------------

    def put(self, registration: Registration) -> None:
        """Add a registration, or replace the one with its device id (a renewal)."""
        with self._lock:
            old = self._by_id.get(registration.device_id)
            self._write(
                "insert or replace into registrations values (?, ?, ?, ?)",
                (
                    registration.device_id,
                    registration.tenant,
                    registration.name,
                    json.dumps(registration_to_json(registration)),
                ),
            )
            if old is not None:
                self._unindex(old)
            self._index(registration)
        self._notify("registration", registration.key, registration)

    def remove(self, device_id: str) -> Registration | None:
        with self._lock:
            old = self._by_id.get(device_id)
            if old is None:
                return None
            self._write("delete from registrations where device_id = ?", (device_id,))
            self._unindex(old)
        self._notify("registration", old.key, None)
        return old

    def put_pending(self, entry: Pending) -> None:
        with self._lock:
            self._write(
                "insert or replace into pending values (?, ?, ?)",
                (entry.tenant, entry.name, json.dumps(pending_to_json(entry))),
            )
            self._pending[entry.key] = entry
        self._notify("pending", entry.key, entry)

    def remove_pending(self, tenant: str, name: str) -> Pending | None:
        with self._lock:
            old = self._pending.pop((tenant, name), None)
            if old is None:
                return None
            self._write("delete from pending where tenant = ? and name = ?", (tenant, name))
        self._notify("pending", (tenant, name), None)
        return old

    # -- internals ------------------------------------------------------------------------

    def _write(self, statement: str, values: tuple[str, ...]) -> None:
        try:
            with self._db:  # one transaction: committed (and synced) or not at all
                self._db.execute("begin immediate")
                self._db.execute(statement, values)
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot write the device registry {self.path}: {exc}") from None

    def _index(self, registration: Registration) -> None:
        self._by_id[registration.device_id] = registration
        self._by_name[registration.key] = registration
        self._by_key[registration.key_fingerprint] = registration
        self._per_tenant[registration.tenant] += 1
        self._per_token[(registration.tenant, registration.token)] += 1

    def _unindex(self, registration: Registration) -> None:
        self._by_id.pop(registration.device_id, None)
        self._by_name.pop(registration.key, None)
        self._by_key.pop(registration.key_fingerprint, None)
        self._per_tenant[registration.tenant] -= 1
        self._per_token[(registration.tenant, registration.token)] -= 1

    def _notify(
        self,
        kind: Literal["registration", "pending"],
        key: tuple[str, str],
        value: object | None,
    ) -> None:
        if self.listener is not None:
            self.listener(kind, key, value)


def _time(when: datetime) -> str:
    return timestamps.format_timestamp(when)


def registration_to_json(r: Registration) -> dict[str, object]:
    return {
        "deviceId": r.device_id,
        "tenant": r.tenant,
        "name": r.name,
        "token": r.token,
        "approval": r.approval,
        "deviceTokenHash": r.device_token_hash,
        "keyFingerprint": r.key_fingerprint,
        "certificateSerial": r.certificate_serial,
        "certificateFingerprint": r.certificate_fingerprint,
        "certificateNotAfter": _time(r.certificate_not_after),
        "enrolledAt": _time(r.enrolled_at),
        "labels": dict(r.labels),
        "template": r.template,
        "previousCertificateSerial": r.previous_certificate_serial,
    }


def registration_from_json(data: Mapping[str, object]) -> Registration:
    def text(key: str) -> str:
        return str(data[key])

    def optional(key: str) -> str | None:
        value = data.get(key)
        return None if value is None else str(value)

    approval = text("approval")
    return Registration(
        device_id=text("deviceId"),
        tenant=text("tenant"),
        name=text("name"),
        token=text("token"),
        approval="manual" if approval == "manual" else "auto",
        device_token_hash=text("deviceTokenHash"),
        key_fingerprint=text("keyFingerprint"),
        certificate_serial=text("certificateSerial"),
        certificate_fingerprint=text("certificateFingerprint"),
        certificate_not_after=timestamps.parse_timestamp(text("certificateNotAfter")),
        enrolled_at=timestamps.parse_timestamp(text("enrolledAt")),
        labels=_string_map(data.get("labels")),
        template=optional("template"),
        previous_certificate_serial=optional("previousCertificateSerial"),
    )


def pending_to_json(p: Pending) -> dict[str, object]:
    return {
        "tenant": p.tenant,
        "name": p.name,
        "token": p.token,
        "keyFingerprint": p.key_fingerprint,
        "address": p.address,
        "requestedAt": _time(p.requested_at),
        "lastRequestAt": _time(p.last_request_at),
        "labels": dict(p.labels),
        "system": dict(p.system),
    }


def pending_from_json(data: Mapping[str, object]) -> Pending:
    return Pending(
        tenant=str(data["tenant"]),
        name=str(data["name"]),
        token=str(data["token"]),
        key_fingerprint=str(data["keyFingerprint"]),
        address=str(data["address"]),
        requested_at=timestamps.parse_timestamp(str(data["requestedAt"])),
        last_request_at=timestamps.parse_timestamp(str(data["lastRequestAt"])),
        labels=_string_map(data.get("labels")),
        system=_string_map(data.get("system")),
    )


def _string_map(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}
