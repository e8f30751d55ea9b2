"""The connector and the agent together, in one event loop, over real mutual TLS on loopback:
a controller on a real Git repo, agents with the directory applier.

Enroll -> connected -> applied -> status on the status branch; a template commit is applied
again (a delta); a removed resource is pruned; a device disabled in Git is disconnected and
refused; an agent restart neither enrolls nor applies again; a controller restart makes agents
reconnect and resync; another CA, an expired certificate, another device's token are refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from rciots.agent import protocol
from rciots.agent.state import DirectoryIdentity
from rciots.controller import ca, castore, connector, service
from tests import aio, gitserver
from tests.cryptohelp import csr_pem, ec_key
from tests.fleetcontroller import (
    EXAMPLE,
    RunningAgent,
    agent_config,
    controller,
    in_sync,
    settings,
)

TENANT = "tenants/acme-sensors"
SMALL_TEMPLATE = f"{TENANT}/templates/mqtt-edge-small"
DEVICE_DIR = f"{TENANT}/devices"


def connected_agent(home: Path, running: service.Controller, name: str) -> RunningAgent:
    """An agent told the connector's address itself (not the enrollment answer's)."""
    assert running.connector is not None
    url = f"wss://127.0.0.1:{running.connector.port}{connector.PATH}"
    return RunningAgent(
        agent_config(home, running, name, connector_url=url, max_reconnect_delay=0.5)
    )


async def changed_and_in_sync(running: service.Controller, key: tuple[str, str]) -> None:
    before = running.reconciler.table[key].digest

    def changed() -> bool:
        """a new commit changed the device's desired digest"""
        return running.reconciler.table[key].digest != before

    await aio.eventually(changed, within=10)
    await in_sync(running, key)


def resources_of(agent: RunningAgent) -> list[str]:
    return sorted(p.name for p in (agent.manifests / "current" / "resources").iterdir())


def bundle_of(agent: RunningAgent) -> str:
    return (agent.manifests / "current" / "bundle.yaml").read_text()


def run_test(
    tmp_path: Path, body: Callable[[gitserver.Remote, Path], Coroutine[Any, Any, None]]
) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", source=EXAMPLE)
    aio.run(body(remote, tmp_path), timeout=90)


def test_enroll_apply_update_prune_and_status(tmp_path: Path) -> None:
    async def body(remote: gitserver.Remote, tmp: Path) -> None:
        async with controller(settings(remote, tmp / "state")) as running:
            agent = connected_agent(tmp / "agent", running, "wh-01")
            agent.start()
            key = ("acme-sensors", "wh-01")
            await in_sync(running, key)
            assert running.observed[key].connected
            assert any("_Deployment_" in name for name in resources_of(agent))
            # a template commit reaches the device as a delta and is applied
            kustomization = (remote.work / SMALL_TEMPLATE / "kustomization.yaml").read_text()
            remote.commit(
                {
                    f"{SMALL_TEMPLATE}/kustomization.yaml": kustomization
                    + "commonAnnotations:\n  rollout: second\n"
                },
                "annotate the small template",
            )
            await changed_and_in_sync(running, key)
            assert "rollout: second" in bundle_of(agent)
            assert running.status is not None
            await running.status.flush()
            status = gitserver.run_git(
                remote.bare, "show", "rciots/status:status/acme-sensors/wh-01.yaml"
            )
            assert "result: Applied" in status
            assert "connected: true" in status
            await agent.halt()

    run_test(tmp_path, body)


DELETE_SERVICE = """\
  - patch: |-
      apiVersion: v1
      kind: Service
      metadata:
        name: mqtt-broker
      $patch: delete
"""


def test_prune_restart_without_reenrolling_and_disable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rciots.controller.connector")

    async def body(remote: gitserver.Remote, tmp: Path) -> None:
        async with controller(settings(remote, tmp / "state")) as running:
            key = ("acme-sensors", "wh-02")
            agent = connected_agent(tmp / "agent", running, "wh-02")
            agent.start()
            await in_sync(running, key)
            assert "core_Service_" in " ".join(resources_of(agent))
            # a resource that leaves the desired set is pruned
            kustomization = (remote.work / SMALL_TEMPLATE / "kustomization.yaml").read_text()
            remote.commit(
                {f"{SMALL_TEMPLATE}/kustomization.yaml": kustomization + DELETE_SERVICE},
                "no Service on podman hosts",
            )
            await changed_and_in_sync(running, key)
            assert "core_Service_" not in " ".join(resources_of(agent))
            # a restart neither enrolls again nor applies again
            device_id = running.reconciler.enrollments[key].device_id
            applied_folder = (agent.manifests / "current").resolve()
            await agent.halt()
            await aio.eventually(lambda: not running.observed[key].connected)
            agent.start()
            await aio.eventually(lambda: running.observed[key].connected)
            await in_sync(running, key)
            assert running.registry is not None
            assert [r.device_id for r in running.registry.registrations()] == [device_id]
            assert (agent.manifests / "current").resolve() == applied_folder
            # disabled in Git: disconnected within the pass, and refused when it comes back
            remote.commit(
                {
                    f"{DEVICE_DIR}/wh-02/device.yaml": (
                        "apiVersion: rciots.io/v1\nkind: Device\nmetadata:\n  name: wh-02\n"
                        "spec:\n  enabled: false\n"
                    )
                },
                "disable wh-02",
            )

            def disconnected() -> bool:
                """the disabled device's session is closed"""
                return not running.observed[key].connected and device_id not in (
                    running.connector.sessions if running.connector else {}
                )

            await aio.eventually(disconnected, within=10)

            def refused_twice() -> bool:
                """the agent came back twice (backoff 0.5 s), and was refused each time"""
                refusal = "connection from 127.0.0.1 refused: device acme-sensors/wh-02 is disabled"
                return [r.getMessage() for r in caplog.records].count(refusal) >= 2

            await aio.eventually(refused_twice, within=10)
            assert not running.observed[key].connected
            await agent.halt()

    run_test(tmp_path, body)


