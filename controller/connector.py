"""The connector: agents' WebSocket sessions over mutual TLS, the thin asyncio layer around
``rciots.agent.protocol.ConnectorSession``.

Position in the flow: desired table (reconcile) -> **connector** -> agents; agents' applied and
status -> **connector** -> observed state (status branch, status page). The connector knows
the rest of the controller only through ``Devices`` (registry, access, desired bundles,
certificate renewal, observations), so that it could run as a process of its own.

Who gets in, in the order it is checked:

1. TLS: a client certificate is required and must chain to our root (through the device CA,
   with the clientAuth usage: OpenSSL checks it during the handshake, expiry included).
2. Before the WebSocket upgrade (``_admit``): the certificate names a device of ours, issued by
   our device CA, registered with this id and tenant, and is that registration's current (or,
   during a renewal, previous) certificate; the device is not denied (disabled, not approved,
   tenant disabled); the path is ``/v1/connect``; the address has fewer than the allowed
   number of connections still waiting for their hello. Refusals are HTTP 403 (or 503).
3. The hello: within ``hello_timeout``, naming the certificate's device (4401 otherwise),
   the checks of 2. again, since a reconcile pass may have denied the device meanwhile (4403
   otherwise), with the device token whose hash the registry holds (4401 otherwise, compared
   in constant time).

Then: one session per device (a newer one closes the older with 4409); the desired bundle is
pushed when the agent's digest differs; every change of the desired table is pushed (a delta
when smaller); ``applied`` and ``status`` become observations; a certificate past two thirds of
its lifetime is renewed; a device that is denied or removed is closed with 4403 within the
reconcile pass that decided it.

Memory (bench/connector.py measures it): asyncio's TLS transport reserves a 256 KiB receive
buffer per connection (``asyncio.sslproto.SSLProtocol.max_size``); ``start`` lowers it to
``TLS_BUFFER`` (16 KiB) for the process. permessage-deflate runs without context takeover
either way, so an idle connection holds no compressor (~45 KB with websockets' defaults). An
idle agent then costs the connector's process about 70 KB.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import hmac
import logging
import ssl
import uuid
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Protocol

from cryptography import x509
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request, Response

from rciots.agent import protocol
from rciots.agent.bundle import ApplyResult, Bundle
from rciots.controller import ca, registry, tokens

__all__ = [
    "PATH",
    "TLS_BUFFER",
    "Connector",
    "ConnectorSettings",
    "Counters",
    "Devices",
    "server_context",
]

log = logging.getLogger(__name__)

PATH = "/v1/connect"
TLS_BUFFER = 16 * 1024  # asyncio's TLS read buffer per connection (its default: 256 KiB)
_RENEW_AFTER = 2 / 3  # of a certificate's lifetime


@dataclass(frozen=True)
class ConnectorSettings:
    listen: tuple[str, int] | None = None  # None: no connector
    status_interval: int = 30  # seconds between an agent's status messages
    hello_timeout: float = 10.0  # from TCP accept to hello, TLS and upgrade included
    max_message_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES
    max_waiting_per_address: int = 64  # connections not yet past hello, per client address
    ping_interval: float = 20.0
    ping_timeout: float = 20.0


class Devices(Protocol):
    """What the connector needs of the rest of the controller; called on the event loop,
    but for ``renew``, which is called in a worker thread."""

    def registration(self, device_id: str) -> registry.Registration | None: ...
    def denied(self, device_id: str) -> str | None: ...
    def desired(self, key: tuple[str, str]) -> Bundle | None: ...
    def renew(self, registration: registry.Registration, csr_pem: str) -> tuple[str, str]: ...
    def connected(self, key: tuple[str, str], applied_digest: str | None) -> None: ...
    def disconnected(self, key: tuple[str, str]) -> None: ...
    def applied(self, key: tuple[str, str], bundle: Bundle, result: ApplyResult) -> None: ...
    def seen(self, key: tuple[str, str]) -> None: ...


def server_context(certificate: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """TLS for the connector: our server certificate, client certificates required and checked
    against ``client_ca`` (the root)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, key)
    context.load_verify_locations(client_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass
class Counters:
    """What the connector sent, for metrics (plain numbers: one event loop changes them)."""

    pushes: int = 0  # desired states pushed (full or delta)
    messages_sent: int = 0
    bytes_sent: int = 0  # of the messages' text, before compression


@dataclass(frozen=True)
class _Admitted:
    """What a connection's client certificate proved, checked once (parsed and its signature
    verified) before the upgrade, for the session that follows; the certificate itself is not
    kept (a few KB per connection)."""

    tenant: str
    device_id: str
    serial: str
    renew_at: datetime


class _Session:
    """One agent's connection: the protocol session, and a lock so that what is sent on it
    keeps the session's order."""

    def __init__(
        self,
        connection: ServerConnection,
        session: protocol.ConnectorSession,
        registration: registry.Registration,
        admitted: _Admitted,
        counters: Counters,
    ) -> None:
        self.connection = connection
        self.counters = counters
        self.protocol = session
        self.registration = registration
        self.admitted = admitted  # what the certificate it came with proved
        self.renew_at = admitted.renew_at  # when that certificate is due for renewal
        self.lock = asyncio.Lock()
        self.renewal_asked = False  # once per session: the connection keeps its certificate

    @property
    def key(self) -> tuple[str, str]:
        return self.registration.key

    async def flush(self) -> None:
        for text in self.protocol.outgoing():
            await self.connection.send(text)
            self.counters.messages_sent += 1
            # an ASCII str is its own UTF-8 (the usual case): no encoding just to count
            self.counters.bytes_sent += len(text) if text.isascii() else len(text.encode())
        closed = self.protocol.closed
        if closed is not None:
            await self.connection.close(closed.code, closed.reason)


class Connector:
    """``await connector.start()``; ``push_changed(keys)`` after each reconcile pass;
    ``enforce()`` after each access decision; ``await connector.stop()``."""

    def __init__(
        self,
        settings: ConnectorSettings,
        authority: ca.Authority,
        tls: ssl.SSLContext,
        devices: Devices,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.authority = authority
        self.tls = tls
        self.devices = devices
        self.clock = clock
        self.sessions: dict[str, _Session] = {}  # device id -> its current session
        self._waiting: dict[str, int] = {}  # address -> connections not yet past hello
        # what _admit found, for _serve (gone with the connection, should _serve never run)
        self._admitted: weakref.WeakKeyDictionary[ServerConnection, _Admitted] = (
            weakref.WeakKeyDictionary()
        )
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # closings of replaced sessions
        self.counters = Counters()

    async def start(self) -> None:
        assert self.settings.listen is not None
        # see the module docstring: 256 KiB of buffer per TLS connection is most of its memory
        asyncio.sslproto.SSLProtocol.max_size = TLS_BUFFER
        host, port = self.settings.listen
        self._server = await serve(
            self._serve,
            host,
            port,
            ssl=self.tls,
            process_request=self._admit,
            open_timeout=self.settings.hello_timeout,
            ping_interval=self.settings.ping_interval,
            ping_timeout=self.settings.ping_timeout,
            max_size=self.settings.max_message_bytes,
            max_queue=4,
            compression=None,  # the extension below, instead of websockets' default one
            extensions=[_deflate()],
            server_header=None,
            logger=log,
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        for sock in self._server.sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("the connector has no listening socket")

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close(close_connections=False)
        sessions = list(self.sessions.values())
        await asyncio.gather(
            *(self._close(s, protocol.CloseCode.GOING_AWAY, "restarting") for s in sessions),
            return_exceptions=True,
        )
        self._server.close()
        await self._server.wait_closed()

    # -- admission -------------------------------------------------------------------------

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        address = _address(connection)
        if request.path != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, f"the connector is at {PATH}\n")
        certificate = _peer_certificate(connection)
        if certificate is None:
            return connection.respond(HTTPStatus.FORBIDDEN, "a client certificate is required\n")
        checked = self._check_certificate(certificate)
        refusal = checked if isinstance(checked, str) else self._check_registration(checked)
        if isinstance(refusal, str):
            log.info("connection from %s refused: %s", address, refusal)
            return connection.respond(HTTPStatus.FORBIDDEN, refusal + "\n")
        if self._waiting.get(address, 0) >= self.settings.max_waiting_per_address:
            log.warning("connection from %s refused: too many waiting for their hello", address)
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        assert isinstance(checked, _Admitted)
        self._admitted[connection] = checked
        return None

    def _check_certificate(self, certificate: x509.Certificate) -> str | _Admitted:
        """What the certificate proves (a device of ours, signed by our device CA), or why it
        proves nothing."""
        identity = ca.device_identity(certificate)
        if identity is None or certificate.issuer != self.authority.device_ca.subject:
            return "the certificate names no device of ours"
        try:
            certificate.verify_directly_issued_by(self.authority.device_ca)
        except Exception:  # any failure means: not ours
            return "the certificate is not signed by our device CA"
        start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        return _Admitted(
            tenant=identity[0],
            device_id=identity[1],
            serial=format(certificate.serial_number, "x"),
            renew_at=start + (end - start) * _RENEW_AFTER,
        )

    def _check_registration(self, admitted: _Admitted) -> str | registry.Registration:
        """The registration the certificate is of, or why it gets none."""
        device_id = admitted.device_id
        found = self.devices.registration(device_id)
        if found is None or found.tenant != admitted.tenant:
            return f"device {device_id} is not registered (removed?)"
        if admitted.serial not in (found.certificate_serial, found.previous_certificate_serial):
            return f"the certificate {admitted.serial} of {device_id} was replaced by a newer one"
        why = self.devices.denied(device_id)
        if why is not None:
            return why
        return found

    # -- sessions ----------------------------------------------------------------------------

    async def _serve(self, connection: ServerConnection) -> None:
        address = _address(connection)
        admitted = self._admitted.pop(connection, None)
        registration = self._check_registration(admitted) if admitted else None
        if admitted is None or not isinstance(registration, registry.Registration):
            await connection.close(protocol.CloseCode.FORBIDDEN, "not admitted")
            return  # admitted a moment ago, refused now: removed meanwhile
        self._waiting[address] = self._waiting.get(address, 0) + 1
        session = _Session(
            connection,
            protocol.ConnectorSession(
                registration.device_id, max_message_bytes=self.settings.max_message_bytes
            ),
            registration,
            admitted,
            self.counters,
        )
        accepted = False
        try:
            async with asyncio.timeout(self.settings.hello_timeout):
                while not accepted and session.protocol.closed is None:
                    text = await connection.recv()
                    accepted = await self._handle(session, text)
            if accepted:
                self._release(address)
                address = ""
                async for text in connection:
                    await self._handle(session, text)
                    if session.protocol.closed is not None:
                        break
        except TimeoutError:
            session.protocol.close(protocol.CloseCode.HELLO_TIMEOUT, "no hello in time")
            with contextlib.suppress(ConnectionClosed):
                await session.flush()
        except ConnectionClosed:
            pass
        finally:
            if address:
                self._release(address)
            if self.sessions.get(registration.device_id) is session:
                del self.sessions[registration.device_id]
                self.devices.disconnected(session.key)
                log.info("%s/%s disconnected", *session.key)

    def _release(self, address: str) -> None:
        left = self._waiting.get(address, 1) - 1
        if left > 0:
            self._waiting[address] = left
        else:
            self._waiting.pop(address, None)

    async def _handle(self, session: _Session, text: str | bytes) -> bool:
        """Feed one received message; True when it was a hello that got accepted."""
        accepted = False
        async with session.lock:
            events = session.protocol.receive(text)
            await session.flush()
            for event in events:
                if isinstance(event, protocol.HelloReceived):
                    accepted = await self._on_hello(session, event)
                elif isinstance(event, protocol.AppliedReceived):
                    self.devices.applied(session.key, event.bundle, event.result)
                elif isinstance(event, protocol.StatusReceived):
                    self.devices.seen(session.key)
                    self._renew_if_due(session)  # sessions may outlast two thirds
                elif isinstance(event, protocol.CsrReceived):
                    await self._on_csr(session, event)
                elif isinstance(event, protocol.Closing) and session.protocol.failure:
                    log.info("%s/%s: session closed: %s", *session.key, session.protocol.failure)
            await session.flush()
        return accepted

    async def _on_hello(self, session: _Session, hello: protocol.HelloReceived) -> bool:
        # Checked again: the hello comes up to hello_timeout after the upgrade, and a reconcile
        # pass meanwhile (disabled, removed, renewed twice) closes only the sessions it sees.
        registration = self._check_registration(session.admitted)
        if isinstance(registration, str):
            log.info("%s/%s refused at its hello: %s", *session.key, registration)
            session.protocol.close(protocol.CloseCode.FORBIDDEN, registration)
            return False
        presented = tokens.hash_token(hello.device_token).encode()
        if not hmac.compare_digest(presented, registration.device_token_hash.encode()):
            session.protocol.close(protocol.CloseCode.UNAUTHORIZED, "wrong device token")
            return False
        session.registration = registration
        desired = self.devices.desired(session.key)
        base = desired if desired is not None and desired.digest == hello.applied_digest else None
        session.protocol.accept(
            self.settings.status_interval, session_id=uuid.uuid4().hex[:16], base=base
        )
        older = self.sessions.get(registration.device_id)
        self.sessions[registration.device_id] = session
        if older is not None:
            task = asyncio.create_task(
                self._close(older, protocol.CloseCode.REPLACED, "replaced by a newer session")
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.devices.connected(session.key, hello.applied_digest)
        log.info(
            "%s/%s connected (agent %s) from %s",
            *session.key,
            hello.agent_version,
            _address(session.connection),
        )
        if desired is not None and desired.digest != session.protocol.target_digest:
            self._push(session, desired)
        self._renew_if_due(session)
        return True

    def _push(self, session: _Session, bundle: Bundle) -> None:
        try:
            session.protocol.push(bundle)
            self.counters.pushes += 1
        except protocol.MessageTooLarge as exc:
            log.error("%s/%s: desired state not sent: %s", *session.key, exc)

    def _renew_if_due(self, session: _Session) -> None:
        if not session.renewal_asked and self.clock() >= session.renew_at:
            session.renewal_asked = True
            session.protocol.request_renewal()

    async def _on_csr(self, session: _Session, event: protocol.CsrReceived) -> None:
        try:
            # in a worker thread: signing and the registry's synchronous write would hold up
            # every other session (a fleet enrolled in one go renews in one go, too)
            chain, bundle = await asyncio.to_thread(
                self.devices.renew, session.registration, event.csr
            )
        except (ca.CsrRejected, ValueError) as exc:
            session.protocol.close(protocol.CloseCode.PROTOCOL_ERROR, f"renewal refused: {exc}")
            return
        session.protocol.certificate(chain, bundle)
        log.info("%s/%s: certificate renewed", *session.key)

    async def _close(self, session: _Session, code: int, reason: str) -> None:
        async with session.lock:
            session.protocol.close(code, reason)
            with contextlib.suppress(ConnectionClosed):
                await session.flush()

    # -- from the reconcile loop --------------------------------------------------------------

    async def push_changed(self, keys: Collection[tuple[str, str]]) -> None:
        """Push the desired state of the devices in ``keys`` to those connected."""
        wanted = set(keys)
        targets = [s for s in self.sessions.values() if s.key in wanted]
        await asyncio.gather(*(self._push_latest(s) for s in targets), return_exceptions=True)

    async def _push_latest(self, session: _Session) -> None:
        async with session.lock:
            desired = self.devices.desired(session.key)
            if desired is None or session.protocol.closed is not None:
                return
            if desired.digest != session.protocol.target_digest:
                self._push(session, desired)
            with contextlib.suppress(ConnectionClosed):
                await session.flush()

    async def enforce(self) -> None:
        """Close the sessions of devices that may no longer connect."""
        closing = []
        for device_id, session in list(self.sessions.items()):
            registration = self.devices.registration(device_id)
            why = "removed" if registration is None else self.devices.denied(device_id)
            if why is not None:
                log.info("%s/%s: closing its session: %s", *session.key, why)
                closing.append(self._close(session, protocol.CloseCode.FORBIDDEN, why))
        await asyncio.gather(*closing, return_exceptions=True)


def _deflate() -> ServerPerMessageDeflateFactory:
    """permessage-deflate with websockets' default windows (4 KiB) and memory level, but
    without context takeover either way: each message is compressed on its own, so an idle
    connection keeps no compressor or decompressor (~45 KB with them). Messages here do not
    repeat one another much; a full desired state still shrinks about five times."""
    return ServerPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=12,
        client_max_window_bits=12,
        compress_settings={"memLevel": 5},
    )


def _address(connection: ServerConnection) -> str:
    remote = connection.remote_address
    return str(remote[0]) if remote else "unknown"


def _peer_certificate(connection: ServerConnection) -> x509.Certificate | None:
    ssl_object = connection.transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None
