"""The agent at work: enroll once, then stay connected, apply what arrives, report.

Position in the flow: ``rciots-agent`` -> **run** -> enroll (``enroll``) -> identity (``state``)
-> WebSocket over mutual TLS -> ``protocol.AgentSession`` -> applier -> ``applied``. This is the
thin asyncio layer around the protocol session: feed each received text in, send what the
session queues, handle each event.

- Enrollment waits while pending (the controller's Retry-After), and backs off on errors.
- A restart neither enrolls again (the identity is kept) nor applies again (the last applied
  bundle is kept, and its digest goes in the hello, so the connector sends nothing new).
- Applies run one at a time in a worker thread; when several desired states arrive during an
  apply, only the newest is applied next (the protocol allows answering only that one). An
  apply is answered in the session that asked for it; when that session ended meanwhile and
  what runs changed, the agent reconnects, so that its hello says what runs.
- While disconnected nothing is undone: what was applied keeps running. Reconnects wait with
  capped exponential backoff and full jitter, reset after a session that lasted.
- The certificate is renewed when the connector asks: a new key and CSR; the key replaces the
  old one only together with the certificate that arrives for it (a certificate for an
  earlier key is ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.typing import Data

from rciots.agent import __version__, applier, applier_support, enroll, protocol
from rciots.agent.atomicfile import write_atomically
from rciots.agent.backoff import Backoff
from rciots.agent.bundle import ApplyResult, Bundle
from rciots.agent.config import AgentConfig
from rciots.agent.state import (
    DirectoryIdentity,
    Identity,
    IdentityStore,
    SecretIdentity,
    StateDir,
    StateError,
)

__all__ = ["Agent", "identity_store"]

log = logging.getLogger(__name__)

_LASTED = 60.0  # a session this long resets the reconnect backoff
_OPEN_TIMEOUT = 20.0
_PING_INTERVAL = 60.0
# close codes after which waiting cannot help quickly: wait the longest
_REFUSED = {protocol.CloseCode.UNAUTHORIZED, protocol.CloseCode.FORBIDDEN}


class Agent:
    """``await Agent(config).run(stop)``: runs until ``stop`` is set."""

    def __init__(self, config: AgentConfig, store: IdentityStore | None = None) -> None:
        self.config = config
        self.store = store or identity_store(config)
        self.state = StateDir(config.state_dir)
        self.applier = _applier(config)
        self.identity: Identity | None = None
        self.session: protocol.AgentSession | None = None
        self._connection: ClientConnection | None = None  # the session's, while it is open
        self._status_reports: asyncio.Task[None] | None = None  # the session's, once welcomed
        self.applied: tuple[Bundle, ApplyResult] | None = self.state.load_applied()
        self.inventory = self.state.load_inventory()
        self._to_apply: _Desired | None = None  # the newest desired state not yet applied
        self._desired_arrived = asyncio.Event()
        self._renewal_key: bytes | None = None

    # -- enrollment -------------------------------------------------------------------------

    async def enrolled(self, stop: asyncio.Event) -> Identity | None:
        """The identity: the stored one, or a new one from enrollment (None when stopped)."""
        identity = await asyncio.to_thread(self.store.load)
        if identity is not None:
            return identity
        config = self.config
        if not config.enroll_url or not config.token:
            raise enroll.EnrollError(
                0, "not enrolled yet, and no enroll_url and token to enroll with are configured"
            )
        context = enroll.trust_context(config.ca_file)
        backoff = _backoff(config)
        while not stop.is_set():
            try:
                answer = await asyncio.to_thread(
                    enroll.enroll,
                    self.store,
                    config.enroll_url,
                    config.token,
                    config.device_name,
                    context,
                    config.labels,
                )
            except enroll.EnrollError as error:
                if not error.retryable:
                    raise
                wait = error.retry_after or backoff.next()
                log.warning("%s; trying again in %.0f s", error, wait)
            else:
                if isinstance(answer, Identity):
                    log.info("enrolled as %s in %s", answer.device_id, answer.tenant)
                    return answer
                wait = answer.retry_after
                log.info(
                    "%s (key %s); asking again in %.0f s",
                    answer.message,
                    answer.key_fingerprint[:19],
                    wait,
                )
            await _sleep(stop, wait)
        return None

    # -- the connection loop --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Enroll if needed, then connect, session after session, until ``stop`` is set;
        between two sessions wait with backoff (the longest after a refusal of the device)."""
        identity = await self.enrolled(stop)
        if identity is None:
            return
        self.identity = identity
        worker = asyncio.create_task(self._apply_worker(stop), name="apply")
        backoff = _backoff(self.config)
        clock = asyncio.get_running_loop().time
        try:
            while not stop.is_set():
                started = clock()
                code = await self._connect_once(stop)
                if stop.is_set():
                    break
                if clock() - started > _LASTED:
                    backoff.reset()
                wait = self.config.max_reconnect_delay if code in _REFUSED else backoff.next()
                log.info("reconnecting in %.1f s", wait)
                await _sleep(stop, wait)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _connect_once(self, stop: asyncio.Event) -> int | None:
        """One session, until it ends; its close code (None: it never opened)."""
        assert self.identity is not None
        identity = self.identity
        url = self.config.connector_url or identity.connector_url
        try:
            context = self._tls_context(identity)
            async with connect(
                url,
                ssl=context,
                open_timeout=_OPEN_TIMEOUT,
                max_size=protocol.DEFAULT_MAX_MESSAGE_BYTES,
                user_agent_header=f"rciots-agent/{__version__}",
                # the connector pings every 20 s; the agent's own, rarer pings only find a
                # connection that died without a word (ten thousand agents pinging every 20 s
                # cost the connector a tenth of a core)
                ping_interval=_PING_INTERVAL,
                ping_timeout=_PING_INTERVAL,
            ) as connection:
                return await self._session(connection, identity, stop)
        except InvalidStatus as refused:
            status = refused.response.status_code
            log.warning(
                "the connector refused the connection: HTTP %d %s",
                status,
                refused.response.body.decode(errors="replace").strip()
                if refused.response.body
                else "",
            )
            # only a refusal of this device waits the longest; a busy or restarting
            # connector (503, 502, ...) or a wrong path is retried with backoff and jitter
            return protocol.CloseCode.FORBIDDEN if status in (401, 403) else None
        except (OSError, InvalidURI, TimeoutError, ssl.SSLError, ConnectionClosed) as exc:
            log.warning("cannot connect to %s: %s", url, exc)
            return None

    async def _session(
        self, connection: ClientConnection, identity: Identity, stop: asyncio.Event
    ) -> int | None:
        """Speak the protocol on an open connection until the session closes (or ``stop`` is
        set); its close code. Each received text goes into the session, what the session
        queued goes out, then each event is handled."""
        base = self.applied[0] if self.applied and self.applied[1].ok else None
        session = protocol.AgentSession(
            identity.device_id, identity.device_token, __version__, base
        )
        self.session, self._connection = session, connection
        stopping = asyncio.create_task(stop.wait())
        try:
            session.hello()
            await self._flush()
            while session.closed is None:
                text = await _next_message(connection, stopping)
                if text is None:
                    session.close(protocol.CloseCode.NORMAL, "the agent stops")
                    await self._flush()
                    break
                events = session.receive(text)
                await self._flush()
                for event in events:
                    await self._handle(event, session, identity)
                await self._flush()
            closed = session.closed
            return closed.code if closed else None
        except ConnectionClosed as closed_by_peer:
            received = closed_by_peer.rcvd
            log.info("disconnected: %s", received or closed_by_peer)
            return received.code if received else None
        finally:
            self.session, self._connection = None, None
            stopping.cancel()
            if self._status_reports is not None:
                self._status_reports.cancel()
                self._status_reports = None

    async def _handle(
        self, event: protocol.AgentEvent, session: protocol.AgentSession, identity: Identity
    ) -> None:
        """What the agent does with one event of its session."""
        if isinstance(event, protocol.Welcomed):
            request = self._connection.request if self._connection else None
            log.info("connected to %s", request.path if request else "")
            self._status_reports = asyncio.create_task(
                self._report_status(event.settings.status_interval)
            )
        elif isinstance(event, protocol.DesiredReceived):
            await asyncio.to_thread(self._record_desired, event.bundle)
            log.info(
                "desired %s (%s, generation %d%s)",
                event.bundle.digest[:19],
                event.bundle.revision[:12],
                event.generation,
                ", delta" if event.delta else "",
            )
            self._to_apply = _Desired(session, event.generation, event.bundle)
            self._desired_arrived.set()
        elif isinstance(event, protocol.RenewRequested):
            self._renewal_key = enroll.new_key_pem()
            session.renew(enroll.make_csr(self._renewal_key, identity.name))
        elif isinstance(event, protocol.CertificateReceived):
            await self._renewed(event)
        elif isinstance(event, protocol.Closing):
            log.info("session closed: %d %s", event.code, event.reason)

    async def _flush(self) -> None:
        """Send what the session queued; close the connection once the session is closed."""
        session, connection = self.session, self._connection
        if session is None or connection is None:
            return
        for text in session.outgoing():
            await connection.send(text)
        if session.closed is not None:
            await connection.close(session.closed.code, session.closed.reason)

    async def _report_status(self, interval: int) -> None:
        """A status every ``interval`` seconds, for as long as the session lasts."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(interval)
                if self.session is None:
                    return
                self.session.status(summary={"resources": len(self.inventory)})
                await self._flush()

    async def _renewed(self, event: protocol.CertificateReceived) -> None:
        assert self.identity is not None
        if self._renewal_key is None:
            log.warning("a certificate arrived that was not asked for; ignored")
            return
        if not enroll.certifies(event.certificate_chain, self._renewal_key):
            # the answer to an earlier request, whose key a later request replaced
            log.warning("a certificate arrived for a key other than the newest; ignored")
            return
        renewed = replace(
            self.identity,
            key_pem=self._renewal_key,
            certificate_pem=event.certificate_chain.encode(),
            ca_pem=event.ca_bundle.encode(),
        )
        # key and certificate are replaced together: the store writes the identity at once
        await asyncio.to_thread(self.store.save, renewed)
        self.identity, self._renewal_key = renewed, None
        log.info("certificate renewed")

    # -- applying ----------------------------------------------------------------------------

    async def _apply_worker(self, stop: asyncio.Event) -> None:
        """Apply, one at a time in a thread, the newest desired state received; record and
        answer each result."""
        while not stop.is_set():
            await self._desired_arrived.wait()
            self._desired_arrived.clear()
            desired, self._to_apply = self._to_apply, None
            if desired is None:
                continue
            bundle = desired.bundle
            result = await asyncio.to_thread(self._apply, bundle)
            self.inventory = applier.inventory_after(self.inventory, result)
            await asyncio.to_thread(self._record, bundle, result)
            log.info(
                "applied %s: %s",
                bundle.digest[:19],
                "ok" if result.ok else f"failed ({result.error or 'see resources'})",
            )
            await self._answer(desired, result)

    def _apply(self, bundle: Bundle) -> ApplyResult:
        """The applier's result. An exception from the applier (what it did not foresee, or
        a bug) is a failed apply as well, reported as such, so that the agent goes on."""
        try:
            return self.applier.apply(bundle, self.inventory)
        except Exception as exc:
            hidden = applier_support.Redactor.for_documents(bundle.documents())
            error = f"the {self.applier.kind} applier failed: {type(exc).__name__}: {exc}"
            log.error("%s", hidden.clean(error))
            return ApplyResult(bundle.digest, error=hidden.clean(error))

    async def _answer(self, desired: _Desired, result: ApplyResult) -> None:
        """Tell the connector what an apply gave, in the session that asked for it."""
        session = self.session
        # offline: the next hello says what runs; a newer desired's applied answers this one
        if session is None or self._to_apply is not None:
            return
        if session is desired.session:
            session.applied(desired.generation, result)
        elif result.ok and session.applied_digest != desired.bundle.digest:
            # The session that asked ended during the apply. This one started from the
            # hello's digest, which is no longer what runs, and may never send the desired
            # state again (it was reverted meanwhile, say): start again with a true hello.
            log.info("what the device runs changed during a reconnect: reconnecting")
            session.close(protocol.CloseCode.NORMAL, "the applied state changed")
        else:
            return
        # now: the session loop sends only after it receives something
        with contextlib.suppress(ConnectionClosed):
            await self._flush()

    def _record(self, bundle: Bundle, result: ApplyResult) -> None:
        """Keep the inventory, and the bundle as applied when it applied (or is the first)."""
        remember = result.ok or self.applied is None
        if remember:
            self.applied = (bundle, result)
        try:
            self.state.save_inventory(self.inventory)
            if remember:
                self.state.save_applied(bundle, result)
        except StateError as exc:
            # the apply happened and is answered; only its record is lost (a full disk)
            log.error("%s; after a restart the agent may apply again or prune less", exc)

    def _record_desired(self, bundle: Bundle) -> None:
        try:
            self.state.save_desired(bundle)  # for people and tools to look at; never read
        except StateError as exc:
            log.error("%s", exc)

    # -- TLS ---------------------------------------------------------------------------------

    def _tls_context(self, identity: Identity) -> ssl.SSLContext:
        certificate, key = self._tls_files(identity)
        context = ssl.create_default_context(cadata=identity.ca_pem.decode())
        context.load_cert_chain(certificate, key)
        return context

    def _tls_files(self, identity: Identity) -> tuple[Path, Path]:
        if isinstance(self.store, DirectoryIdentity):
            return self.store.folder / "certificate.pem", self.store.folder / "key.pem"
        folder = self.config.state_dir / "tls"  # the identity lives in a Secret
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(folder / "certificate.pem", identity.certificate_pem, 0o600)
        write_atomically(folder / "key.pem", identity.key_pem, 0o600)
        return folder / "certificate.pem", folder / "key.pem"


class _Desired(NamedTuple):
    """A desired state received and not yet applied, with the session and generation that an
    ``applied`` must name."""

    session: protocol.AgentSession
    generation: int
    bundle: Bundle


async def _next_message(connection: ClientConnection, stopping: asyncio.Task[bool]) -> Data | None:
    """The next message received, or None once ``stopping`` is done (the agent stops)."""
    receiving = asyncio.create_task(connection.recv())
    done, _ = await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if stopping in done:
        receiving.cancel()
        return None
    return receiving.result()


def _applier(config: AgentConfig) -> applier.Applier:
    if config.applier == "directory":
        return applier.create("directory", root=config.manifests_dir)
    if config.applier == "podman":
        return applier.create("podman", root=config.state_dir / "podman", executable=config.podman)
    return applier.create(config.applier, executable=config.kubectl)


def identity_store(config: AgentConfig) -> IdentityStore:
    """Where the identity is kept: the Secret ``identity_secret`` names (``config.load`` checked
    it is NAMESPACE/NAME), else ``STATE-DIR/identity/``."""
    if config.identity_secret:
        namespace, _, name = config.identity_secret.partition("/")
        return SecretIdentity(config.kubectl or "kubectl", namespace, name)
    return DirectoryIdentity(config.state_dir / "identity")


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def _backoff(config: AgentConfig) -> Backoff:
    cap = config.max_reconnect_delay
    return Backoff(base=min(1.0, cap), cap=cap)
