"""The CA on disk: created in the controller's state directory on first start, or loaded.

Position in the flow: ``rciots controller`` start-up -> **castore** -> ``ca.Authority`` for
enrollment (signing) and for the TLS endpoints (serving, verifying clients). The files, in one
folder (``<state dir>/ca`` unless configured)::

    root.pem       root CA certificate: what devices and clients trust
    root.key       its private key (optional when configured: then the server certificate
                   cannot be re-issued here)
    device-ca.pem  the CA that signs device certificates
    device-ca.key
    server.pem     the controller's TLS certificate (enrollment and connector endpoints)
    server.key

Private keys are written readable by the owner only (0600, in a 0700 folder) and refused when
anyone else can read them. The server certificate is issued again, from the root, when the
configured server names change or when it has less than 30 days left.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from rciots.agent.atomicfile import write_atomically
from rciots.controller import ca

__all__ = ["FILES", "CaStoreError", "load_or_create"]

log = logging.getLogger(__name__)

FILES = ("root.pem", "root.key", "device-ca.pem", "device-ca.key", "server.pem", "server.key")
_RENEW_SERVER_WITHIN = timedelta(days=30)


class CaStoreError(Exception):
    """The CA folder cannot be used; the message names the file and what to do."""


def load_or_create(
    folder: Path, server_names: Sequence[str], now: datetime, key_type: ca.KeyType = "ec-p256"
) -> ca.Authority:
    """The authority in ``folder``; a new one when the folder holds none of its files."""
    present = [name for name in FILES if (folder / name).exists()]
    if not present:
        authority = ca.create_authority(server_names, now, key_type)
        _save(folder, authority)
        log.info("created a new CA in %s (server names: %s)", folder, ", ".join(server_names))
        return authority
    authority = _load(folder)
    names = ca.server_names_of(authority.server)
    expiring = authority.server.not_valid_after_utc - now < _RENEW_SERVER_WITHIN
    if sorted(names) != sorted(server_names) or expiring:
        if authority.root_key is None:
            why = "expires soon" if expiring else f"is for {', '.join(names)}"
            log.warning(
                "the server certificate in %s %s and cannot be issued again without "
                "root.key; using it as it is",
                folder,
                why,
            )
            return authority
        key = ca.new_private_key(key_type)
        server = ca.server_certificate(authority.root, authority.root_key, key, server_names, now)
        _write_key(folder / "server.key", key)
        write_atomically(folder / "server.pem", ca.pem(server), 0o644)
        log.info("issued a new server certificate for %s", ", ".join(server_names))
        authority = ca.Authority(
            authority.root,
            authority.root_key,
            authority.device_ca,
            authority.device_ca_key,
            server,
            key,
        )
    return authority


def _save(folder: Path, authority: ca.Authority) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    assert authority.root_key is not None  # a new authority has all its keys
    for name, certificate, key in (
        ("root", authority.root, authority.root_key),
        ("device-ca", authority.device_ca, authority.device_ca_key),
        ("server", authority.server, authority.server_key),
    ):
        _write_key(folder / f"{name}.key", key)
        write_atomically(folder / f"{name}.pem", ca.pem(certificate), 0o644)


def _write_key(path: Path, key: ca.PrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomically(path, data, 0o600)


def _load(folder: Path) -> ca.Authority:
    missing = [name for name in FILES if name != "root.key" and not (folder / name).exists()]
    if missing:
        raise CaStoreError(
            f"{folder} holds part of a CA but not {', '.join(missing)}: give all of "
            f"{', '.join(FILES)} (root.key may be left out), or an empty folder to create a CA"
        )
    root = _certificate(folder / "root.pem")
    device_ca = _certificate(folder / "device-ca.pem")
    server = _certificate(folder / "server.pem")
    root_key = _key(folder / "root.key") if (folder / "root.key").exists() else None
    device_ca_key = _key(folder / "device-ca.key")
    server_key = _key(folder / "server.key")
    for path, certificate, key in (
        (folder / "root.key", root, root_key),
        (folder / "device-ca.key", device_ca, device_ca_key),
        (folder / "server.key", server, server_key),
    ):
        if key is not None and _public(certificate) != _public(key):
            raise CaStoreError(f"{path} is not the key of {path.with_suffix('.pem').name}")
    if not _issued_by(device_ca, root):
        raise CaStoreError(f"{folder / 'device-ca.pem'} is not signed by root.pem")
    if not (_issued_by(server, root) or _issued_by(server, device_ca)):
        raise CaStoreError(
            f"{folder / 'server.pem'} is signed neither by root.pem nor device-ca.pem"
        )
    return ca.Authority(root, root_key, device_ca, device_ca_key, server, server_key)


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise CaStoreError(f"{path} is not a PEM certificate") from None
    except OSError as exc:
        raise CaStoreError(f"cannot read {path}: {exc.strerror}") from None


def _key(path: Path) -> ca.PrivateKey:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CaStoreError(
                f"{path} can be read by others (mode {stat.S_IMODE(mode):o}): "
                f"run `chmod 600 {path}`"
            )
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError:
        raise CaStoreError(f"{path} is not an unencrypted PEM private key") from None
    except OSError as exc:
        raise CaStoreError(f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CaStoreError(f"{path}: only EC and RSA keys are supported")
    return key


def _public(item: x509.Certificate | ca.PrivateKey) -> bytes:
    key = item.public_key()
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
