"""The private CA: what it signs, what it refuses, and who a certificate names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from rciots.controller import ca
from tests.cryptohelp import csr_pem, ec_key

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def authority() -> ca.Authority:
    return ca.create_authority(["controller.example", "127.0.0.1"], NOW)


def issue(authority: ca.Authority, pem: bytes, **kwargs: object) -> x509.Certificate:
    issued = ca.issue_device_certificate(
        authority,
        ca.check_csr(pem),
        "acme",
        "id-1",
        NOW,
        **kwargs,  # type: ignore[arg-type]
    )
    return x509.load_pem_x509_certificates(issued.chain_pem)[0]


def test_the_authority_is_a_root_a_device_ca_and_a_server_certificate(authority):
    root, device_ca, server = authority.root, authority.device_ca, authority.server
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert device_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    device_ca.verify_directly_issued_by(root)
    server.verify_directly_issued_by(root)
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.public_key().curve.name == "secp256r1"
    assert ca.server_names_of(server) == ["controller.example", "127.0.0.1"]
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_a_device_certificate_is_client_auth_only_and_not_a_ca(authority):
    certificate = issue(authority, csr_pem(ec_key()))
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    key_usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert key_usage.digital_signature
    assert not key_usage.key_cert_sign
    certificate.verify_directly_issued_by(authority.device_ca)


def test_a_device_certificate_chains_to_the_root_as_a_client(authority):
    issued = ca.issue_device_certificate(
        authority, ca.check_csr(csr_pem(ec_key())), "acme", "id-1", NOW
    )
    leaf, intermediate = x509.load_pem_x509_certificates(issued.chain_pem)
    verifier = PolicyBuilder().store(Store([authority.root])).time(NOW).build_client_verifier()
    verified = verifier.verify(leaf, [intermediate])
    assert verified.chain[-1] == authority.root


def test_the_identity_is_the_servers_choice_never_the_csrs(authority):
    forged = csr_pem(ec_key(), "other-device", ("urn:rciots:device:globex:id-999",))
    certificate = issue(authority, forged)
    assert ca.device_identity(certificate) == ("acme", "id-1")
    cn = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    org = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    assert (org, cn) == ("acme", "id-1")
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:rciots:device:acme:id-1"
    ]


def test_lifetime_is_ninety_days_by_default_and_configurable(authority):
    default = issue(authority, csr_pem(ec_key()))
    assert default.not_valid_after_utc == NOW + timedelta(days=90)
    short = issue(authority, csr_pem(ec_key()), lifetime=timedelta(days=7))
    assert short.not_valid_after_utc == NOW + timedelta(days=7)
    assert short.not_valid_before_utc <= NOW


def test_a_csr_whose_signature_does_not_hold_is_refused():
    csr = x509.load_pem_x509_csr(csr_pem(ec_key(), "device"))
    der = csr.public_bytes(serialization.Encoding.DER)
    # the same request with one letter of its subject changed: well formed, badly signed
    tampered = x509.load_der_x509_csr(der.replace(b"device", b"devicf"))
    with pytest.raises(ca.CsrRejected, match="signature does not match"):
        ca.check_csr(tampered.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "1024 bits"),  # noqa: S505
        (ec.generate_private_key(ec.SECP256K1()), "curve secp256k1"),
        (ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
    ],
)
def test_weak_or_unsupported_keys_are_refused(key, message):
    with pytest.raises(ca.CsrRejected, match=message):
        ca.check_csr(csr_pem(key))


def test_rsa_2048_is_accepted():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert isinstance(ca.check_csr(csr_pem(key)).public_key(), rsa.RSAPublicKey)


@pytest.mark.parametrize("text", [b"", b"hello", b"-----BEGIN CERTIFICATE REQUEST-----\nxx\n"])
def test_what_is_not_a_csr_is_refused(text):
    with pytest.raises(ca.CsrRejected, match="not a PEM certificate request"):
        ca.check_csr(text)


def test_a_key_has_one_fingerprint_whatever_carries_it(authority):
    key = ec_key()
    from_csr = ca.key_fingerprint(ca.check_csr(csr_pem(key, "a")).public_key())
    from_other_csr = ca.key_fingerprint(ca.check_csr(csr_pem(key, "b")).public_key())
    from_certificate = ca.key_fingerprint(issue(authority, csr_pem(key)).public_key())
    assert from_csr == from_other_csr == from_certificate
    assert from_csr != ca.key_fingerprint(ec_key().public_key())
    assert from_csr.startswith("sha256:")
    assert len(from_csr) == 7 + 64


def test_a_certificate_that_names_no_device_has_no_identity(authority):
    assert ca.device_identity(authority.server) is None
    assert ca.device_identity(authority.root) is None
