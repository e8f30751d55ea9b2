"""The agent at work (``rciots.agent.run``) against a real controller in the same event loop:
enrollment errors that stop it, reporting what it applied, waiting between connection
attempts, and what it does when the connection changes during an apply.

The controller (``service.Controller``) runs on a Git repo made from fleet-repo-example, with
enrollment and the connector on loopback; the agent uses the directory applier, in a few tests
behind a gate that holds an apply until the test lets it go.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import shutil
import ssl
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.server import ServerConnection, serve

from rciots.agent import applier, config, enroll, protocol, run
from rciots.agent.bundle import ApplyResult, Bundle, ResourceId
from rciots.agent.state import DirectoryIdentity, Identity
from rciots.controller import ca
from tests import aio, gitserver
from tests.fleetcontroller import (
    EXAMPLE,
    RunningAgent,
    agent_config,
    controller,
    desired,
    in_sync,
    reported,
    settings,
)

SMALL_TEMPLATE = "tenants/acme-sensors/templates/mqtt-edge-small"


class Gate:
    """The agent's own applier behind a gate: ``close()`` holds the next apply until
    ``open()``; ``entered`` is set when an apply waits at (or passes) the gate, ``finished``
    when one has returned."""

    def __init__(self, inner: applier.Applier) -> None:
        self.inner = inner
        self.passable = threading.Event()
        self.passable.set()
        self.entered = threading.Event()
        self.finished = threading.Event()

    def close(self) -> None:
        self.entered.clear()
        self.finished.clear()
        self.passable.clear()

    def open(self) -> None:
        self.passable.set()

    @property
    def kind(self) -> str:
        return self.inner.kind

    def apply(self, bundle: Bundle, previous: Sequence[ResourceId]) -> ApplyResult:
        self.entered.set()
        self.passable.wait(timeout=30)
        try:
            return self.inner.apply(bundle, previous)
        finally:
            self.finished.set()


def started(made: config.AgentConfig) -> RunningAgent:
    agent = RunningAgent(made)
    agent.start()
    return agent


@pytest.fixture(scope="module")
def shared_remote(tmp_path_factory: pytest.TempPathFactory) -> gitserver.Remote:
    """A fleet repo for the tests that commit nothing (each uses device names of its own)."""
    return gitserver.make_remote(tmp_path_factory.mktemp("fleet") / "fleet.git", source=EXAMPLE)


# -- enrollment -------------------------------------------------------------------------------


def test_an_agent_that_is_not_enrolled_and_has_no_token_says_so(tmp_path: Path) -> None:
    agent = run.Agent(config.AgentConfig(state_dir=tmp_path, device_name="gw-01"))
    with pytest.raises(enroll.EnrollError) as raised:
        aio.run(agent.run(asyncio.Event()), timeout=5)
    assert str(raised.value) == (
        "not enrolled yet, and no enroll_url and token to enroll with are configured"
    )


def test_a_refused_token_stops_the_agent(shared_remote: gitserver.Remote, tmp_path: Path) -> None:
    async def body() -> None:
        async with controller(settings(shared_remote, tmp_path / "state")) as running:
            made = agent_config(tmp_path / "agent", running, "run-refused")
            made = dataclasses.replace(made, token="rciots-pt-not-a-token-of-this-fleet")
            with pytest.raises(enroll.EnrollError) as raised:
                await run.Agent(made).run(asyncio.Event())
            assert raised.value.status == 404

    aio.run(body(), timeout=20)


def test_a_stored_identity_is_used_without_asking_anyone(
    shared_remote: gitserver.Remote, tmp_path: Path
) -> None:
    async def body() -> None:
        async with controller(settings(shared_remote, tmp_path / "state")) as running:
            made = agent_config(tmp_path / "agent", running, "run-stored")
            first = await run.Agent(made).enrolled(asyncio.Event())
        # the controller is gone, and so are the URL and the token
        alone = dataclasses.replace(made, enroll_url=None, token=None)
        again = await run.Agent(alone).enrolled(asyncio.Event())
        assert again == first
        assert again == DirectoryIdentity(tmp_path / "agent" / "identity").load()

    aio.run(body(), timeout=20)


# -- connected --------------------------------------------------------------------------------


def test_what_was_applied_is_reported_at_once_not_at_the_next_status(
    shared_remote: gitserver.Remote, tmp_path: Path
) -> None:
    """With the connector's default status interval (30 s) the 'applied' must not wait for
    the next status message to be sent."""
    key = ("acme-sensors", "run-report")

    async def body() -> None:
        wanted = settings(shared_remote, tmp_path / "state", status_interval=30)
        async with controller(wanted) as running:
            agent = started(agent_config(tmp_path / "agent", running, key[1]))
            await in_sync(running, key, within=8)
            assert agent.applied_digest() == desired(running, key)
            await agent.halt()

    aio.run(body(), timeout=30)


def test_what_was_applied_keeps_running_while_the_controller_is_away(
    shared_remote: gitserver.Remote, tmp_path: Path
) -> None:
    key = ("acme-sensors", "run-offline")

    async def body() -> None:
        async with controller(settings(shared_remote, tmp_path / "state")) as running:
            agent = started(agent_config(tmp_path / "agent", running, key[1]))
            await in_sync(running, key, within=8)
            digest = desired(running, key)
        await asyncio.sleep(0.5)  # the agent tries to reconnect meanwhile (0.3 s at most)
        assert agent.running
        assert agent.applied_digest() == digest
        await agent.halt()
        assert agent.applied_digest() == digest  # stopping undoes nothing either

    aio.run(body(), timeout=30)


# -- waiting between attempts -----------------------------------------------------------------

WAIT = re.compile(r"reconnecting in (\d+\.\d) s")


def waits(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [float(m[1]) for r in caplog.records if (m := WAIT.fullmatch(r.getMessage()))]


def test_a_busy_connector_is_retried_with_backoff_not_the_longest_wait(
    shared_remote: gitserver.Remote, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """503 'too many connections' (the connector's cap per address before hello) is no
    refusal of the device: waiting the longest, without jitter, would bring every agent
    behind one address back at the same moment again."""
    caplog.set_level(logging.INFO, logger="rciots.agent.run")

    async def body() -> None:
        wanted = settings(shared_remote, tmp_path / "state", max_waiting_per_address=0)
        async with controller(wanted) as running:
            made = agent_config(tmp_path / "agent", running, "run-busy", max_reconnect_delay=5.0)
            agent = started(made)
            await aio.eventually(lambda: len(waits(caplog)) >= 1, within=10)
            await agent.halt()
        assert "the connector refused the connection: HTTP 503 too many connections" in [
            r.getMessage() for r in caplog.records
        ]
        assert waits(caplog)[0] <= 1.0  # the first backoff step, not 5.0

    aio.run(body(), timeout=30)


def test_a_refused_device_waits_the_longest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rciots.agent.run")
    remote = gitserver.make_remote(tmp_path / "fleet.git", source=EXAMPLE)
    key = ("acme-sensors", "run-refused-device")

    async def body() -> None:
        async with controller(settings(remote, tmp_path / "state")) as running:
            made = agent_config(tmp_path / "agent", running, key[1], max_reconnect_delay=5.0)
            agent = started(made)
            await in_sync(running, key, within=8)
            remote.commit(
                {
                    f"tenants/acme-sensors/devices/{key[1]}/device.yaml": (
                        f"apiVersion: rciots.io/v1\nkind: Device\nmetadata:\n  name: {key[1]}\n"
                        "spec:\n  enabled: false\n"
                    )
                },
                "disable the device",
            )
            await aio.eventually(lambda: len(waits(caplog)) >= 1, within=10)
            await agent.halt()
        assert waits(caplog) == [5.0]

    aio.run(body(), timeout=30)


# -- a connection that changes during an apply ------------------------------------------------


def test_an_apply_that_ends_in_a_newer_session_leaves_the_device_on_the_desired_state(
    tmp_path: Path,
) -> None:
    """The connection drops while an apply runs; meanwhile the change is reverted, and the
    new session starts from the hello's digest, which is the reverted one: nothing is sent.
    When the apply ends, the device runs the change, which nobody wants any more. The agent
    must say so (a new hello) and apply the desired state again."""
    remote = gitserver.make_remote(tmp_path / "fleet.git", source=EXAMPLE)
    key = ("acme-sensors", "run-revert")
    kustomization = f"{SMALL_TEMPLATE}/kustomization.yaml"
    original = (remote.work / kustomization).read_text()

    async def body() -> None:
        wanted = settings(remote, tmp_path / "state")
        wanted = dataclasses.replace(
            wanted,
            agents=dataclasses.replace(wanted.agents, listen=("127.0.0.1", gitserver.free_port())),
        )
        async with controller(wanted) as running:
            assert running.connector is not None
            agent = started(agent_config(tmp_path / "agent", running, key[1]))
            gate = Gate(agent.agent.applier)
            agent.agent.applier = gate
            await in_sync(running, key, within=8)
            first = desired(running, key)

            gate.close()
            remote.commit({kustomization: original + "nameSuffix: -v2\n"}, "rename")
            await aio.eventually(lambda: gate.entered.is_set(), within=10)
            await running.connector.stop()  # the session drops during the apply
            remote.commit({kustomization: original}, "revert the rename")
            await aio.eventually(lambda: desired(running, key) == first, within=10)
            await running.connector.start()
            await aio.eventually(lambda: running.observed[key].connected, within=10)
            gate.open()
            await aio.eventually(lambda: gate.finished.is_set(), within=10)
            assert agent.applied_digest() != first  # the device runs the reverted change

            def back() -> bool:
                """the device runs the desired state again, and the controller knows it"""
                return agent.applied_digest() == first and reported(running, key) == first

            await aio.eventually(back, within=10)
            assert agent.running
            await agent.halt()

    aio.run(body(), timeout=60)


def test_state_files_that_cannot_be_written_do_not_stop_applying(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk, say: the apply happened and is reported; only its record is lost."""
    caplog.set_level(logging.INFO, logger="rciots.agent.run")
    remote = gitserver.make_remote(tmp_path / "fleet.git", source=EXAMPLE)
    key = ("acme-sensors", "run-disk-full")
    kustomization = f"{SMALL_TEMPLATE}/kustomization.yaml"

    async def body() -> None:
        async with controller(settings(remote, tmp_path / "state")) as running:
            agent = started(agent_config(tmp_path / "agent", running, key[1]))
            await in_sync(running, key, within=8)
            first = desired(running, key)
            for name in ("desired.json", "applied.json"):  # a rename over them fails
                (tmp_path / "agent" / name).unlink()
                (tmp_path / "agent" / name).mkdir()
            original = (remote.work / kustomization).read_text()
            remote.commit({kustomization: original + "nameSuffix: -v2\n"}, "rename")
            await aio.eventually(lambda: desired(running, key) != first, within=10)
            await in_sync(running, key, within=10)
            assert agent.applied_digest() == desired(running, key)
            assert agent.running
            await agent.halt()
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert [e.split(" cannot be written")[0] for e in errors] == [
            str(tmp_path / "agent" / "desired.json"),
            str(tmp_path / "agent" / "applied.json"),
        ]

    aio.run(body(), timeout=30)


def test_an_applier_that_raises_is_a_failed_apply_and_the_agent_goes_on(tmp_path: Path) -> None:
    """An applier raises only for what it did not foresee: here the podman applier (with
    `true` as its tool, which succeeds at everything) cannot write its record, because a file
    stands where its folder should be. The agent answers that desired state as failed, with
    the error, and applies the next one once the obstacle is gone."""
    remote = gitserver.make_remote(tmp_path / "fleet.git", source=EXAMPLE)
    key = ("acme-sensors", "run-applier-raises")
    kustomization = f"{SMALL_TEMPLATE}/kustomization.yaml"
    tool = shutil.which("true")
    assert tool is not None
    obstacle = tmp_path / "agent" / "podman"  # the podman applier's folder
    obstacle.parent.mkdir()
    obstacle.write_text("a file where the podman applier's folder should be")

    async def body() -> None:
        async with controller(settings(remote, tmp_path / "state")) as running:
            made = agent_config(tmp_path / "agent", running, key[1], applier="podman", podman=tool)
            agent = started(made)

            def failed() -> bool:
                """the controller heard the apply failed, and why"""
                seen = running.observed.get(key)
                return seen is not None and seen.tried_error is not None

            await aio.eventually(failed, within=10)
            error = running.observed[key].tried_error
            assert error is not None
            assert error.startswith("the podman applier failed: FileExistsError: ")
            assert reported(running, key) is None

            obstacle.unlink()
            original = (remote.work / kustomization).read_text()
            remote.commit({kustomization: original + "nameSuffix: -v2\n"}, "rename")
            await in_sync(running, key, within=10)
            assert agent.running
            await agent.halt()

    aio.run(body(), timeout=30)


# -- certificate renewal ----------------------------------------------------------------------


def public_key_of_certificate(chain_pem: bytes) -> bytes:
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    return leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_of_key(key_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_a_certificate_for_an_earlier_renewal_key_is_not_stored_with_the_newest_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The protocol lets a connector ask for a CSR again before it has answered the first; the
    agent makes a new key for each. The certificate for the first key must not be stored with
    the second key (TLS would refuse that pair, and the device could never connect again): the
    stored key and certificate belong together, and they are the newest ones.

    The connector here is the protocol's own ConnectorSession over a real TLS WebSocket, with a
    CA made by the controller's ca module, which signs each CSR as the controller does."""
    caplog.set_level(logging.INFO, logger="rciots.agent.run")
    now = datetime.now(UTC)
    authority = ca.create_authority(["127.0.0.1"], now)
    (tmp_path / "server.pem").write_bytes(ca.pem(authority.server))
    (tmp_path / "server.key").write_bytes(
        authority.server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    device, tenant = "dev-renew", "acme-sensors"
    signed: list[str] = []  # the certificate chains sent, in order

    def sign(csr: str) -> str:
        issued = ca.issue_device_certificate(
            authority, ca.check_csr(csr.encode()), tenant, device, now
        )
        return issued.chain_pem.decode()

    async def connector_side(connection: ServerConnection) -> None:
        session = protocol.ConnectorSession(device)
        csrs: list[str] = []
        while session.closed is None:
            for event in session.receive(await connection.recv()):
                if isinstance(event, protocol.HelloReceived):
                    session.accept(30)
                    session.request_renewal()
                    session.request_renewal()  # again, before the first is answered
                elif isinstance(event, protocol.CsrReceived):
                    csrs.append(event.csr)
            if len(csrs) == 2:
                for csr in csrs:
                    signed.append(sign(csr))
                    session.certificate(signed[-1], authority.ca_bundle_pem().decode())
                session.close(protocol.CloseCode.GOING_AWAY, "the test is done")
            for text in session.outgoing():
                await connection.send(text)
        closed = session.closed
        await connection.close(closed.code, closed.reason)

    async def body() -> None:
        async with serve(connector_side, "127.0.0.1", 0, ssl=server_tls) as server:
            port = server.sockets[0].getsockname()[1]
            key_pem = enroll.new_key_pem()
            first = Identity(
                device_id=device,
                tenant=tenant,
                name="gw-renew",
                connector_url=f"wss://127.0.0.1:{port}/v1/connect",
                device_token="rciots-dt-renewal-test",
                key_pem=key_pem,
                certificate_pem=sign(enroll.make_csr(key_pem, "gw-renew")).encode(),
                ca_pem=authority.ca_bundle_pem(),
            )
            store = DirectoryIdentity(tmp_path / "agent" / "identity")
            store.save(first)
            made = config.AgentConfig(
                state_dir=tmp_path / "agent", device_name="gw-renew", max_reconnect_delay=5.0
            )
            agent = started(made)
            await aio.eventually(lambda: len(waits(caplog)) >= 1, within=10)
            await agent.halt()
        assert len(signed) == 2  # one per CSR
        kept = store.load()
        assert kept is not None
        assert kept.certificate_pem.decode() == signed[1]
        assert public_key_of_certificate(kept.certificate_pem) == public_key_of_key(kept.key_pem)

    aio.run(body(), timeout=30)
