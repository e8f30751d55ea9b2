"""The wire protocol between an agent and the connector (version 1), sans-I/O.

Position in the flow::

    reconcile ─► connector I/O ─► ConnectorSession ══ WSS ══ AgentSession ─► agent loop ─► applier
                 (asyncio)          (this module)      JSON    (this module)    (asyncio)

Both sides import this module; the agent package depends on nothing of the controller. A
session is a state machine fed with received text: ``receive(text)`` returns events, and every
text the session wants sent (replies included) waits in ``outgoing()``. There are no sockets,
clocks, randomness or loops here. The I/O layer does four things in a loop: feed each received
text to ``receive``, send what ``outgoing()`` returns, handle each event, and close the
WebSocket with ``closed.code`` and ``closed.reason`` once ``closed`` is set::

    events = session.receive(text)          # never raises on bad input
    for reply in session.outgoing():
        await websocket.send(reply)
    if session.closed:
        await websocket.close(session.closed.code, session.closed.reason)
    for event in events: ...                # may call push(), applied(), ... then send again

Message flow (every message is a JSON object with ``type``; the first each way has
``protocol: 1``; docs/protocol.md is the reference, schemas/protocol-*.schema.json the schemas)::

    agent (AgentSession)                                    connector (ConnectorSession)
    hello() ── hello {deviceId, deviceToken, ...} ────────► HelloReceived: check the token
            ◄─ welcome {statusInterval, maxMessageBytes} ── accept()  (or close(4401, ...))
    Welcomed
            ◄─ desired {generation 1, manifests, resources} push(bundle)
    DesiredReceived: apply
    applied() ─ applied {generation 1, digest, ok, ...} ──► AppliedReceived  (ok: the new base)
            ◄─ desired {generation 2, baseDigest, patch} ── push(bundle): a delta when smaller
    DesiredReceived (rebuilt, digest checked) ... applied() ──►
    (a delta it cannot use) ── resync {generation} ────────► ResyncRequested; re-push
    status() ── status {appliedDigest, summary} ──────────► StatusReceived
            ◄─ renew ───────────────────────────────────── request_renewal()
    RenewRequested
    renew(csr) ── renew {csr} ────────────────────────────► CsrReceived: sign it
            ◄─ certificate {certificateChain, caBundle} ── certificate()
    CertificateReceived
    either side: error {code, message}, then the WebSocket closes with that code

The delta base, the same on both sides: before any ``applied`` with ``ok`` true in the session,
the bundle whose digest the hello reported as ``appliedDigest`` (the connector uses it only when
its I/O layer hands that bundle to ``accept``); after, the bundle of the latest ``applied`` with
``ok`` true. The connector diffs only against its current base and names it in ``baseDigest``;
the agent keeps its last ``KEPT_BASES`` bases, so a delta that crossed an ``applied`` on the
wire still finds its base. A delta whose base the agent lacks, that does not apply, or whose
result does not match its digest is answered with ``resync``, never applied.

Errors (one tree)::

    ProtocolError            base of everything this module raises or records
    ├── PeerViolation        the peer broke the protocol: recorded in ``session.failure`` and
    │                        turned into a close; never raised out of ``receive``
    ├── SessionError         a method called in a state or with arguments the session does not
    │                        allow: a bug in the caller
    ├── MessageTooLarge      push(): the desired message exceeds what the agent accepts
    └── DeltaError           apply_delta(): a patch that does not rebuild the bundle

Once closed, a session ignores received text and every method does nothing.
"""

from __future__ import annotations

import difflib
import enum
import json
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar, get_args

import jsonpatch

from rciots.agent.bundle import (
    ApplyResult,
    Bundle,
    BundleError,
    ResourceAction,
    ResourceId,
    ResourceResult,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "KEPT_BASES",
    "KEPT_PUSHED",
    "KEPT_RECEIVED",
    "MAX_COUNT",
    "MAX_ERROR_TEXT",
    "MAX_GENERATION",
    "MAX_MAX_MESSAGE_BYTES",
    "MAX_PEM",
    "MAX_RESOURCES",
    "MAX_RESULTS",
    "MAX_RESULT_MESSAGE",
    "MAX_STATUS_ENTRIES",
    "MAX_STATUS_INTERVAL",
    "MAX_SYSTEM_VALUE",
    "MIN_MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "AgentEvent",
    "AgentSession",
    "AppliedReceived",
    "CertificateReceived",
    "CloseCode",
    "Closing",
    "ConnectorEvent",
    "ConnectorSession",
    "CsrReceived",
    "DeltaError",
    "DesiredReceived",
    "ErrorReceived",
    "HelloReceived",
    "MessageTooLarge",
    "PeerViolation",
    "ProtocolError",
    "RenewRequested",
    "ResyncRequested",
    "ResyncSent",
    "SessionError",
    "SessionState",
    "Settings",
    "StatusReceived",
    "Welcomed",
    "apply_delta",
    "bundle_document",
    "diff_bundles",
    "split_lines",
]

PROTOCOL_VERSION = 1

# Limits of version 1, the same in the schemas: a peer that exceeds one breaks the protocol.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # the largest received text a session accepts
MIN_MAX_MESSAGE_BYTES = 64 * 1024  # a peer must accept at least this much (status, applied fit)
MAX_MAX_MESSAGE_BYTES = 1024 * 1024 * 1024
MAX_RESOURCES = 10_000  # resource ids in one desired
MAX_RESULTS = 1_000  # per-resource results in one applied; the rest are counted in `omitted`
MAX_RESULT_MESSAGE = 1_000  # characters of one result's message (longer ones are cut)
MAX_ERROR_TEXT = 4_000  # characters of applied.error, error.message and resync.reason
MAX_PEM = 64 * 1024  # characters of a CSR, a certificate chain or a CA bundle
MAX_STATUS_ENTRIES = 32  # entries in status.summary and in status.system
MAX_SYSTEM_VALUE = 256  # characters of one status.system value
MAX_GENERATION = 2**53 - 1  # the largest integer every JSON implementation keeps exact
MAX_COUNT = 2**31 - 1
MAX_STATUS_INTERVAL = 86_400
KEPT_BASES = 4  # bundles the agent keeps as delta bases
KEPT_RECEIVED = 8  # desired bundles the agent keeps until it answers them with applied
# Desired the connector keeps until answered: far more than an agent ever answers (it answers
# only its last KEPT_RECEIVED), yet an agent that never answers cannot pin every bundle.
KEPT_PUSHED = 32
# Above this product of the changed regions' lengths the sequence matcher is skipped and the
# region replaced whole: still a correct patch (usually larger than the full state, so the full
# state is sent), and a diff never costs more than some tens of milliseconds.
_MATCH_BUDGET = 4_000_000
_CLOSE_REASON_BYTES = 123  # what a WebSocket close frame has room for

