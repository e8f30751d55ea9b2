"""What the agent keeps across restarts: its identity, and its last desired and applied state.

Position in the flow: enrollment (writes the identity) -> **state** <- connection loop (reads
the identity; writes each desired bundle when it arrives and each applied one after its apply).
A restart then neither enrolls again nor applies again what is already applied.

Two places for the identity (device id, device token, key, certificate, CA):

- ``DirectoryIdentity``: files in the state directory, the secret ones readable by the owner
  only, replaced all together: a new identity (a renewed key and certificate) is written
  into a staging folder first and then moved in, ``identity.json`` last; a crash during the
  move is finished by the next ``load``, so the files never mix two identities;
- ``SecretIdentity``: a Kubernetes Secret, through ``kubectl``/``oc`` (argv lists, the Secret
  as JSON on stdin), for an agent running in a cluster whose pod has no durable disk.

Bundles and the inventory always live in the state directory (``StateDir``), as JSON, each
file replaced atomically: a crash leaves the old or the new one, never half.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from rciots.agent import applier_support
from rciots.agent.atomicfile import fsync_folder, write_atomically
from rciots.agent.bundle import ApplyResult, Bundle, ResourceId, ResourceResult

__all__ = [
    "DirectoryIdentity",
    "Identity",
    "IdentityStore",
    "SecretIdentity",
    "StateDir",
    "StateError",
]


_T = TypeVar("_T")


class StateError(Exception):
    """The state cannot be read or written; the message says which file or Secret."""


@dataclass(frozen=True)
class Identity:
    device_id: str
    tenant: str
    name: str
    connector_url: str
    device_token: str = field(repr=False)
    key_pem: bytes = field(repr=False)
    certificate_pem: bytes = b""  # the device certificate, then the device CA
    ca_pem: bytes = b""  # the root the controller's endpoints are checked against

    def to_files(self) -> dict[str, bytes]:
        about = {
            "deviceId": self.device_id,
            "tenant": self.tenant,
            "name": self.name,
            "connectorUrl": self.connector_url,
        }
        return {
            "identity.json": json.dumps(about, indent=1).encode(),
            "device-token": self.device_token.encode(),
            "key.pem": self.key_pem,
            "certificate.pem": self.certificate_pem,
            "ca.pem": self.ca_pem,
        }

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> Identity:
        about = json.loads(files["identity.json"])
        return cls(
            device_id=about["deviceId"],
            tenant=about["tenant"],
            name=about["name"],
            connector_url=about["connectorUrl"],
            device_token=files["device-token"].decode().strip(),
            key_pem=files["key.pem"],
            certificate_pem=files["certificate.pem"],
            ca_pem=files["ca.pem"],
        )


IDENTITY_FILES = ("identity.json", "device-token", "key.pem", "certificate.pem", "ca.pem")
_SECRET_FILES = {"device-token", "key.pem", "pending-key.pem"}
# identity.json last: it marks an identity (in the folder, or staged) as complete
_WRITE_ORDER = (*IDENTITY_FILES[1:], IDENTITY_FILES[0])
_STAGING = "incoming"  # a subfolder where a new identity is written before it moves in
_APPLY = ("apply", "--server-side", "--field-manager=rciots-agent", "--force-conflicts", "-f", "-")


class IdentityStore(Protocol):
    def load(self) -> Identity | None: ...
    def save(self, identity: Identity) -> None: ...
    def load_pending_key(self) -> bytes | None: ...
    def save_pending_key(self, key_pem: bytes | None) -> None: ...


class DirectoryIdentity:
    """The identity as files in ``folder`` (0700)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _ensure(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def load(self) -> Identity | None:
        try:
            if (self.folder / _STAGING / "identity.json").exists():
                self._move_in()  # a save that a crash interrupted after it was complete
            if not (self.folder / "identity.json").exists():
                return None
            files = {name: (self.folder / name).read_bytes() for name in IDENTITY_FILES}
            return Identity.from_files(files)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"the identity in {self.folder} cannot be read: {exc}") from None

    def save(self, identity: Identity) -> None:
        try:
            self._save(identity)
        except OSError as exc:
            raise StateError(f"the identity in {self.folder} cannot be written: {exc}") from None

    def _save(self, identity: Identity) -> None:
        self._ensure()
        staging = self.folder / _STAGING
        shutil.rmtree(staging, ignore_errors=True)  # half of an earlier save: never complete
        staging.mkdir(mode=0o700)
        files = identity.to_files()
        for name in _WRITE_ORDER:
            mode = 0o600 if name in _SECRET_FILES else 0o644
            write_atomically(staging / name, files[name], mode)
        self._move_in()
        (self.folder / "pending-key.pem").unlink(missing_ok=True)

    def _move_in(self) -> None:
        """Move the complete identity staged in ``incoming/`` into place, identity.json last,
        each rename made durable before the next: until the last one, ``incoming/identity.json``
        is still there and the next ``load`` finishes the move."""
        staging = self.folder / _STAGING
        for name in _WRITE_ORDER:
            with contextlib.suppress(FileNotFoundError):  # moved before a crash
                os.replace(staging / name, self.folder / name)
                fsync_folder(self.folder)
        shutil.rmtree(staging, ignore_errors=True)

    def load_pending_key(self) -> bytes | None:
        path = self.folder / "pending-key.pem"
        return path.read_bytes() if path.exists() else None

    def save_pending_key(self, key_pem: bytes | None) -> None:
        path = self.folder / "pending-key.pem"
        if key_pem is None:
            path.unlink(missing_ok=True)
            return
        try:
            self._ensure()
            write_atomically(path, key_pem, 0o600)
        except OSError as exc:
            raise StateError(f"the identity in {self.folder} cannot be written: {exc}") from None


