"""The agent's enrollment (``rciots.agent.enroll``) against the controller's real HTTPS endpoint,
on a Git repo made from fleet-repo-example: an identity at once (automatic token), waiting with
the same key while pending (manual token) until a commit approves it, refusals that waiting
will not mend, and a controller that cannot be reached, which it will."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rciots.agent import __version__, enroll
from rciots.agent.state import DirectoryIdentity, Identity
from rciots.controller import ratelimit, service
from tests import aio, gitserver

EXAMPLE = Path(__file__).resolve().parent.parent / "fleet-repo-example"
WAREHOUSE = "rciots-pt-OaGmPNNo7h0cVwjIvurOdVdIHBCZRVnJKMlguG3KB3U"  # auto, acme-sensors
PLANT = "rciots-pt-3dzFbyrIHcOEA9kNYdNbW047Cv6LcrudEarkV1iTZlc"  # manual, acme-sensors
STORES = "rciots-pt-KZtfUseT6hb7bxliMPseKzlCnhI3GbPOPCtOjPB7vIA"  # auto, northwind-retail
OPEN = ratelimit.ClientLimits(rate=1000, burst=1000, failure_rate=1000, failure_burst=1000)
DEVICE_DIR = "tenants/acme-sensors/devices"


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> gitserver.Remote:
    """One fleet repo for the module: tests use device names of their own."""
    return gitserver.make_remote(tmp_path_factory.mktemp("fleet") / "fleet.git", source=EXAMPLE)


class Endpoint:
    """The running controller's enrollment URL and a TLS context that trusts its CA."""

    def __init__(self, running: service.Controller) -> None:
        self.controller = running
        self.url = f"https://127.0.0.1:{running.enrollment_port}"
        self.context = enroll.trust_context(running.settings.state_dir / "ca" / "root.pem")

    async def ask(
        self,
        store: DirectoryIdentity,
        token: str,
        name: str,
        labels: dict[str, str] | None = None,
    ) -> Identity | enroll.Pending:
        return await asyncio.to_thread(
            enroll.enroll, store, self.url, token, name, self.context, labels
        )

    async def refusal(self, store: DirectoryIdentity, token: str, name: str) -> enroll.EnrollError:
        with pytest.raises(enroll.EnrollError) as raised:
            await self.ask(store, token, name)
        return raised.value


def with_controller(
    remote: gitserver.Remote,
    state: Path,
    body: Callable[[Endpoint], Awaitable[None]],
    limits: ratelimit.ClientLimits = OPEN,
) -> None:
    settings = service.Settings(
        source=remote.bare.as_uri(),
        state_dir=state,
        poll_interval=0.2,
        status_window=0.1,
        enrollment=service.EnrollmentSettings(listen=("127.0.0.1", 0), limits=limits),
    )

    async def main() -> None:
        running = service.Controller(settings)
        await running.start()
        try:
            await body(Endpoint(running))
        finally:
            await running.stop()

    aio.run(main(), timeout=30)