_PRINTABLE = re.compile(r"[!-~]+")  # printable ASCII without space: ids, versions, tokens
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON escapes can smuggle these in; UTF-8 cannot
_CSR_HEADER = "-----BEGIN CERTIFICATE REQUEST-----"
_CERTIFICATE_HEADER = "-----BEGIN CERTIFICATE-----"
_PATCH_PATH = re.compile(r"/(lines|resources)/(0|[1-9][0-9]*|-)")
_ACTIONS: tuple[str, ...] = get_args(ResourceAction)


class CloseCode(enum.IntEnum):
    """Why a session ended: the WebSocket close code, sent after an ``error`` message."""

    NORMAL = 1000  # ended on purpose (the agent stops)
    GOING_AWAY = 1001  # the connector shuts down or restarts: reconnect
    TOO_BIG = 1009  # a message larger than the receiver's maxMessageBytes
    INTERNAL_ERROR = 1011  # the closing side failed unexpectedly (a bug): reconnect later
    PROTOCOL_ERROR = 4400  # malformed, unknown, out-of-order or inconsistent message
    UNAUTHORIZED = 4401  # hello does not match the certificate, or the device token is wrong
    FORBIDDEN = 4403  # the device is revoked, disabled or removed
    HELLO_TIMEOUT = 4408  # no hello in time after the connection opened
    REPLACED = 4409  # a newer session of the same device took over


class SessionState(enum.Enum):
    HANDSHAKE = "handshake"  # before welcome: hello not yet sent or received, or not answered
    OPEN = "open"
    CLOSED = "closed"


# Errors


class ProtocolError(Exception):
    """Base of the errors this module raises or records."""


class PeerViolation(ProtocolError):
    """The peer's message broke the protocol; the session closes with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class SessionError(ProtocolError):
    """A method was called in a state or with arguments the session does not allow."""


class MessageTooLarge(ProtocolError):
    """The desired message would exceed the agent's maxMessageBytes."""


class DeltaError(ProtocolError):
    """A delta that does not turn its base into the announced bundle."""


# Events


@dataclass(frozen=True)
class Closing:
    """The session closed: close the WebSocket with this code and reason (also
    ``session.closed``). ``reason`` fits a close frame; the ``error`` message before it has
    the whole text."""

    code: int
    reason: str


@dataclass(frozen=True)
class ErrorReceived:
    """The peer explains why it is about to close the connection with ``code``."""

    code: int
    message: str


@dataclass(frozen=True)
class HelloReceived:
    """An agent introduced itself. Check ``device_token`` against the registry, then call
    ``accept`` or ``close(CloseCode.UNAUTHORIZED, ...)``. The token is kept out of repr."""

    device_id: str
    device_token: str = field(repr=False)
    agent_version: str
    applied_digest: str | None
    max_message_bytes: int


@dataclass(frozen=True)
class AppliedReceived:
    """The agent applied ``bundle`` (pushed as ``generation``); ``omitted`` results did not fit
    the message (failures are kept first)."""

    generation: int
    bundle: Bundle
    result: ApplyResult
    omitted: int = 0


@dataclass(frozen=True)
class StatusReceived:
    applied_digest: str | None
    summary: dict[str, int]
    system: dict[str, str]


@dataclass(frozen=True)
class CsrReceived:
    """The agent asks for a new certificate (asked or not): answer with ``certificate``."""

    csr: str


@dataclass(frozen=True)
class ResyncRequested:
    """The agent could not use the delta of ``generation``; the session has already queued the
    full state when that generation was the latest pushed."""

    generation: int
    reason: str


@dataclass(frozen=True)
class Settings:
    """What the connector tells the agent in ``welcome``."""

    status_interval: int  # seconds between two status messages
    max_message_bytes: int  # the largest message the connector accepts
    session_id: str | None = None  # for logs on both sides


@dataclass(frozen=True)
class Welcomed:
    settings: Settings


@dataclass(frozen=True)
class DesiredReceived:
    """A checked bundle to apply; answer with ``applied(generation, result)``. A newer desired
    may arrive first: applying only the newest and answering that one is fine."""

    generation: int
    bundle: Bundle
    delta: bool  # it came as a patch (for logs and metrics)


@dataclass(frozen=True)
class ResyncSent:
    """The delta of ``generation`` was unusable; the session asked for the full state."""

    generation: int
    reason: str


@dataclass(frozen=True)
class RenewRequested:
    """The connector asks for a CSR: make a key and call ``renew(csr)``."""


@dataclass(frozen=True)
class CertificateReceived:
    certificate_chain: str
    ca_bundle: str


ConnectorEvent = (
    HelloReceived
    | AppliedReceived
    | StatusReceived
    | CsrReceived
    | ResyncRequested
    | ErrorReceived
    | Closing
)
AgentEvent = (
    Welcomed
    | DesiredReceived
    | ResyncSent
    | RenewRequested
    | CertificateReceived
    | ErrorReceived
    | Closing
)


# Deltas: the JSON form of a bundle, the diff the connector sends, the patch the agent applies


def split_lines(text: str) -> list[str]:
    """``text`` cut after every ``\\n`` (only that: the rule must be the same in every
    implementation); joining the pieces gives ``text`` back byte for byte."""
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def bundle_document(bundle: Bundle) -> dict[str, Any]:
    """The JSON document a delta patches: the manifests' lines and the resource ids, so a
    one-line change in a large bundle is one small operation."""
    return {
        "lines": split_lines(bundle.manifests),
        "resources": [resource.to_json() for resource in bundle.resources],
    }


