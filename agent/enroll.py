"""Enrollment, the agent's side: make a key, send a CSR with the provisioning token, wait while
the enrollment is pending, keep the identity that comes back.

Position in the flow: ``rciots-agent`` start -> **enroll** (only when the identity store has no
identity) -> state (identity) -> connection loop. The private key is made here and never leaves
the device; while an enrollment is pending the same key (kept as ``pending-key.pem``) is sent
again with each poll, so that the approval, which is for that key, applies. HTTP with the
standard library (``urllib``): the agent needs no HTTP client package.
"""

from __future__ import annotations

import http.client
import json
import platform
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rciots.agent import __version__
from rciots.agent.state import Identity, IdentityStore

__all__ = [
    "EnrollError",
    "Pending",
    "certifies",
    "enroll",
    "make_csr",
    "new_key_pem",
    "trust_context",
]

PATH = "/v1/enroll"
_TIMEOUT = 30.0


class EnrollError(Exception):
    """Enrollment failed: refused, or no answer. ``status`` is the HTTP status (0 when no HTTP
    answer came); ``retryable`` says whether asking again later can help (no answer, 429, a
    server error) or not (a refused token, a conflict); ``retry_after`` is the wait the
    controller asked for, if any."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status in (0, 429, 500, 502, 503, 504)


@dataclass(frozen=True)
class Pending:
    """The enrollment waits for approval; ask again after ``retry_after`` seconds."""

    retry_after: float
    message: str
    key_fingerprint: str


def new_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_csr(key_pem: bytes, name: str) -> str:
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the device key must be an EC key")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def certifies(certificate_chain_pem: str, key_pem: bytes) -> bool:
    """Whether the first certificate of the chain is for the key of ``key_pem`` (the two go
    into TLS together, which refuses a pair that does not match)."""
    try:
        leaf = x509.load_pem_x509_certificates(certificate_chain_pem.encode())[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, IndexError):
        return False
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return leaf.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def trust_context(ca_file: Path | None = None, ca_pem: bytes | None = None) -> ssl.SSLContext:
    """Server certificate checks against ``ca_file``/``ca_pem`` only, or, when neither is
    given, the system's CAs. ValueError, naming the file, when ``ca_file`` cannot be read or
    holds no certificate."""
    if ca_file is None and not ca_pem:
        return ssl.create_default_context()
    # Not the system's CAs besides: any CA they trust (a public one, a TLS-inspecting proxy's)
    # could then answer for the controller, take the provisioning token and hand the device an
    # identity that connects it to someone else's connector.
    if ca_file is None:
        return ssl.create_default_context(cadata=ca_pem.decode() if ca_pem else None)
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:  # a configuration error: retrying cannot help
        why = exc.strerror if isinstance(exc, FileNotFoundError) else str(exc)
        raise ValueError(f"the CA file {ca_file} cannot be loaded: {why}") from None
    if ca_pem:
        context.load_verify_locations(cadata=ca_pem.decode())
    return context


Post = Callable[[str, bytes, ssl.SSLContext], tuple[int, Mapping[str, str], bytes]]


def _post(url: str, body: bytes, context: ssl.SSLContext) -> tuple[int, Mapping[str, str], bytes]:
    _check_url(url)
    request = urllib.request.Request(  # noqa: S310 -- https only, checked above
        url,
        data=body,
        headers={"Content-Type": "application/json", "User-Agent": f"rciots-agent/{__version__}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT, context=context) as answer:  # noqa: S310
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise EnrollError(0, f"cannot reach {url}: {reason}") from None
    except http.client.HTTPException as error:  # not HTTP, or an answer cut short
        raise EnrollError(
            0, f"no valid HTTP answer from {url}: {type(error).__name__}: {error}"
        ) from None


def _check_url(url: str) -> None:
    """ValueError, not a retryable EnrollError: the token must never travel in plain HTTP,
    and waiting will not change the URL."""
    if urllib.parse.urlsplit(url).scheme.lower() != "https":
        raise ValueError(f"the enrollment URL must be https://..., not {url!r}")


def enroll(
    store: IdentityStore,
    enroll_url: str,
    token: str,
    name: str,
    context: ssl.SSLContext,
    labels: Mapping[str, str] | None = None,
    post: Post = _post,
) -> Identity | Pending:
    """One enrollment request; the identity (also saved in ``store``) or Pending. EnrollError
    for a refusal, saying why (the controller's words); ValueError for a URL that is not
    https://."""
    _check_url(enroll_url)
    key_pem = store.load_pending_key()
    if key_pem is None:
        key_pem = new_key_pem()
        store.save_pending_key(key_pem)
    body = {
        "token": token,
        "name": name,
        "csr": make_csr(key_pem, name),
        "labels": dict(labels or {}),
        "system": {
            "agentVersion": __version__,
            "os": platform.system().lower(),
            "arch": platform.machine(),
        },
    }
    url = enroll_url.rstrip("/") + PATH
    status, headers, raw = post(url, json.dumps(body).encode(), context)
    answer = _json(raw)
    retry_after = _retry_after(headers)
    if status == 202:
        return Pending(
            retry_after or 30.0,
            str(answer.get("message", "waiting for approval")),
            str(answer.get("keyFingerprint", "")),
        )
    if status != 200:
        why = answer.get("error") or raw[:200].decode(errors="replace")
        raise EnrollError(status, f"enrollment refused ({status}): {why}", retry_after)
    try:
        identity = Identity(
            device_id=str(answer["deviceId"]),
            tenant=str(answer["tenant"]),
            name=str(answer["name"]),
            connector_url=str(answer["connectorUrl"]),
            device_token=str(answer["deviceToken"]),
            key_pem=key_pem,
            certificate_pem=str(answer["certificateChain"]).encode(),
            ca_pem=str(answer["caBundle"]).encode(),
        )
    except KeyError as missing:
        raise EnrollError(status, f"the controller's answer lacks {missing}") from None
    store.save(identity)
    return identity


def _json(raw: bytes) -> dict[str, object]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(1.0, float(value))
            except ValueError:
                return None
    return None
