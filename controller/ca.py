"""The controller's private certificate authority: what it signs and how it checks a CSR.

Position in the flow: enrollment (``enrollment``) asks **ca** for a device certificate once it
has decided to admit a device; the connector uses ``device_identity`` to read who a client
certificate names; ``castore`` keeps the keys and certificates on disk. Pure apart from key
generation and serial numbers, which draw from the system's random source; the clock is a
parameter.

Three certificates make the authority:

    root CA (10 years) --signs--> device CA (5 years) --signs--> device certificates
                       --signs--> server certificate (1 year; the controller's endpoints)

Devices trust the root (for the enrollment and connector endpoints); the connector trusts
client certificates that chain to the root through the device CA and carry the clientAuth
usage. A device certificate names what the server chose from its records (tenant and device
id), never what the CSR asked for: only the CSR's public key is used, after its signature
proves that the requester holds the matching private key.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_DEVICE_LIFETIME",
    "DEVICE_URI_PREFIX",
    "Authority",
    "CsrRejected",
    "Issued",
    "KeyType",
    "check_csr",
    "create_authority",
    "device_identity",
    "fingerprint",
    "issue_device_certificate",
    "key_fingerprint",
    "new_private_key",
    "pem",
    "server_certificate",
    "server_names_of",
]

KeyType = Literal["ec-p256", "rsa-3072"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

DEFAULT_DEVICE_LIFETIME = timedelta(days=90)
ROOT_LIFETIME = timedelta(days=3650)
DEVICE_CA_LIFETIME = timedelta(days=1825)
SERVER_LIFETIME = timedelta(days=365)
# certificates start a little in the past: a device whose clock runs slow still accepts them
BACKDATE = timedelta(minutes=5)
MIN_RSA_BITS = 2048
_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)

# the identity a device certificate carries, as a URI subject alternative name
DEVICE_URI_PREFIX = "urn:rciots:device:"


class CsrRejected(ValueError):
    """A CSR the authority will not sign; the message says why, for the requester."""


@dataclass(frozen=True)
class Authority:
    """The keys and certificates the controller signs with and serves with."""

    root: x509.Certificate
    root_key: PrivateKey | None  # None when configured without it: the server cert is then given
    device_ca: x509.Certificate
    device_ca_key: PrivateKey
    server: x509.Certificate
    server_key: PrivateKey

    def ca_bundle_pem(self) -> bytes:
        """What a device trusts: the root."""
        return pem(self.root)


@dataclass(frozen=True)
class Issued:
    """A device certificate as enrollment hands it out and the registry records it."""

    chain_pem: bytes  # the device certificate, then the device CA
    serial: str  # hexadecimal
    fingerprint: str  # "sha256:<hex>" of the certificate's DER
    not_after: datetime


def new_private_key(key_type: KeyType = "ec-p256") -> PrivateKey:
    if key_type == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ec.generate_private_key(ec.SECP256R1())


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def fingerprint(certificate: x509.Certificate) -> str:
    return "sha256:" + certificate.fingerprint(hashes.SHA256()).hex()


def key_fingerprint(public_key: object) -> str:
    """``sha256:<hex>`` of a public key's SubjectPublicKeyInfo: the same key always gives the
    same fingerprint, whatever CSR or certificate carries it."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TypeError(f"not a supported public key: {type(public_key).__name__}")
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _name(common_name: str, organization: str = "RCIoTs") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    now: datetime,
    lifetime: timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _ca_certificate(
    name: str,
    key: PrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: PrivateKey,
    now: datetime,
    lifetime: timedelta,
    path_length: int,
) -> x509.Certificate:
    builder = _builder(
        _name(name), issuer.subject if issuer else _name(name), key.public_key(), now, lifetime
    )
    builder = builder.add_extension(
        x509.BasicConstraints(ca=True, path_length=path_length), critical=True
    ).add_extension(_key_usage(ca=True), critical=True)
    if issuer is not None:
        builder = _with_authority_key_id(builder, issuer)
    return builder.sign(issuer_key, hashes.SHA256())


def _with_authority_key_id(
    builder: x509.CertificateBuilder, issuer: x509.Certificate
) -> x509.CertificateBuilder:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
    )