def key_fingerprint(key_pem: bytes) -> str:
    """What the controller calls the key: sha256 of its SubjectPublicKeyInfo."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def certified_key(identity: Identity) -> bytes:
    certificate = x509.load_pem_x509_certificates(identity.certificate_pem)[0]
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_of(key_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- enrolled ---------------------------------------------------------------------------------


def test_an_automatic_token_gives_an_identity_that_is_saved(
    remote: gitserver.Remote, tmp_path: Path
) -> None:
    store = DirectoryIdentity(tmp_path / "identity")

    async def body(endpoint: Endpoint) -> None:
        answer = await endpoint.ask(store, WAREHOUSE, "agent-enroll-auto")
        assert isinstance(answer, Identity)
        assert store.load() == answer
        assert store.load_pending_key() is None
        assert (answer.tenant, answer.name) == ("acme-sensors", "agent-enroll-auto")
        assert endpoint.controller.registry is not None
        registered = endpoint.controller.registry.get(answer.device_id)
        assert registered is not None
        assert registered.key == ("acme-sensors", "agent-enroll-auto")
        assert answer.connector_url.startswith("wss://")
        assert answer.device_token.startswith("rciots-dt-")
        # the certificate is for the key the agent made, which never left it
        assert certified_key(answer) == public_key_of(answer.key_pem)
        root = (endpoint.controller.settings.state_dir / "ca" / "root.pem").read_bytes()
        assert answer.ca_pem == root

    with_controller(remote, tmp_path / "state", body)


def test_enrolling_twice_with_the_same_key_keeps_the_device(
    remote: gitserver.Remote, tmp_path: Path
) -> None:
    """An agent that lost the answer asks again with its pending key: same device id."""
    store = DirectoryIdentity(tmp_path / "identity")

    async def body(endpoint: Endpoint) -> None:
        first = await endpoint.ask(store, WAREHOUSE, "agent-enroll-again")
        assert isinstance(first, Identity)
        store.save_pending_key(first.key_pem)  # as if the identity had not been saved
        again = await endpoint.ask(store, WAREHOUSE, "agent-enroll-again")
        assert isinstance(again, Identity)
        assert again.device_id == first.device_id
        assert again.device_token != first.device_token

    with_controller(remote, tmp_path / "state", body)


# -- pending ----------------------------------------------------------------------------------


def test_a_manual_token_waits_with_the_same_key_until_a_commit_approves_it(
    remote: gitserver.Remote, tmp_path: Path
) -> None:
    store = DirectoryIdentity(tmp_path / "identity")
    name = "agent-enroll-pending"

    async def body(endpoint: Endpoint) -> None:
        first = await endpoint.ask(store, PLANT, name, {"site": "lyon"})
        assert isinstance(first, enroll.Pending)
        key = store.load_pending_key()
        assert key is not None
        assert first == enroll.Pending(
            retry_after=30.0,
            message=(
                "waiting for approval: a pull request must add "
                f"tenants/acme-sensors/devices/{name}/device.yaml with spec.approved: true"
            ),
            key_fingerprint=key_fingerprint(key),
        )
        assert store.load() is None
        # what the device sent is there for whoever approves it
        assert endpoint.controller.registry is not None
        waiting = endpoint.controller.registry.pending("acme-sensors", name)
        assert waiting is not None
        assert waiting.key_fingerprint == first.key_fingerprint
        assert dict(waiting.labels) == {"site": "lyon"}
        assert waiting.system["agentVersion"] == __version__
        second = await endpoint.ask(store, PLANT, name, {"site": "lyon"})
        assert second == first  # the same key asks again
        assert store.load_pending_key() == key

        remote.commit(
            {
                f"{DEVICE_DIR}/{name}/device.yaml": (
                    f"apiVersion: rciots.io/v1\nkind: Device\nmetadata:\n  name: {name}\n"
                    "spec:\n  approved: true\n  template: mqtt-edge\n"
                )
            },
            f"approve {name}",
        )
        answer: Identity | enroll.Pending = second
        for _ in range(100):  # the controller polls every 0.2 s
            answer = await endpoint.ask(store, PLANT, name)
            if isinstance(answer, Identity):
                break
            await asyncio.sleep(0.1)
        assert isinstance(answer, Identity)
        assert answer.key_pem == key
        assert certified_key(answer) == public_key_of(key)
        assert store.load() == answer
        assert store.load_pending_key() is None

    with_controller(remote, tmp_path / "state", body)


# -- refused ----------------------------------------------------------------------------------


def test_an_unknown_token_is_refused_for_good(remote: gitserver.Remote, tmp_path: Path) -> None:
    store = DirectoryIdentity(tmp_path / "identity")

    async def body(endpoint: Endpoint) -> None:
        error = await endpoint.refusal(store, "rciots-pt-no-such-token", "agent-enroll-404")
        assert error.status == 404
        assert not error.retryable
        assert str(error) == "enrollment refused (404): token not found"
        assert "rciots-pt-no-such-token" not in str(error)
        assert store.load() is None

    with_controller(remote, tmp_path / "state", body)


def test_a_disabled_device_is_refused_for_good(remote: gitserver.Remote, tmp_path: Path) -> None:
    """northwind-retail/store-0388 has enabled: false in the example."""
    store = DirectoryIdentity(tmp_path / "identity")

    async def body(endpoint: Endpoint) -> None:
        error = await endpoint.refusal(store, STORES, "store-0388")
        assert error.status == 403
        assert not error.retryable
        assert str(error) == "enrollment refused (403): device store-0388 is disabled"

    with_controller(remote, tmp_path / "state", body)


def test_a_name_enrolled_with_another_key_is_refused_for_good(
    remote: gitserver.Remote, tmp_path: Path
) -> None:
    async def body(endpoint: Endpoint) -> None:
        first = await endpoint.ask(
            DirectoryIdentity(tmp_path / "first"), WAREHOUSE, "agent-enroll-409"
        )
        assert isinstance(first, Identity)
        error = await endpoint.refusal(
            DirectoryIdentity(tmp_path / "second"), WAREHOUSE, "agent-enroll-409"
        )
        assert error.status == 409
        assert not error.retryable
        assert str(error).startswith("enrollment refused (409): ")

    with_controller(remote, tmp_path / "state", body)


def test_too_many_requests_is_retryable_after_what_the_controller_says(
    remote: gitserver.Remote, tmp_path: Path
) -> None:
    limits = ratelimit.ClientLimits(rate=0.01, burst=1, failure_rate=1000, failure_burst=1000)

    async def body(endpoint: Endpoint) -> None:
        first = await endpoint.ask(
            DirectoryIdentity(tmp_path / "one"), WAREHOUSE, "agent-enroll-429"
        )
        assert isinstance(first, Identity)
        error = await endpoint.refusal(
            DirectoryIdentity(tmp_path / "two"), WAREHOUSE, "agent-enroll-429b"
        )
        assert error.status == 429
        assert error.retryable
        assert error.retry_after == 100.0

    with_controller(remote, tmp_path / "state", body, limits)


# -- not reached ------------------------------------------------------------------------------


def test_an_unreachable_controller_is_retryable(tmp_path: Path) -> None:
    port = gitserver.free_port()
    store = DirectoryIdentity(tmp_path / "identity")
    url = f"https://127.0.0.1:{port}"
    with pytest.raises(enroll.EnrollError) as raised:
        enroll.enroll(store, url, WAREHOUSE, "gw-01", enroll.trust_context())
    assert raised.value.status == 0
    assert raised.value.retryable
    assert str(raised.value) == f"cannot reach {url}/v1/enroll: [Errno 111] Connection refused"
    assert store.load_pending_key() is not None  # the key waits for the next attempt


def test_a_controller_with_a_certificate_of_another_ca_is_not_trusted(
    remote: gitserver.Remote, tmp_path: Path
) -> None:
    other = gitserver.make_tls_files(tmp_path / "other-ca")

    async def body(endpoint: Endpoint) -> None:
        store = DirectoryIdentity(tmp_path / "identity")
        context = enroll.trust_context(other.ca_cert)
        with pytest.raises(enroll.EnrollError) as raised:
            await asyncio.to_thread(
                enroll.enroll, store, endpoint.url, WAREHOUSE, "agent-enroll-ca", context
            )
        assert raised.value.status == 0
        assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)

    with_controller(remote, tmp_path / "state", body)


class Impostor:
    """A TLS server on loopback with a certificate of a CA of its own, that answers one
    enrollment with a made-up identity and keeps what it was sent; a client that refuses its
    certificate ends it too."""

    def __init__(self, folder: Path) -> None:
        self.files = gitserver.make_tls_files(folder)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.files.server_cert, self.files.server_key)
        connection, _ = self.listener.accept()
        try:
            with context.wrap_socket(connection, server_side=True) as tls:
                tls.settimeout(10)
                while b'"csr"' not in self.received:  # the body names the csr last but one
                    self.received += tls.recv(65536)
                text = json.dumps(
                    {
                        "deviceId": "rogue",
                        "tenant": "acme-sensors",
                        "name": "gw-01",
                        "deviceToken": "rciots-dt-rogue",
                        "certificateChain": "",
                        "caBundle": "",
                        "connectorUrl": "wss://impostor.example:8444/v1/connect",
                    }
                ).encode()
                tls.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)
                )
        except (ssl.SSLError, OSError):
            pass  # the client refused the certificate

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.listener.close()


def test_with_a_ca_file_the_systems_cas_are_not_trusted_besides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent is given the controller's root: a server whose certificate another CA signed
    must neither get the provisioning token nor hand out an identity, even when the system
    trusts that CA (a public CA, a TLS-inspecting proxy's)."""
    controller_root = gitserver.make_tls_files(tmp_path / "controller-ca").ca_cert
    impostor = Impostor(tmp_path / "impostor")
    # the system's trusted CAs are the impostor's
    monkeypatch.setenv("SSL_CERT_FILE", str(impostor.files.ca_cert))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-folder"))
    store = DirectoryIdentity(tmp_path / "identity")
    try:
        with pytest.raises(enroll.EnrollError) as raised:
            enroll.enroll(
                store, impostor.url, WAREHOUSE, "gw-01", enroll.trust_context(controller_root)
            )
    finally:
        impostor.close()
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
    assert WAREHOUSE.encode() not in impostor.received
    assert store.load() is None


