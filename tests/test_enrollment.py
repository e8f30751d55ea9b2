"""Enrollment decisions and the Enroller that carries them out (real CA, real registry)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from rciots.controller import ca, enrollment, registry, tokens
from tests import enrollfiles
from tests.cryptohelp import csr_pem, ec_key
from tests.enrollfiles import AUTO, MANUAL, OTHER_TENANT, T

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
POLICY = enrollment.Policy(connector_url="wss://controller.example:8444/v1/connect")


@pytest.fixture(scope="module")
def authority() -> ca.Authority:
    return ca.create_authority(["localhost"], NOW)


@pytest.fixture
def store(tmp_path) -> registry.Registry:
    return registry.Registry(tmp_path / "registry.db")


@pytest.fixture
def enroller(authority, store) -> enrollment.Enroller:
    return enrollment.Enroller(authority, store, POLICY)


def request(token: str = AUTO, name: str = "gw-new", key=None, **extra) -> enrollment.Request:
    pem = csr_pem(key if key is not None else ec_key())
    return enrollment.Request(token, name, pem, "192.0.2.1", **extra)


def enroll(enroller: enrollment.Enroller, files=None, now=NOW, **kwargs) -> enrollment.Answer:
    model = enrollfiles.model(files if files is not None else enrollfiles.repo())
    return enroller.enroll(request(**kwargs), model, now)


def test_an_auto_token_gives_an_identity_at_once(enroller, store, authority):
    answer = enroll(enroller, labels={"site": "oslo", "extra": "x"})
    assert answer.status == 200
    body = answer.body
    assert set(body) == {
        "deviceId",
        "tenant",
        "name",
        "deviceToken",
        "certificateChain",
        "certificateNotAfter",
        "caBundle",
        "connectorUrl",
    }
    assert body["connectorUrl"] == POLICY.connector_url
    assert body["caBundle"] == ca.pem(authority.root).decode()
    device_token = str(body["deviceToken"])
    assert device_token.startswith(enrollment.DEVICE_TOKEN_PREFIX)
    entry = store.by_name("acme", "gw-new")
    assert entry is not None
    assert entry.device_id == body["deviceId"]
    # only the device token's hash is kept
    assert entry.device_token_hash == tokens.hash_token(device_token)
    assert device_token not in repr(entry)
    assert device_token not in repr(answer)  # an answer shown in a log or a traceback
    # the token's labels win over the device's own
    assert entry.labels == {"site": "lyon", "role": "gw", "extra": "x"}
    leaf = x509.load_pem_x509_certificates(str(body["certificateChain"]).encode())[0]
    assert ca.device_identity(leaf) == ("acme", entry.device_id)
    assert format(leaf.serial_number, "x") == entry.certificate_serial


@pytest.mark.parametrize("token", ["", "nonsense", AUTO + "x", "rciots-pt-" + "A" * 43, "ü" * 9])
def test_unknown_and_malformed_tokens_get_the_same_not_found(enroller, token):
    answer = enroll(enroller, token=token)
    assert (answer.status, answer.body) == (404, {"error": "token not found"})


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("  enabled: false\n", "this provisioning token is disabled"),
        ('  expires: "2027-01-01"\n', "this provisioning token has expired"),
    ],
)
def test_disabled_and_expired_tokens_are_refused(enroller, extra, reason):
    answer = enroll(enroller, enrollfiles.repo(rollout=extra))
    assert (answer.status, answer.body) == (403, {"error": reason})


def test_a_disabled_tenant_enrolls_nothing(enroller):
    files = enrollfiles.repo()
    files[f"{T}/tenant.yaml"] = files[f"{T}/tenant.yaml"].replace(
        b"spec: {}", b"spec:\n  enabled: false"
    )
    answer = enroll(enroller, files)
    assert (answer.status, answer.body) == (403, {"error": "tenant acme is disabled"})


def test_a_disabled_device_is_refused(enroller):
    files = enrollfiles.repo()
    files[f"{T}/devices/gw-off/device.yaml"] = enrollfiles.device_file(
        "gw-off", "  approved: true\n  enabled: false\n"
    )
    answer = enroll(enroller, files, name="gw-off")
    assert (answer.status, answer.body) == (403, {"error": "device gw-off is disabled"})


def test_an_invalid_csr_or_name_is_unprocessable(enroller):
    model = enrollfiles.model(enrollfiles.repo())
    bad = enrollment.Request(AUTO, "gw-x", b"-----BEGIN nonsense", "192.0.2.1")
    assert enroller.enroll(bad, model, NOW).status == 422
    assert enroll(enroller, name="Not_A_Name").status == 422


def test_a_csr_claiming_another_identity_gets_the_servers(enroller, store):
    pem = csr_pem(ec_key(), "victim-id", ("urn:rciots:device:globex:victim-id",))
    model = enrollfiles.model(enrollfiles.repo())
    answer = enroller.enroll(enrollment.Request(AUTO, "gw-new", pem, "192.0.2.1"), model, NOW)
    leaf = x509.load_pem_x509_certificates(str(answer.body["certificateChain"]).encode())[0]
    entry = store.by_name("acme", "gw-new")
    assert entry is not None
    assert ca.device_identity(leaf) == ("acme", entry.device_id)
    assert entry.device_id != "victim-id"


def test_a_name_enrolled_with_another_key_is_no_takeover(enroller):
    assert enroll(enroller, name="gw-a").status == 200
    answer = enroll(enroller, name="gw-a")  # a new key
    assert answer.status == 409
    assert "already enrolled with another key" in str(answer.body["error"])


def test_a_key_enrolled_for_another_device_is_a_clone(enroller):
    key = ec_key()
    assert enroll(enroller, name="gw-a", key=key).status == 200
    answer = enroll(enroller, name="gw-b", key=key)
    assert answer.status == 409
    assert "cloned" in str(answer.body["error"])
    # and in another tenant, with that tenant's token, too
    assert enroll(enroller, token=OTHER_TENANT, name="gw-b", key=key).status == 409


def test_the_same_key_and_name_again_is_the_same_device_with_a_new_token(enroller, store):
    key = ec_key()
    first = enroll(enroller, key=key)
    second = enroll(enroller, key=key, now=NOW + timedelta(minutes=1))
    assert second.status == 200
    assert second.outcome == "re-enrolled"
    assert second.body["deviceId"] == first.body["deviceId"]
    assert second.body["deviceToken"] != first.body["deviceToken"]
    entry = store.by_name("acme", "gw-new")
    assert entry is not None
    assert entry.enrolled_at == NOW
    assert entry.device_token_hash == tokens.hash_token(str(second.body["deviceToken"]))
    assert entry.previous_certificate_serial is not None


def test_a_manual_token_waits_for_approval_and_polls_are_idempotent(enroller, store):
    key = ec_key()
    first = enroll(enroller, token=MANUAL, key=key, labels={"site": "oslo"})
    assert (first.status, first.retry_after, first.body["status"]) == (202, 30, "pending")
    assert "tenants/acme/devices/gw-new/device.yaml" in str(first.body["message"])
    waiting = store.pending("acme", "gw-new")
    assert waiting is not None
    assert waiting.labels == {"site": "oslo"}
    later = NOW + timedelta(minutes=5)
    second = enroll(enroller, token=MANUAL, key=key, now=later)
    assert second.status == 202
    again = store.pending("acme", "gw-new")
    assert again is not None
    assert (again.requested_at, again.last_request_at) == (NOW, later)
    assert store.registrations() == []


def test_an_approving_device_file_turns_the_next_poll_into_an_identity(enroller, store):
    key = ec_key()
    assert enroll(enroller, token=MANUAL, key=key).status == 202
    files = enrollfiles.repo()
    files[f"{T}/devices/gw-new/device.yaml"] = enrollfiles.device_file("gw-new")
    answer = enroll(enroller, files, token=MANUAL, key=key)
    assert answer.status == 200
    assert store.pending("acme", "gw-new") is None
    entry = store.by_name("acme", "gw-new")
    assert entry is not None
    assert entry.approval == "manual"


def test_an_approval_is_for_the_key_that_asked(enroller):
    assert enroll(enroller, token=MANUAL).status == 202
    files = enrollfiles.repo()
    files[f"{T}/devices/gw-new/device.yaml"] = enrollfiles.device_file("gw-new")
    answer = enroll(enroller, files, token=MANUAL)  # someone else, with the name and token
    assert answer.status == 409
    assert "waiting with another key" in str(answer.body["error"])


def test_an_unapproved_device_file_keeps_it_pending(enroller):
    files = enrollfiles.repo()
    files[f"{T}/devices/gw-new/device.yaml"] = enrollfiles.device_file(
        "gw-new", "  approved: false\n"
    )
    assert enroll(enroller, files, token=MANUAL).status == 202


def test_pending_requests_expire_and_are_capped_per_token(authority, store):
    policy = enrollment.Policy("wss://x", pending_ttl=timedelta(hours=1), max_pending_per_token=2)
    enroller = enrollment.Enroller(authority, store, policy)
    assert enroll(enroller, token=MANUAL, name="a").status == 202
    assert enroll(enroller, token=MANUAL, name="b").status == 202
    capped = enroll(enroller, token=MANUAL, name="c")
    assert (capped.status, capped.retry_after) == (429, 3600)
    assert enroller.expire_pending(NOW + timedelta(minutes=59)) == []
    expired = enroller.expire_pending(NOW + timedelta(hours=1))
    assert sorted(p.name for p in expired) == ["a", "b"]
    assert enroll(enroller, token=MANUAL, name="c", now=NOW + timedelta(hours=1)).status == 202


def test_an_expired_pending_request_is_replaced_by_a_new_key(authority, store):
    policy = enrollment.Policy("wss://x", pending_ttl=timedelta(hours=1))
    enroller = enrollment.Enroller(authority, store, policy)
    assert enroll(enroller, token=MANUAL).status == 202
    assert enroll(enroller, token=MANUAL).status == 409
    assert enroll(enroller, token=MANUAL, now=NOW + timedelta(hours=2)).status == 202


def test_device_limits_of_token_and_tenant(enroller):
    files = enrollfiles.repo(rollout="  maxDevices: 2\n")
    assert enroll(enroller, files, name="a").status == 200
    assert enroll(enroller, files, name="b").status == 200
    full = enroll(enroller, files, name="c")
    assert (full.status, full.body) == (
        403,
        {"error": "this provisioning token's device limit (2) is reached"},
    )
    files = enrollfiles.repo()
    files[f"{T}/tenant.yaml"] = files[f"{T}/tenant.yaml"].replace(
        b"spec: {}", b"spec:\n  limits:\n    maxDevices: 2"
    )
    answer = enroll(enroller, files, name="c")
    assert (answer.status, answer.body) == (
        403,
        {"error": "tenant acme's device limit (2) is reached"},
    )


def test_concurrent_enrollments_never_exceed_max_devices(enroller, store):
    model = enrollfiles.model(enrollfiles.repo(rollout="  maxDevices: 7\n"))
    requests = [request(name=f"gw-{index}") for index in range(40)]
    statuses: list[int] = []

    def run(item: enrollment.Request) -> None:
        statuses.append(enroller.enroll(item, model, NOW).status)

    threads = [threading.Thread(target=run, args=(item,)) for item in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses).count(200) == 7
    assert statuses.count(403) == 33
    assert store.count("acme", "rollout") == 7


def test_removing_a_token_stops_enrollments_with_it(enroller):
    files = enrollfiles.repo()
    del files[f"{T}/tokens/rollout.yaml"]
    assert enroll(enroller, files).status == 404


# -- renewal ----------------------------------------------------------------------------------


def test_a_renewal_signs_the_new_key_and_keeps_the_old_certificate_as_previous(enroller, store):
    first = enroll(enroller, name="gw-a")
    before = store.by_name("acme", "gw-a")
    assert before is not None
    key = ec_key()
    later = NOW + timedelta(days=60)
    issued = enroller.renew(before.device_id, csr_pem(key), later)
    after = store.get(before.device_id)
    assert after is not None
    assert after.key_fingerprint == ca.key_fingerprint(key.public_key())
    assert after.certificate_serial == issued.serial != before.certificate_serial
    assert after.previous_certificate_serial == before.certificate_serial
    assert after.certificate_not_after == issued.not_after == later + POLICY.device_lifetime
    assert after.device_token_hash == before.device_token_hash  # the same device token
    leaf = x509.load_pem_x509_certificates(issued.chain_pem)[0]
    assert ca.device_identity(leaf) == ("acme", first.body["deviceId"])


def test_a_renewal_with_another_devices_key_or_for_a_removed_device_is_refused(enroller, store):
    taken = ec_key()
    assert enroll(enroller, name="gw-a").status == 200
    assert enroll(enroller, name="gw-b", key=taken).status == 200
    device = store.by_name("acme", "gw-a")
    assert device is not None
    with pytest.raises(ValueError, match="enrolled for another device"):
        enroller.renew(device.device_id, csr_pem(taken), NOW)
    store.remove(device.device_id)
    with pytest.raises(ValueError, match="no longer registered"):
        enroller.renew(device.device_id, csr_pem(ec_key()), NOW)
    with pytest.raises(ca.CsrRejected):
        enroller.renew(device.device_id, b"not a csr", NOW)