_Item = TypeVar("_Item", bound=Hashable)


def _diff_list(
    name: str, old: Sequence[_Item], new: Sequence[_Item], value: Callable[[_Item], Any]
) -> list[dict[str, Any]]:
    # The common head and tail are cut first: they are usually nearly everything, and comparing
    # them item by item is far cheaper than a sequence matcher over the whole list.
    start = 0
    shortest = min(len(old), len(new))
    while start < shortest and old[start] == new[start]:
        start += 1
    old_end, new_end = len(old), len(new)
    while old_end > start and new_end > start and old[old_end - 1] == new[new_end - 1]:
        old_end -= 1
        new_end -= 1
    old_middle, new_middle = old[start:old_end], new[start:new_end]
    if len(old_middle) * len(new_middle) <= _MATCH_BUDGET:
        matcher = difflib.SequenceMatcher(None, old_middle, new_middle, autojunk=False)
        opcodes = matcher.get_opcodes()
    else:
        opcodes = [("replace", 0, len(old_middle), 0, len(new_middle))]
    operations: list[dict[str, Any]] = []
    # From the end backwards, so that each operation's index is still the base's index.
    for tag, i1, i2, j1, j2 in reversed(opcodes):
        if tag == "equal":
            continue
        at, first_new = start + i1, start + j1
        common = min(i2 - i1, j2 - j1)
        for k in range(common):
            path = f"/{name}/{at + k}"
            operations.append({"op": "replace", "path": path, "value": value(new[first_new + k])})
        for _ in range(i2 - i1 - common):
            operations.append({"op": "remove", "path": f"/{name}/{at + common}"})
        for k in range(common, j2 - j1):
            path = f"/{name}/{at + k}"
            operations.append({"op": "add", "path": path, "value": value(new[first_new + k])})
    return operations


def diff_bundles(base: Bundle, target: Bundle) -> list[dict[str, Any]]:
    """The JSON Patch (RFC 6902; only add, remove and replace of ``/lines/N`` and
    ``/resources/N``) that turns ``bundle_document(base)`` into ``bundle_document(target)``."""
    return _diff_list(
        "resources", base.resources, target.resources, ResourceId.to_json
    ) + _diff_list("lines", split_lines(base.manifests), split_lines(target.manifests), str)


def apply_delta(base: Bundle, patch: list[dict[str, Any]], revision: str, digest: str) -> Bundle:
    """The bundle ``patch`` makes of ``base``, checked against ``digest``; DeltaError when the
    patch does not apply or does not give that digest. Messages never quote manifest text (it
    may hold secrets)."""
    document = bundle_document(base)
    try:
        jsonpatch.apply_patch(document, patch, in_place=True)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise DeltaError(f"the patch does not apply to base {base.digest}") from exc
    lines, resources = document["lines"], document["resources"]
    if not all(isinstance(line, str) for line in lines):
        raise DeltaError("the patch puts a non-string into lines")
    try:
        ids = tuple(_resource_id(item, f"resources[{i}]") for i, item in enumerate(resources))
    except PeerViolation as exc:
        raise DeltaError(f"the patched {exc.reason}") from exc
    bundle = Bundle(revision, digest, "".join(lines), ids)
    try:
        bundle.check()
    except BundleError as exc:
        raise DeltaError(f"the patched bundle is wrong: {exc}") from exc
    return bundle


# Reading received messages: hand-written checks that mirror schemas/protocol-*.schema.json


def _violation(reason: str, code: int = CloseCode.PROTOCOL_ERROR) -> NoReturn:
    raise PeerViolation(code, reason)


def _integer(value: object) -> int | None:
    # JSON does not tell 1 from 1.0, nor do the schemas' "integer"; a boolean is no number.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _string_ok(value: str) -> bool:
    return value.isascii() or _SURROGATE.search(value) is None


class _Reader:
    """Typed access to one received message's fields. A wrong field is a PeerViolation that
    names the field and the rule, never the value: a value may be a secret (the token)."""

    def __init__(self, message: dict[str, Any], kind: str) -> None:
        self.message = message
        self.kind = kind

    def fail(self, key: str, rule: str) -> NoReturn:
        _violation(f"{self.kind}: '{key}' {rule}")

    def text(
        self,
        key: str,
        max_length: int | None = None,
        pattern: re.Pattern[str] | None = None,
        what: str = "text",
        min_length: int = 1,
    ) -> str:
        if key not in self.message:
            self.fail(key, "is missing")
        return self._check_text(key, self.message[key], max_length, pattern, what, min_length)

    def nullable_text(
        self,
        key: str,
        max_length: int | None = None,
        pattern: re.Pattern[str] | None = None,
        what: str = "text",
        min_length: int = 1,
    ) -> str | None:
        """A string or null; the key must be there (with null for none)."""
        if key not in self.message:
            self.fail(key, "is missing (null when there is none)")
        value = self.message[key]
        if value is None:
            return None
        return self._check_text(key, value, max_length, pattern, what, min_length)

    def _check_text(
        self,
        key: str,
        value: object,
        max_length: int | None,
        pattern: re.Pattern[str] | None,
        what: str,
        min_length: int,
    ) -> str:
        if not isinstance(value, str) or not _string_ok(value):
            self.fail(key, f"must be {what}")
        if len(value) < min_length or (max_length is not None and len(value) > max_length):
            if max_length is None:
                size = f"at least {min_length}"
            else:
                size = f"at most {max_length}" if min_length == 0 else f"1 to {max_length}"
            self.fail(key, f"must be {what} of {size} characters")
        if pattern is not None and pattern.fullmatch(value) is None:
            self.fail(key, f"must be {what}")
        return value

    def integer(self, key: str, minimum: int, maximum: int) -> int:
        if key not in self.message:
            self.fail(key, "is missing")
        number = _integer(self.message[key])
        if number is None or not minimum <= number <= maximum:
            self.fail(key, f"must be a whole number from {minimum} to {maximum}")
        return number

    def boolean(self, key: str) -> bool:
        value = self.message.get(key)
        if not isinstance(value, bool):
            self.fail(key, "must be true or false")
        return value

    def array(self, key: str, max_items: int | None = None) -> list[Any]:
        value = self.message.get(key)
        if not isinstance(value, list):
            self.fail(key, "must be a list")
        if max_items is not None and len(value) > max_items:
            self.fail(key, f"must have at most {max_items} items")
        return value

    def maybe_object(self, key: str, max_entries: int) -> dict[str, Any]:
        value = self.message.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, "must be an object")
        if len(value) > max_entries:
            self.fail(key, f"must have at most {max_entries} entries")
        for name in value:
            if _KEY.fullmatch(name) is None:
                self.fail(key, "has a key that is not 1 to 63 letters, digits, '.', '_' or '-'")
        return value