def test_a_url_that_is_not_https_is_refused_before_any_key_is_made(tmp_path: Path) -> None:
    """Not an EnrollError with status 0, which the agent takes for 'unreachable' and retries
    for ever: sending the token over plain HTTP is never going to be right."""
    store = DirectoryIdentity(tmp_path / "identity")
    with pytest.raises(ValueError, match=r"^the enrollment URL must be https://") as raised:
        enroll.enroll(store, "http://127.0.0.1:8443", WAREHOUSE, "gw-01", enroll.trust_context())
    assert not isinstance(raised.value, enroll.EnrollError)
    assert store.load_pending_key() is None


class NotHttp:
    """A TLS server on loopback (certificate of a throwaway CA) that answers one request with
    ``answer`` and closes: no HTTP at all, or an HTTP answer cut short."""

    def __init__(self, folder: Path, answer: bytes) -> None:
        self.files = gitserver.make_tls_files(folder)
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.files.server_cert, self.files.server_key)
        connection, _ = self.listener.accept()
        with context.wrap_socket(connection, server_side=True) as tls:
            received = b""
            while b"\r\n\r\n" not in received:  # the whole request, so that closing resets none
                received += tls.recv(65536)
            head, _, body = received.partition(b"\r\n\r\n")
            length = int(head.lower().partition(b"content-length:")[2].split(b"\r\n")[0])
            while len(body) < length:
                body += tls.recv(65536)
            tls.sendall(self.answer)

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.listener.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{",
    ],
    ids=["not-http", "cut-short"],
)
def test_an_answer_that_is_not_http_is_retryable(tmp_path: Path, answer: bytes) -> None:
    """http.client raised these past the agent as a traceback."""
    server = NotHttp(tmp_path / "tls", answer)
    try:
        with pytest.raises(enroll.EnrollError) as raised:
            enroll.enroll(
                DirectoryIdentity(tmp_path / "identity"),
                server.url,
                WAREHOUSE,
                "gw-01",
                enroll.trust_context(server.files.ca_cert),
            )
    finally:
        server.close()
    assert raised.value.status == 0
    assert raised.value.retryable
    assert str(raised.value).startswith(f"no valid HTTP answer from {server.url}/v1/enroll: ")


def test_a_ca_file_that_is_missing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be loaded") as raised:
        enroll.trust_context(tmp_path / "root.pem")
    assert str(raised.value) == (
        f"the CA file {tmp_path / 'root.pem'} cannot be loaded: No such file or directory"
    )


def test_a_ca_file_that_is_no_certificate_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "root.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"^the CA file .*root\.pem cannot be loaded: "):
        enroll.trust_context(tmp_path / "root.pem")