def test_a_controller_restart_brings_agents_back_in_sync(tmp_path: Path) -> None:
    async def body(remote: gitserver.Remote, tmp: Path) -> None:
        wanted = settings(remote, tmp / "state")
        fixed = dataclasses.replace(
            wanted,
            enrollment=dataclasses.replace(
                wanted.enrollment, listen=("127.0.0.1", gitserver.free_port())
            ),
            agents=dataclasses.replace(wanted.agents, listen=("127.0.0.1", gitserver.free_port())),
        )
        key = ("acme-sensors", "wh-03")
        async with controller(fixed) as running:
            agent = connected_agent(tmp / "agent", running, "wh-03")
            agent.start()
            await in_sync(running, key)
        # the controller is down: the agent keeps what it applied and retries
        kustomization = (remote.work / SMALL_TEMPLATE / "kustomization.yaml").read_text()
        remote.commit(
            {f"{SMALL_TEMPLATE}/kustomization.yaml": kustomization + "nameSuffix: -v3\n"},
            "rename while the controller is down",
        )
        async with controller(fixed) as running:
            await in_sync(running, key, within=15)
            assert "-v3" in bundle_of(agent)
        await agent.halt()

    run_test(tmp_path, body)


def test_strangers_are_refused(tmp_path: Path) -> None:
    """Another CA's certificate, an expired one of ours, and another device's token."""

    async def body(remote: gitserver.Remote, tmp: Path) -> None:
        async with controller(settings(remote, tmp / "state")) as running:
            assert running.connector is not None
            assert running.authority is not None
            url = f"wss://127.0.0.1:{running.connector.port}{connector.PATH}"
            agents = [connected_agent(tmp / n, running, n) for n in ("wh-04", "wh-05")]
            for agent in agents:
                agent.start()
            for agent in agents:
                await in_sync(running, ("acme-sensors", agent.name))
            mine = DirectoryIdentity(tmp / "wh-04" / "identity").load()
            other = DirectoryIdentity(tmp / "wh-05" / "identity").load()
            assert mine is not None
            assert other is not None
            root = running.authority.ca_bundle_pem().decode()

            # another CA: the TLS handshake fails
            stranger = castore.load_or_create(tmp / "other-ca", ["localhost"], datetime.now(UTC))
            issued = ca.issue_device_certificate(
                stranger,
                ca.check_csr(csr_pem(key := ec_key())),
                "acme-sensors",
                mine.device_id,
                datetime.now(UTC),
            )
            with pytest.raises((ssl.SSLError, ConnectionClosed, OSError, InvalidMessage)):
                await hello_with(
                    url, root, issued.chain_pem, key, mine.device_id, mine.device_token
                )

            # our CA, but expired: the TLS handshake fails too
            expired = ca.issue_device_certificate(
                running.authority,
                ca.check_csr(csr_pem(key := ec_key())),
                "acme-sensors",
                mine.device_id,
                datetime.now(UTC) - timedelta(days=100),
                timedelta(days=1),
            )
            with pytest.raises((ssl.SSLError, ConnectionClosed, OSError, InvalidMessage)):
                await hello_with(
                    url, root, expired.chain_pem, key, mine.device_id, mine.device_token
                )

            # our certificate, another device's token: 4401 after hello
            code = await hello_with(
                url, root, mine.certificate_pem, mine.key_pem, mine.device_id, other.device_token
            )
            assert code == protocol.CloseCode.UNAUTHORIZED
            # a certificate of ours that is not the registered one: 403 before the upgrade
            unregistered = ca.issue_device_certificate(
                running.authority,
                ca.check_csr(csr_pem(key := ec_key())),
                "acme-sensors",
                "no-such-device",
                datetime.now(UTC),
            )
            with pytest.raises(InvalidStatus) as refused:
                await hello_with(
                    url, root, unregistered.chain_pem, key, "no-such-device", mine.device_token
                )
            assert refused.value.response.status_code == 403
            for agent in agents:
                await agent.halt()

    run_test(tmp_path, body)