_DIGEST_WHAT = "a digest ('sha256:' and 64 lowercase hex digits)"
_PRINTABLE_WHAT = "printable ASCII without spaces"


def _resource_id(value: object, where: str) -> ResourceId:
    if not isinstance(value, dict):
        _violation(f"{where} must be an object")
    reader = _Reader(value, where)
    api_version = reader.text("apiVersion", 317, _PRINTABLE, _PRINTABLE_WHAT)
    kind = reader.text("kind", 253, _PRINTABLE, _PRINTABLE_WHAT)
    name = reader.text("name", 253, _PRINTABLE, _PRINTABLE_WHAT)
    namespace = None
    if "namespace" in value:
        namespace = reader.text("namespace", 253, _PRINTABLE, _PRINTABLE_WHAT)
    return ResourceId(api_version, kind, name, namespace)


def _resource_result(value: object, where: str) -> ResourceResult:
    if not isinstance(value, dict):
        _violation(f"{where} must be an object")
    reader = _Reader(value, where)
    resource = _resource_id(value.get("resource"), f"{where}.resource")
    action = value.get("action")
    if action not in _ACTIONS:
        reader.fail("action", f"must be one of {', '.join(_ACTIONS)}")
    message = reader.text("message", MAX_RESULT_MESSAGE, min_length=0)
    return ResourceResult(resource, action, message)


def _patch(items: list[Any]) -> list[dict[str, Any]]:
    # Only what diff_bundles makes: add, remove and replace of one line or one resource id.
    # That bounds what a patch can do to the agent's memory (no copy or move of whole lists).
    for i, operation in enumerate(items):
        where = f"desired: patch[{i}]"
        if not isinstance(operation, dict):
            _violation(f"{where} must be an object")
        op, path = operation.get("op"), operation.get("path")
        if op not in ("add", "remove", "replace"):
            _violation(f"{where}: 'op' must be add, remove or replace")
        found = _PATCH_PATH.fullmatch(path) if isinstance(path, str) else None
        if found is None:
            _violation(f"{where}: 'path' must be /lines/N or /resources/N (N a number or -)")
        if op == "remove":
            continue
        if "value" not in operation:
            _violation(f"{where}: 'value' is missing")
        value = operation["value"]
        if found.group(1) == "lines":
            if not isinstance(value, str) or not _string_ok(value):
                _violation(f"{where}: 'value' must be text")
        else:
            _resource_id(value, f"{where}.value")
    return items