class SecretIdentity:
    """The identity in the Secret ``namespace/name``, read and written with ``kubectl``.

    Reads with ``kubectl get secret NAME -n NS -o json`` and writes with a server-side
    ``kubectl apply -f -`` (the whole Secret as JSON on stdin), so that no secret value is ever
    on a command line, nor in a last-applied annotation. A missing Secret is no identity yet.
    """

    def __init__(self, kubectl: str, namespace: str, name: str, timeout: float = 30.0) -> None:
        self.kubectl = kubectl
        self.namespace = namespace
        self.name = name
        self.timeout = timeout

    def _run(
        self, argv: list[str], stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                [self.kubectl, *argv],
                input=stdin,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StateError(f"cannot run {self.kubectl}: {exc}") from None

    def _read(self) -> dict[str, bytes] | None:
        done = self._run(["get", "secret", self.name, "-n", self.namespace, "-o", "json"])
        if done.returncode != 0:
            if b"NotFound" in done.stderr or b"not found" in done.stderr:
                return None
            raise StateError(
                f"cannot read Secret {self.namespace}/{self.name}: "
                f"{done.stderr.decode(errors='replace').strip()}"
            )
        try:
            data = json.loads(done.stdout).get("data") or {}
            return {key: base64.b64decode(value) for key, value in data.items()}
        except (ValueError, AttributeError) as exc:
            raise StateError(
                f"Secret {self.namespace}/{self.name} is not readable: {exc}"
            ) from None

    def _write(self, files: dict[str, bytes]) -> None:
        secret: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "rciots-agent"},
            },
            "type": "Opaque",
            "data": {key: base64.b64encode(value).decode() for key, value in files.items()},
        }
        # server-side: a client-side apply would copy the whole Secret, device token and key
        # included, into its last-applied-configuration annotation
        done = self._run([*_APPLY], json.dumps(secret).encode())
        if done.returncode != 0:
            hidden = applier_support.Redactor(_secret_texts(files))
            raise StateError(
                f"cannot write Secret {self.namespace}/{self.name}: "
                f"{hidden.clean(done.stderr.decode(errors='replace'))}"
            )

    def load(self) -> Identity | None:
        files = self._read()
        if files is None or "identity.json" not in files:
            return None
        try:
            return Identity.from_files(files)
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"Secret {self.namespace}/{self.name}: {exc}") from None

    def save(self, identity: Identity) -> None:
        self._write(identity.to_files())

    def load_pending_key(self) -> bytes | None:
        files = self._read()
        return None if files is None else files.get("pending-key.pem")

    def save_pending_key(self, key_pem: bytes | None) -> None:
        files = self._read() or {}
        if key_pem is None:
            files.pop("pending-key.pem", None)
        else:
            files["pending-key.pem"] = key_pem
        self._write(files)


class StateDir:
    """The last desired bundle, the last applied bundle with its result, and the inventory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _write(self, name: str, data: object) -> None:
        path = self.folder / name
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomically(path, json.dumps(data).encode(), 0o600)
        except OSError as exc:
            raise StateError(f"{path} cannot be written: {exc}") from None

    def _read(self, name: str, parse: Callable[[Any], _T]) -> _T | None:
        path = self.folder / name
        if not path.exists():
            return None
        try:
            return parse(json.loads(path.read_bytes()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"{path} cannot be read: {exc}") from None

    def save_desired(self, bundle: Bundle) -> None:
        self._write("desired.json", _bundle_json(bundle))

    def load_desired(self) -> Bundle | None:
        return self._read("desired.json", _bundle_from_json)

    def save_applied(self, bundle: Bundle, result: ApplyResult) -> None:
        data = _bundle_json(bundle)
        data["result"] = {
            "ok": result.ok,
            "error": result.error,
            "resources": [
                {"resource": r.resource.to_json(), "action": r.action, "message": r.message}
                for r in result.resources
            ],
        }
        self._write("applied.json", data)

    def load_applied(self) -> tuple[Bundle, ApplyResult] | None:
        return self._read("applied.json", _applied_from_json)

    def save_inventory(self, resources: tuple[ResourceId, ...]) -> None:
        self._write("inventory.json", [r.to_json() for r in resources])

    def load_inventory(self) -> tuple[ResourceId, ...]:
        loaded = self._read("inventory.json", lambda data: tuple(map(ResourceId.from_json, data)))
        return loaded or ()


def _bundle_json(bundle: Bundle) -> dict[str, Any]:
    return {
        "revision": bundle.revision,
        "digest": bundle.digest,
        "manifests": bundle.manifests,
        "resources": [r.to_json() for r in bundle.resources],
    }


def _applied_from_json(data: dict[str, Any]) -> tuple[Bundle, ApplyResult]:
    bundle = _bundle_from_json(data)
    result = data.get("result") or {}
    resources = tuple(
        ResourceResult(ResourceId.from_json(r["resource"]), r["action"], r.get("message", ""))
        for r in result.get("resources", [])
    )
    return bundle, ApplyResult(bundle.digest, resources, result.get("error"))


def _bundle_from_json(data: dict[str, Any]) -> Bundle:
    return Bundle(
        data["revision"],
        data["digest"],
        data["manifests"],
        tuple(ResourceId.from_json(r) for r in data["resources"]),
    )


def _secret_texts(files: dict[str, bytes]) -> list[str]:
    """What must not appear in a message about ``files``: each secret value as the Secret
    carries it (base64), as it is, and each of its lines."""
    texts = []
    for name in _SECRET_FILES & set(files):
        value = files[name]
        text = value.decode(errors="replace")
        texts += [base64.b64encode(value).decode(), text.strip()]
        texts += [line.strip() for line in text.splitlines() if not line.startswith("-----")]
    return texts