async def hello_with(
    url: str,
    root: str,
    chain: bytes,
    key: object,
    device_id: str,
    token: str,
    before_hello: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> int | None:
    """Connect with ``chain`` and ``key``, (await ``before_hello``,) say hello with ``token``;
    the close code, or None when the session is still open 5 s later."""
    folder = Path(tempfile.mkdtemp(prefix="rciots-client-"))
    try:
        key_pem = (
            key
            if isinstance(key, bytes)
            else key.private_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (folder / "chain.pem").write_bytes(chain)
        (folder / "key.pem").write_bytes(key_pem)
        context = ssl.create_default_context(cadata=root)
        context.load_cert_chain(folder / "chain.pem", folder / "key.pem")
        async with connect(url, ssl=context, open_timeout=10) as connection:
            if before_hello is not None:
                await before_hello()
            session = protocol.AgentSession(device_id, token, "test", None)
            session.hello()
            for text in session.outgoing():
                await connection.send(text)
            try:
                async with asyncio.timeout(5):
                    while True:
                        session.receive(await connection.recv())
            except ConnectionClosed:
                return connection.close_code
            except TimeoutError:
                return None  # let in: the session stays open
    finally:
        shutil.rmtree(folder)


def test_a_device_disabled_while_its_connection_waits_for_the_hello_is_refused(
    tmp_path: Path,
) -> None:
    """The certificate is checked before the upgrade; the hello comes up to hello_timeout
    later. A device disabled in between (a reconcile pass, whose enforce() sees only sessions
    already open) is refused at its hello, not let in until the next change of the fleet."""

    async def body(remote: gitserver.Remote, tmp: Path) -> None:
        async with controller(settings(remote, tmp / "state")) as running:
            assert running.connector is not None
            assert running.authority is not None
            key = ("acme-sensors", "wh-08")
            agent = connected_agent(tmp / "agent", running, "wh-08")
            agent.start()
            await in_sync(running, key)
            await agent.halt()
            mine = DirectoryIdentity(tmp / "agent" / "identity").load()
            assert mine is not None

            async def disable() -> None:
                remote.commit(
                    {
                        f"{DEVICE_DIR}/wh-08/device.yaml": (
                            "apiVersion: rciots.io/v1\nkind: Device\nmetadata:\n"
                            "  name: wh-08\nspec:\n  enabled: false\n"
                        )
                    },
                    "disable wh-08",
                )

                def denied() -> bool:
                    """the pass that read the commit denies the device"""
                    return mine.device_id in running.access.denied

                await aio.eventually(denied, within=8)

            code = await hello_with(
                f"wss://127.0.0.1:{running.connector.port}{connector.PATH}",
                running.authority.ca_bundle_pem().decode(),
                mine.certificate_pem,
                mine.key_pem,
                mine.device_id,
                mine.device_token,
                before_hello=disable,
            )
            assert code == protocol.CloseCode.FORBIDDEN
            assert mine.device_id not in running.connector.sessions
            assert not running.observed[key].connected

    run_test(tmp_path, body)


def test_a_certificate_past_two_thirds_of_its_life_is_renewed(tmp_path: Path) -> None:
    """Device certificates of one minute, backdated five (as every certificate is, for slow
    clocks): past two thirds at once, so the connector asks for a renewal on connect."""

    async def body(remote: gitserver.Remote, tmp: Path) -> None:
        wanted = settings(remote, tmp / "state")
        short = dataclasses.replace(
            wanted,
            enrollment=dataclasses.replace(wanted.enrollment, device_lifetime=timedelta(minutes=1)),
        )
        async with controller(short) as running:
            assert running.registry is not None
            key = ("acme-sensors", "wh-06")
            # the renewal's signing and registry write (an fsync) happen off the event loop
            record, writers = running.registry.listener, []
            assert record is not None

            def listener(*change: Any) -> None:
                writers.append(threading.get_ident())
                record(*change)

            running.registry.listener = listener
            agent = connected_agent(tmp / "agent", running, "wh-06")
            agent.start()
            await in_sync(running, key)
            store = DirectoryIdentity(tmp / "agent" / "identity")

            def renewed() -> bool:
                """the registry holds a second certificate, and the agent stored it"""
                now = running.registry.by_name(*key) if running.registry else None
                mine = store.load()
                if now is None or now.previous_certificate_serial is None or mine is None:
                    return False
                leaf = x509.load_pem_x509_certificates(mine.certificate_pem)[0]
                return format(leaf.serial_number, "x") == now.certificate_serial

            await aio.eventually(renewed, within=10)
            assert len(writers) == 2  # the enrollment's, the renewal's
            assert threading.get_ident() not in writers
            current = running.registry.by_name(*key)
            mine = store.load()
            assert current is not None
            assert mine is not None
            # a new key, made on the device, with the same identity
            private = serialization.load_pem_private_key(mine.key_pem, password=None)
            assert ca.key_fingerprint(private.public_key()) == current.key_fingerprint
            assert current.certificate_serial != current.previous_certificate_serial
            assert [r.device_id for r in running.registry.registrations()] == [mine.device_id]
            # the agent reconnects with the new certificate and is let in
            await agent.halt()
            agent.start()
            await aio.eventually(lambda: running.observed[key].connected, within=10)
            await agent.halt()

    run_test(tmp_path, body)