def server_certificate(
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    key: PrivateKey,
    names: Sequence[str],
    now: datetime,
    lifetime: timedelta = SERVER_LIFETIME,
) -> x509.Certificate:
    """A serverAuth certificate for the controller's endpoints; ``names`` are DNS names or
    IP addresses (subject alternative names, which is what TLS clients check)."""
    if not names:
        raise ValueError("a server certificate needs at least one DNS name or IP address")
    alternative: list[x509.GeneralName] = []
    for name in names:
        try:
            alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative.append(x509.DNSName(name))
    builder = _builder(_name(names[0]), issuer.subject, key.public_key(), now, lifetime)
    builder = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
    )
    return _with_authority_key_id(builder, issuer).sign(issuer_key, hashes.SHA256())


def server_names_of(certificate: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a server certificate is for."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names: list[str] = list(san.get_values_for_type(x509.DNSName))
    names += [str(address) for address in san.get_values_for_type(x509.IPAddress)]
    return names


def create_authority(
    server_names: Sequence[str], now: datetime, key_type: KeyType = "ec-p256"
) -> Authority:
    """A new root CA, device CA and server certificate."""
    root_key = new_private_key(key_type)
    root = _ca_certificate("RCIoTs root CA", root_key, None, root_key, now, ROOT_LIFETIME, 1)
    device_ca_key = new_private_key(key_type)
    device_ca = _ca_certificate(
        "RCIoTs device CA", device_ca_key, root, root_key, now, DEVICE_CA_LIFETIME, 0
    )
    server_key = new_private_key(key_type)
    server = server_certificate(root, root_key, server_key, server_names, now)
    return Authority(root, root_key, device_ca, device_ca_key, server, server_key)


def check_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """The CSR in ``csr_pem``, if it is one the authority signs; CsrRejected says why not.

    It must be one PEM certificate request whose signature holds (proof that the requester has
    the private key) and whose key is strong: EC P-256 or P-384, or RSA of at least 2048 bits.
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise CsrRejected(
            "the csr is not a PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----)"
        ) from None
    if not csr.is_signature_valid:
        raise CsrRejected("the csr's signature does not match its public key")
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CsrRejected(
                f"the csr's RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are needed"
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _ALLOWED_CURVES):
            raise CsrRejected(f"the csr's curve {key.curve.name} is not accepted; use P-256")
    elif isinstance(key, ed25519.Ed25519PublicKey):
        raise CsrRejected("Ed25519 keys are not accepted; use EC P-256")
    else:
        raise CsrRejected(f"the csr's key type {type(key).__name__} is not accepted; use P-256")
    return csr


def issue_device_certificate(
    authority: Authority,
    csr: x509.CertificateSigningRequest,
    tenant: str,
    device_id: str,
    now: datetime,
    lifetime: timedelta = DEFAULT_DEVICE_LIFETIME,
) -> Issued:
    """A clientAuth certificate for the CSR's key naming ``tenant`` and ``device_id``: subject
    O=<tenant>, CN=<device id>, and the URI ``urn:rciots:device:<tenant>:<device id>``. Nothing
    of the CSR but its (checked) public key goes into it."""
    public_key = csr.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)  # check_csr
    builder = _builder(
        _name(device_id, organization=tenant),
        authority.device_ca.subject,
        public_key,
        now,
        lifetime,
    )
    builder = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"{DEVICE_URI_PREFIX}{tenant}:{device_id}")]
            ),
            critical=False,
        )
    )
    certificate = _with_authority_key_id(builder, authority.device_ca).sign(
        authority.device_ca_key, hashes.SHA256()
    )
    return Issued(
        chain_pem=pem(certificate) + pem(authority.device_ca),
        serial=format(certificate.serial_number, "x"),
        fingerprint=fingerprint(certificate),
        not_after=certificate.not_valid_after_utc,
    )


def device_identity(certificate: x509.Certificate) -> tuple[str, str] | None:
    """(tenant, device id) that a device certificate of ours names, or None when it names
    none (the connector then refuses the connection)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
    ours = [u[len(DEVICE_URI_PREFIX) :] for u in uris if u.startswith(DEVICE_URI_PREFIX)]
    if len(ours) != 1:
        return None
    tenant, sep, device_id = ours[0].partition(":")
    if not sep or not tenant or not device_id:
        return None
    return tenant, device_id