def _decode(text: str | bytes, max_bytes: int, senders: str, types: frozenset[str]) -> Any:
    if not isinstance(text, str):
        _violation("a binary message: this protocol sends JSON text")
    # A character is at least one byte: the encoding is needed only when the length is close.
    if len(text) > max_bytes or (len(text) * 4 > max_bytes and len(text.encode()) > max_bytes):
        _violation(f"a message larger than {max_bytes} bytes", CloseCode.TOO_BIG)
    try:
        message = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        _violation(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except (ValueError, RecursionError):  # NaN, 5000-digit numbers, deep nesting
        _violation("not JSON this protocol reads (a number or nesting out of range)")
    if not isinstance(message, dict):
        _violation("a message must be a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str):
        _violation("a message must have a 'type' string")
    if kind not in types:
        shown = kind if len(kind) <= 40 else kind[:40] + "..."
        _violation(f"unknown message type {shown!r} from {senders}")
    if "protocol" in message and kind != "error":
        version = _integer(message["protocol"])
        if version != PROTOCOL_VERSION:
            _violation(
                f"{kind}: protocol version {message['protocol']!r:.20} is not supported"
                f" (this side speaks {PROTOCOL_VERSION})"
            )
    return message


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _encode(message: Mapping[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def _size(text: str) -> int:
    return len(text.encode())


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _close_reason(reason: str) -> str:
    data = reason.encode()
    if len(data) <= _CLOSE_REASON_BYTES:
        return reason
    return data[: _CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."


def _read_error(message: dict[str, Any]) -> ErrorReceived:
    reader = _Reader(message, "error")
    if "protocol" in message:
        # any version: an error must be readable even from a peer that speaks another one
        reader.integer("protocol", 1, MAX_COUNT)
    code = reader.integer("code", 1000, 4999)
    text = reader.text("message", MAX_ERROR_TEXT, min_length=0)
    return ErrorReceived(code, text)


# The part both sessions share: outbox, closing, state


class _Session:
    _types: frozenset[str] = frozenset()
    _senders = ""

    def __init__(self, max_message_bytes: int) -> None:
        if not MIN_MAX_MESSAGE_BYTES <= max_message_bytes <= MAX_MAX_MESSAGE_BYTES:
            raise SessionError(
                f"max_message_bytes must be from {MIN_MAX_MESSAGE_BYTES} to {MAX_MAX_MESSAGE_BYTES}"
            )
        self.max_message_bytes = max_message_bytes
        self.state = SessionState.HANDSHAKE
        self.closed: Closing | None = None
        # why the session closed on received input: a PeerViolation, or the unexpected
        # exception behind an INTERNAL_ERROR close (for the I/O layer to log or chain)
        self.failure: Exception | None = None
        self._outbox: list[str] = []
        self._sent_any = False

    def outgoing(self) -> list[str]:
        """The texts to send now, in order; each is returned once."""
        texts, self._outbox = self._outbox, []
        return texts

    def close(self, code: int, reason: str) -> None:
        """End the session: an ``error`` message (except for codes 1000 and 1001), then the
        I/O layer closes the WebSocket with ``closed``. Nothing happens when already closed."""
        if self.closed is not None:
            return
        if _integer(code) is None or not 1000 <= code <= 4999:
            raise SessionError(f"close code {code!r} is not from 1000 to 4999")
        if code not in (CloseCode.NORMAL, CloseCode.GOING_AWAY):
            self._send(
                {"type": "error", "code": int(code), "message": _cut(reason, MAX_ERROR_TEXT)}
            )
        self.closed = Closing(int(code), _close_reason(reason))
        self.state = SessionState.CLOSED

    def _send(self, message: dict[str, Any]) -> None:
        if not self._sent_any and "protocol" not in message:
            message = {"type": message["type"], "protocol": PROTOCOL_VERSION, **message}
        self._queue(_encode(message))

    def _queue(self, text: str) -> None:
        """Queue a message already encoded (to measure it first); never a side's first."""
        self._sent_any = True
        self._outbox.append(text)

    def _receive(self, text: str | bytes, handle: Callable[[dict[str, Any]], list[Any]]) -> Any:
        if self.closed is not None:
            return []  # what arrives after the close is no longer anyone's business
        try:
            message = _decode(text, self.max_message_bytes, self._senders, self._types)
            return handle(message)
        except PeerViolation as exc:
            self.failure = exc
            self.close(exc.code, exc.reason)
        except Exception as exc:  # a bug here must close this session, never the server
            self.failure = exc
            self.close(CloseCode.INTERNAL_ERROR, f"internal error: {type(exc).__name__}")
        return [self._closing()]

    def _closing(self) -> Closing:
        assert self.closed is not None
        return self.closed

    def _require_open(self, action: str) -> bool:
        """True when the session is open; False when closed (the call does nothing)."""
        if self.state is SessionState.OPEN:
            return True
        if self.state is SessionState.CLOSED:
            return False
        raise SessionError(f"{action} before the session is open")


@dataclass(frozen=True)
class _Pushed:
    bundle: Bundle
    base_digest: str | None  # None: sent in full


class ConnectorSession(_Session):
    """The connector's side of one agent's connection.

    ``device_id`` is the id the client certificate proves; the hello must name the same one
    (else the session closes with 4401). Flow: ``HelloReceived`` -> check the token ->
    ``accept`` (or ``close``) -> ``push`` desired state, ``request_renewal``, ``certificate``;
    received ``applied``, ``status``, ``renew`` and ``resync`` come out as events.
    """

    _types = frozenset({"hello", "applied", "status", "renew", "resync", "error"})
    _senders = "an agent"

    def __init__(
        self, device_id: str, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        super().__init__(max_message_bytes)
        self.device_id = device_id
        self.hello: HelloReceived | None = None
        self.settings: Settings | None = None
        # the delta base: the bundle the agent has acknowledged (see the module docstring)
        self.base: Bundle | None = None
        # the digest the agent last reported applied with success (hello, then applied ok)
        self.applied_digest: str | None = None
        self.generation = 0  # of the latest desired pushed
        self._pending: dict[int, _Pushed] = {}  # pushed, not yet answered
        self._latest: Bundle | None = None
        self._csrs = 0  # CSRs received and not yet answered with a certificate

    def __repr__(self) -> str:
        return (
            f"<ConnectorSession device={self.device_id} {self.state.value}"
            f" generation={self.generation}>"
        )

    @property
    def target_digest(self) -> str | None:
        """The digest the agent was last told to run: the latest pushed in this session, else
        the one it reported applied. Push a bundle when its digest differs from this."""
        return self._latest.digest if self._latest is not None else self.applied_digest

    def receive(self, text: str | bytes) -> list[ConnectorEvent]:
        """The events of one received WebSocket message. Bad input closes the session: the
        result is then ``[Closing(...)]`` and ``closed`` is set; it never raises."""
        events: list[ConnectorEvent] = self._receive(text, self._handle)
        return events

    def accept(
        self, status_interval: int, *, session_id: str | None = None, base: Bundle | None = None
    ) -> None:
        """Welcome the agent whose hello was received (its token checked by the caller).
        ``base``: the bundle the hello's appliedDigest names, when the caller still has it, so
        the first push can be a delta."""
        if self.state is SessionState.CLOSED:
            return
        if self.hello is None or self.state is not SessionState.HANDSHAKE:
            raise SessionError("accept() answers a hello, once")
        if not 1 <= status_interval <= MAX_STATUS_INTERVAL:
            raise SessionError(f"status_interval must be from 1 to {MAX_STATUS_INTERVAL}")
        if session_id is not None and not (
            len(session_id) <= 128 and _PRINTABLE.fullmatch(session_id)
        ):
            raise SessionError("session_id must be 1 to 128 printable ASCII characters")
        if base is not None and base.digest != self.hello.applied_digest:
            raise SessionError(f"base {base.digest} is not the agent's applied bundle")
        self.settings = Settings(status_interval, self.max_message_bytes, session_id)
        welcome: dict[str, Any] = {
            "type": "welcome",
            "protocol": PROTOCOL_VERSION,
            "statusInterval": status_interval,
            "maxMessageBytes": self.max_message_bytes,
        }
        if session_id is not None:
            welcome["sessionId"] = session_id
        self._send(welcome)
        self.base = base
        self.applied_digest = self.hello.applied_digest
        self.state = SessionState.OPEN

    def push(self, bundle: Bundle) -> None:
        """Send ``bundle`` as the next generation: as a delta against ``base`` when that
        message is smaller, else in full. MessageTooLarge (nothing sent) when the message
        exceeds the agent's maxMessageBytes; SessionError when the bundle is inconsistent."""
        if not self._require_open("push()"):
            return
        try:
            bundle.check()
        except BundleError as exc:
            raise SessionError(f"cannot push an inconsistent bundle: {exc}") from exc
        self._push(bundle)

    def request_renewal(self) -> None:
        """Ask the agent for a CSR; it answers with ``renew`` (``CsrReceived``)."""
        if self._require_open("request_renewal()"):
            self._send({"type": "renew"})

    def certificate(self, certificate_chain: str, ca_bundle: str) -> None:
        """Answer a received CSR with the signed chain and the CA bundle (PEM)."""
        if not self._require_open("certificate()"):
            return
        if self._csrs == 0:
            raise SessionError("certificate() answers a received CSR, and none is unanswered")
        for name, pem in (("certificate_chain", certificate_chain), ("ca_bundle", ca_bundle)):
            if not (pem.startswith(_CERTIFICATE_HEADER) and len(pem) <= MAX_PEM):
                raise SessionError(f"{name} must be PEM certificates of at most {MAX_PEM} chars")
        self._csrs -= 1
        self._send(
            {"type": "certificate", "certificateChain": certificate_chain, "caBundle": ca_bundle}
        )

    # received messages

    def _handle(self, message: dict[str, Any]) -> list[ConnectorEvent]:
        kind = message["type"]
        if kind == "error":
            return [_read_error(message)]
        if kind == "hello":
            return self._on_hello(message)
        if self.state is not SessionState.OPEN:
            _violation(f"{kind} before welcome: after hello an agent waits for welcome")
        if kind == "applied":
            return self._on_applied(message)
        if kind == "status":
            return [self._on_status(message)]
        if kind == "renew":
            return [self._on_renew(message)]
        return self._on_resync(message)

    def _on_hello(self, message: dict[str, Any]) -> list[ConnectorEvent]:
        if self.hello is not None:
            _violation("a second hello in one session")
        reader = _Reader(message, "hello")
        if "protocol" not in message:
            reader.fail("protocol", "is missing")
        device_id = reader.text("deviceId", 253, _PRINTABLE, _PRINTABLE_WHAT)
        token = reader.text("deviceToken", 1024, _PRINTABLE, _PRINTABLE_WHAT)
        agent_version = reader.text("agentVersion", 64, _PRINTABLE, _PRINTABLE_WHAT)
        applied = reader.nullable_text("appliedDigest", 71, _DIGEST, _DIGEST_WHAT)
        max_bytes = reader.integer("maxMessageBytes", MIN_MAX_MESSAGE_BYTES, MAX_MAX_MESSAGE_BYTES)
        if device_id != self.device_id:
            _violation(
                f"hello names device {device_id}, the client certificate {self.device_id}",
                CloseCode.UNAUTHORIZED,
            )
        self.hello = HelloReceived(device_id, token, agent_version, applied, max_bytes)
        return [self.hello]

    def _on_applied(self, message: dict[str, Any]) -> list[ConnectorEvent]:
        reader = _Reader(message, "applied")
        generation = reader.integer("generation", 1, MAX_GENERATION)
        digest = reader.text("digest", 71, _DIGEST, _DIGEST_WHAT)
        ok = reader.boolean("ok")
        error = reader.nullable_text("error", MAX_ERROR_TEXT, min_length=0)
        items = reader.array("resources", MAX_RESULTS)
        results = tuple(
            _resource_result(item, f"applied: resources[{i}]") for i, item in enumerate(items)
        )
        omitted = reader.integer("omitted", 0, MAX_COUNT)
        pushed = self._pending.get(generation)
        if pushed is None:
            _violation(f"applied for generation {generation}, which is not awaiting an answer")
        if digest != pushed.bundle.digest:
            _violation(f"applied for generation {generation} names another digest")
        result = ApplyResult(digest, results, error)
        if result.ok != ok:
            _violation(f"applied for generation {generation}: 'ok' disagrees with the results")
        # older generations the agent skipped are answered by this one
        self._pending = {g: p for g, p in self._pending.items() if g > generation}
        if ok:
            self.base = pushed.bundle
            self.applied_digest = digest
        return [AppliedReceived(generation, pushed.bundle, result, omitted)]

    def _on_status(self, message: dict[str, Any]) -> StatusReceived:
        reader = _Reader(message, "status")
        applied = reader.nullable_text("appliedDigest", 71, _DIGEST, _DIGEST_WHAT)
        summary = reader.maybe_object("summary", MAX_STATUS_ENTRIES)
        for value in summary.values():
            number = _integer(value)
            if number is None or not 0 <= number <= MAX_COUNT:
                reader.fail("summary", f"values must be whole numbers from 0 to {MAX_COUNT}")
        system = reader.maybe_object("system", MAX_STATUS_ENTRIES)
        for value in system.values():
            if not (isinstance(value, str) and len(value) <= MAX_SYSTEM_VALUE):
                reader.fail("system", f"values must be texts of at most {MAX_SYSTEM_VALUE}")
            if not _string_ok(value):
                reader.fail("system", "values must be text")
        return StatusReceived(applied, {k: int(v) for k, v in summary.items()}, dict(system))

    def _on_renew(self, message: dict[str, Any]) -> CsrReceived:
        reader = _Reader(message, "renew")
        csr = reader.text("csr", MAX_PEM, what="a PEM certificate request")
        if not csr.startswith(_CSR_HEADER):
            reader.fail("csr", f"must start with {_CSR_HEADER}")
        self._csrs += 1
        return CsrReceived(csr)

    def _on_resync(self, message: dict[str, Any]) -> list[ConnectorEvent]:
        reader = _Reader(message, "resync")
        generation = reader.integer("generation", 1, MAX_GENERATION)
        reason = reader.text("reason", MAX_ERROR_TEXT, min_length=0)
        pushed = self._pending.pop(generation, None)
        if pushed is None:
            _violation(f"resync for generation {generation}, which is not awaiting an answer")
        if pushed.base_digest is None:
            # a full state cannot be resent any better: answering would loop for ever
            _violation(f"resync for generation {generation}, which was sent in full")
        if self.base is not None and self.base.digest == pushed.base_digest:
            self.base = None  # the agent does not have it: the next push is full
        if generation == self.generation:
            try:
                self._push(pushed.bundle)
            except MessageTooLarge as exc:
                _violation(str(exc), CloseCode.TOO_BIG)
        return [ResyncRequested(generation, reason)]

    def _push(self, bundle: Bundle) -> None:
        assert self.hello is not None
        generation = self.generation + 1
        head = {
            "type": "desired",
            "deviceId": self.device_id,
            "generation": generation,
            "revision": bundle.revision,
            "digest": bundle.digest,
        }
        text = _encode(
            {
                **head,
                "resources": [r.to_json() for r in bundle.resources],
                "manifests": bundle.manifests,
            }
        )
        base_digest = None
        if self.base is not None:
            patch = diff_bundles(self.base, bundle)
            delta = _encode({**head, "baseDigest": self.base.digest, "patch": patch})
            if _size(delta) < _size(text):
                text, base_digest = delta, self.base.digest
        if _size(text) > self.hello.max_message_bytes:
            raise MessageTooLarge(
                f"desired of {_size(text)} bytes; the agent accepts at most"
                f" {self.hello.max_message_bytes}"
            )
        self.generation = generation
        self._latest = bundle
        self._pending[generation] = _Pushed(bundle, base_digest)
        if len(self._pending) > KEPT_PUSHED:
            del self._pending[next(iter(self._pending))]
        self._queue(text)


class AgentSession(_Session):
    """The agent's side of one connection to the connector.

    ``applied``: the bundle the device runs (from the agent's state), or None; it is the
    first delta base and its digest goes into the hello. Flow: ``hello`` -> ``Welcomed`` ->
    ``DesiredReceived`` -> apply -> ``applied``; ``status`` every ``statusInterval`` (sooner
    when the caller wants to report a change); ``RenewRequested`` -> ``renew(csr)`` ->
    ``CertificateReceived``. The device token is sent in the hello and nowhere else, and never
    shown by repr.
    """

    _types = frozenset({"welcome", "desired", "renew", "certificate", "error"})
    _senders = "the connector"

    def __init__(
        self,
        device_id: str,
        device_token: str,
        agent_version: str,
        applied: Bundle | None = None,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(max_message_bytes)
        for name, value, limit in (
            ("device_id", device_id, 253),
            ("device_token", device_token, 1024),
            ("agent_version", agent_version, 64),
        ):
            if not (len(value) <= limit and _PRINTABLE.fullmatch(value)):
                # the value is not shown: it may be the token
                raise SessionError(f"{name} must be 1 to {limit} printable ASCII characters")
        self.device_id = device_id
        self._device_token = device_token
        self.agent_version = agent_version
        self.settings: Settings | None = None
        # the digest the device runs, as reported: the initial bundle's, then each ok apply's
        self.applied_digest = applied.digest if applied is not None else None
        self.generation = 0  # of the latest desired received
        self._bases: dict[str, Bundle] = {}  # digest -> bundle, oldest first
        if applied is not None:
            self._bases[applied.digest] = applied
        self._received: dict[int, Bundle] = {}  # desired not yet answered with applied
        self._csrs = 0
        self._said_hello = False

    def __repr__(self) -> str:
        return (
            f"<AgentSession device={self.device_id} {self.state.value}"
            f" generation={self.generation}>"
        )

    def hello(self) -> None:
        """Queue the hello: the first message of the session."""
        if self.state is SessionState.CLOSED:
            return
        if self._said_hello:
            raise SessionError("hello() once per session")
        self._said_hello = True
        self._send(
            {
                "type": "hello",
                "protocol": PROTOCOL_VERSION,
                "deviceId": self.device_id,
                "deviceToken": self._device_token,
                "agentVersion": self.agent_version,
                "appliedDigest": self.applied_digest,
                "maxMessageBytes": self.max_message_bytes,
            }
        )

    def receive(self, text: str | bytes) -> list[AgentEvent]:
        """The events of one received WebSocket message. Bad input closes the session: the
        result is then ``[Closing(...)]`` and ``closed`` is set; it never raises."""
        events: list[AgentEvent] = self._receive(text, self._handle)
        return events

    def applied(self, generation: int, result: ApplyResult) -> None:
        """Report the outcome of applying the desired of ``generation``. With ``result.ok``
        its bundle becomes the delta base (on the connector too, when it reads this).
        Results beyond MAX_RESULTS or the connector's maxMessageBytes are left out, failures
        kept first; texts are cut to the limits."""
        if not self._require_open("applied()"):
            return
        bundle = self._received.get(generation)
        if bundle is None:
            raise SessionError(f"generation {generation} is not a desired awaiting an answer")
        if result.digest != bundle.digest:
            raise SessionError(f"the result is for {result.digest}, not {bundle.digest}")
        assert self.settings is not None
        self._queue(_applied_text(generation, result, self.settings.max_message_bytes))
        self._received = {g: b for g, b in self._received.items() if g > generation}
        if result.ok:
            self._bases.pop(bundle.digest, None)
            self._bases[bundle.digest] = bundle
            while len(self._bases) > KEPT_BASES:
                del self._bases[next(iter(self._bases))]
            self.applied_digest = bundle.digest

    def status(
        self, summary: Mapping[str, int] | None = None, system: Mapping[str, str] | None = None
    ) -> None:
        """Report the applied digest, a count per resource state (``summary``) and a few
        facts about the system; small (MAX_STATUS_ENTRIES each)."""
        if not self._require_open("status()"):
            return
        message: dict[str, Any] = {"type": "status", "appliedDigest": self.applied_digest}
        if summary is not None:
            _check_keys("summary", summary)
            if not all(_integer(v) is not None and 0 <= v <= MAX_COUNT for v in summary.values()):
                raise SessionError(f"summary values must be whole numbers from 0 to {MAX_COUNT}")
            message["summary"] = dict(summary)
        if system is not None:
            _check_keys("system", system)
            message["system"] = {k: _cut(v, MAX_SYSTEM_VALUE) for k, v in system.items()}
        self._send(message)

    def renew(self, csr: str) -> None:
        """Send a CSR (PEM), asked for or not; the connector answers with a certificate."""
        if not self._require_open("renew()"):
            return
        if not (csr.startswith(_CSR_HEADER) and len(csr) <= MAX_PEM):
            raise SessionError(f"csr must be a PEM certificate request of at most {MAX_PEM}")
        self._csrs += 1
        self._send({"type": "renew", "csr": csr})

    # received messages

    def _handle(self, message: dict[str, Any]) -> list[AgentEvent]:
        kind = message["type"]
        if kind == "error":
            return [_read_error(message)]
        if not self._said_hello:
            _violation(f"{kind} before hello: the agent speaks first")
        if kind == "welcome":
            return [self._on_welcome(message)]
        if self.state is not SessionState.OPEN:
            _violation(f"{kind} before welcome")
        if kind == "desired":
            return [self._on_desired(message)]
        if kind == "renew":
            return [RenewRequested()]
        return [self._on_certificate(message)]

    def _on_welcome(self, message: dict[str, Any]) -> Welcomed:
        if self.state is not SessionState.HANDSHAKE:
            _violation("a second welcome in one session")
        reader = _Reader(message, "welcome")
        if "protocol" not in message:
            reader.fail("protocol", "is missing")
        interval = reader.integer("statusInterval", 1, MAX_STATUS_INTERVAL)
        max_bytes = reader.integer("maxMessageBytes", MIN_MAX_MESSAGE_BYTES, MAX_MAX_MESSAGE_BYTES)
        session_id = None
        if "sessionId" in message:
            session_id = reader.text("sessionId", 128, _PRINTABLE, _PRINTABLE_WHAT)
        self.settings = Settings(interval, max_bytes, session_id)
        self.state = SessionState.OPEN
        return Welcomed(self.settings)

    def _on_desired(self, message: dict[str, Any]) -> DesiredReceived | ResyncSent:
        reader = _Reader(message, "desired")
        device_id = reader.text("deviceId", 253, _PRINTABLE, _PRINTABLE_WHAT)
        if device_id != self.device_id:
            _violation(f"desired for device {device_id}, this is device {self.device_id}")
        generation = reader.integer("generation", 1, MAX_GENERATION)
        if generation <= self.generation:
            _violation(f"desired generation {generation} after {self.generation}: must increase")
        revision = reader.text("revision", 255, _PRINTABLE, _PRINTABLE_WHAT)
        digest = reader.text("digest", 71, _DIGEST, _DIGEST_WHAT)
        full = "manifests" in message or "resources" in message
        delta = "baseDigest" in message or "patch" in message
        if full == delta:
            _violation("desired carries either manifests and resources or baseDigest and patch")
        self.generation = generation
        if full:
            manifests = reader.text("manifests", min_length=0)
            items = reader.array("resources", MAX_RESOURCES)
            ids = tuple(_resource_id(x, f"desired: resources[{i}]") for i, x in enumerate(items))
            bundle = Bundle(revision, digest, manifests, ids)
            try:
                bundle.check()
            except BundleError as exc:
                # asking again would bring the same text: this is the connector's fault
                _violation(f"desired generation {generation}: {exc}")
        else:
            base_digest = reader.text("baseDigest", 71, _DIGEST, _DIGEST_WHAT)
            patch = _patch(reader.array("patch"))
            base = self._bases.get(base_digest)
            if base is None:
                return self._resync(generation, f"no base {base_digest}")
            try:
                bundle = apply_delta(base, patch, revision, digest)
            except DeltaError as exc:
                return self._resync(generation, str(exc))
        self._received[generation] = bundle
        while len(self._received) > KEPT_RECEIVED:
            del self._received[next(iter(self._received))]
        return DesiredReceived(generation, bundle, delta)

    def _resync(self, generation: int, reason: str) -> ResyncSent:
        self._send({"type": "resync", "generation": generation, "reason": reason})
        return ResyncSent(generation, reason)

    def _on_certificate(self, message: dict[str, Any]) -> CertificateReceived:
        reader = _Reader(message, "certificate")
        chain = reader.text("certificateChain", MAX_PEM, what="PEM certificates")
        ca_bundle = reader.text("caBundle", MAX_PEM, what="PEM certificates")
        for key, pem in (("certificateChain", chain), ("caBundle", ca_bundle)):
            if not pem.startswith(_CERTIFICATE_HEADER):
                reader.fail(key, f"must start with {_CERTIFICATE_HEADER}")
        if self._csrs == 0:
            _violation("a certificate without a CSR to answer")
        self._csrs -= 1
        return CertificateReceived(chain, ca_bundle)


def _check_keys(name: str, entries: Mapping[str, object]) -> None:
    if len(entries) > MAX_STATUS_ENTRIES or not all(_KEY.fullmatch(key) for key in entries):
        raise SessionError(
            f"{name}: at most {MAX_STATUS_ENTRIES} keys of 1 to 63 letters, digits, '.', '_', '-'"
        )


def _applied_text(generation: int, result: ApplyResult, max_bytes: int) -> str:
    count = len(result.resources)
    # failures first, so that whatever is left out, the results still say "not ok"
    order = sorted(range(count), key=lambda i: result.resources[i].ok)

    def build(keep: int) -> str:
        chosen = sorted(order[:keep])
        items = [
            {
                "resource": result.resources[i].resource.to_json(),
                "action": result.resources[i].action,
                "message": _cut(result.resources[i].message, MAX_RESULT_MESSAGE),
            }
            for i in chosen
        ]
        return _encode(
            {
                "type": "applied",
                "generation": generation,
                "digest": result.digest,
                "ok": result.ok,
                "error": None if result.error is None else _cut(result.error, MAX_ERROR_TEXT),
                "resources": items,
                "omitted": count - len(chosen),
            }
        )

    keep = min(count, MAX_RESULTS)
    text = build(keep)
    # one result always fits: an id and a cut message are far below MIN_MAX_MESSAGE_BYTES
    while _size(text) > max_bytes and keep > 1:
        keep //= 2
        text = build(keep)
    return text
