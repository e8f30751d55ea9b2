"""The wire protocol: an agent session wired to a connector session by passing texts, no network.

The helpers at the top (bundles, ``connect``, ``relay``) are shared with test_protocol_schemas.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from rciots.agent import protocol
from rciots.agent.bundle import ApplyResult, Bundle, ResourceId, ResourceResult, digest_of
from rciots.agent.protocol import (
    AgentSession,
    AppliedReceived,
    CertificateReceived,
    CloseCode,
    Closing,
    ConnectorSession,
    CsrReceived,
    DesiredReceived,
    ErrorReceived,
    HelloReceived,
    RenewRequested,
    ResyncRequested,
    ResyncSent,
    SessionState,
    StatusReceived,
    Welcomed,
)

DEVICE = "dev-0001"
TOKEN = "rciots-dt-7c1e0f9d2b6a4f3e8d5c"
CSR = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
CHAIN = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
CA = "-----BEGIN CERTIFICATE-----\nMIID\n-----END CERTIFICATE-----\n"


def deployment(i: int, tag: str = "1.0") -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  labels:
    app: app-{i}
    rciots.io/managed: "true"
  name: app-{i}
  namespace: edge
spec:
  replicas: 1
  selector:
    matchLabels:
      app: app-{i}
  template:
    metadata:
      labels:
        app: app-{i}
    spec:
      containers:
      - env:
        - name: LOG_LEVEL
          value: info
        image: registry.example.com/edge/app-{i}:{tag}
        name: app
        ports:
        - containerPort: 8080
          name: http
        resources:
          limits:
            memory: 128Mi
"""


def bundle_of(documents: dict[int, str], revision: str) -> Bundle:
    """A bundle of Deployments keyed by number, in that order."""
    manifests = "---\n".join(documents.values())
    ids = tuple(ResourceId("apps/v1", "Deployment", f"app-{i}", "edge") for i in documents)
    return Bundle(revision, digest_of(manifests), manifests, ids)


def fleet_bundle(revision: str = "r1", count: int = 90, **tags: str) -> Bundle:
    """About 50 KB with the default count; ``app_N="tag"`` changes one image line."""
    return bundle_of(
        {i: deployment(i, tags.get(f"app_{i}", "1.0")) for i in range(count)}, revision
    )


def ok_result(bundle: Bundle) -> ApplyResult:
    return ApplyResult(bundle.digest, tuple(ResourceResult(r, "applied") for r in bundle.resources))


Session = AgentSession | ConnectorSession


def relay(source: Session, target: Session, log: list[str] | None = None) -> list[Any]:
    """Deliver what ``source`` wants sent to ``target``; the events it gave, in order."""
    events: list[Any] = []
    for text in source.outgoing():
        if log is not None:
            log.append(text)
        events.extend(target.receive(text))
    return events


def connect(
    applied: Bundle | None = None, base: Bundle | None = None, log: list[str] | None = None
) -> tuple[AgentSession, ConnectorSession]:
    """An agent and a connector session after hello and welcome."""
    agent = AgentSession(DEVICE, TOKEN, "0.1.0", applied)
    connector = ConnectorSession(DEVICE)
    agent.hello()
    (hello,) = relay(agent, connector, log)
    assert isinstance(hello, HelloReceived)
    connector.accept(30, session_id="s-1", base=base)
    (welcomed,) = relay(connector, agent, log)
    assert isinstance(welcomed, Welcomed)
    return agent, connector


def push(
    connector: ConnectorSession, agent: AgentSession, bundle: Bundle, log: list[str] | None = None
) -> tuple[dict[str, Any], DesiredReceived]:
    """Push ``bundle``; the desired message as sent and what the agent made of it."""
    connector.push(bundle)
    texts = connector.outgoing()
    assert len(texts) == 1
    if log is not None:
        log.extend(texts)
    (event,) = agent.receive(texts[0])
    assert isinstance(event, DesiredReceived), event
    return json.loads(texts[0]), event


def answer(agent: AgentSession, connector: ConnectorSession, generation: int, result: ApplyResult):
    agent.applied(generation, result)
    (event,) = relay(agent, connector)
    assert isinstance(event, AppliedReceived)
    return event


def closed_with(events: list[Any], code: int) -> str:
    """The reason of the one Closing event, which must have ``code``."""
    assert len(events) == 1, events
    assert isinstance(events[0], Closing), events
    assert events[0].code == code, events[0]
    return events[0].reason


def opened_agent(applied: Bundle | None = None) -> AgentSession:
    """An agent session after a welcome, fed by hand."""
    agent = AgentSession(DEVICE, TOKEN, "0.1.0", applied)
    agent.hello()
    agent.outgoing()
    welcome = {"type": "welcome", "protocol": 1, "statusInterval": 30, "maxMessageBytes": 65536}
    assert isinstance(agent.receive(json.dumps(welcome))[0], Welcomed)
    return agent


def desired_full(bundle: Bundle, generation: int = 1, device: str = DEVICE) -> dict[str, Any]:
    return {
        "type": "desired",
        "deviceId": device,
        "generation": generation,
        "revision": bundle.revision,
        "digest": bundle.digest,
        "resources": [r.to_json() for r in bundle.resources],
        "manifests": bundle.manifests,
    }


# The handshake


def test_hello_and_welcome_open_both_sessions():
    applied = fleet_bundle(count=2)
    agent = AgentSession(DEVICE, TOKEN, "0.1.0", applied)
    connector = ConnectorSession(DEVICE, max_message_bytes=1 << 20)
    agent.hello()
    (hello_text,) = agent.outgoing()
    assert json.loads(hello_text) == {
        "type": "hello",
        "protocol": 1,
        "deviceId": DEVICE,
        "deviceToken": TOKEN,
        "agentVersion": "0.1.0",
        "appliedDigest": applied.digest,
        "maxMessageBytes": protocol.DEFAULT_MAX_MESSAGE_BYTES,
    }
    assert connector.receive(hello_text) == [
        HelloReceived(DEVICE, TOKEN, "0.1.0", applied.digest, protocol.DEFAULT_MAX_MESSAGE_BYTES)
    ]
    assert connector.state.value == "handshake"  # by value: mypy keeps an `is` narrowing
    connector.accept(15, session_id="s-42")
    assert relay(connector, agent) == [Welcomed(protocol.Settings(15, 1 << 20, "s-42"))]
    assert agent.state is connector.state is SessionState.OPEN
    assert connector.applied_digest == connector.target_digest == applied.digest


def test_a_hello_for_another_device_than_the_certificate_is_unauthorized():
    agent = AgentSession("dev-other", TOKEN, "0.1.0")
    connector = ConnectorSession(DEVICE)
    agent.hello()
    reason = closed_with(relay(agent, connector), CloseCode.UNAUTHORIZED)
    assert "dev-other" in reason
    assert connector.hello is None


def test_a_rejected_hello_tells_the_agent_why_then_closes():
    agent = AgentSession(DEVICE, TOKEN, "0.1.0")
    connector = ConnectorSession(DEVICE)
    agent.hello()
    relay(agent, connector)
    connector.close(CloseCode.UNAUTHORIZED, "the device token does not match")
    (error_text,) = connector.outgoing()
    # the connector's first message carries the protocol version, whatever its type
    assert json.loads(error_text) == {
        "type": "error",
        "protocol": 1,
        "code": 4401,
        "message": "the device token does not match",
    }
    assert connector.closed == Closing(4401, "the device token does not match")
    assert agent.receive(error_text) == [ErrorReceived(4401, "the device token does not match")]


def test_a_newer_session_replaces_the_older_one():
    agent, connector = connect()
    connector.close(CloseCode.REPLACED, "replaced by a newer session")
    assert relay(connector, agent) == [ErrorReceived(4409, "replaced by a newer session")]
    assert connector.state is SessionState.CLOSED
    # what is still on its way, and what the I/O layer still asks, changes nothing
    agent.status()
    assert relay(agent, connector) == []
    connector.push(fleet_bundle())
    connector.request_renewal()
    connector.close(CloseCode.PROTOCOL_ERROR, "second close")
    assert connector.outgoing() == []
    assert connector.closed == Closing(4409, "replaced by a newer session")


def test_a_normal_close_sends_no_error():
    agent, _ = connect()
    agent.close(CloseCode.NORMAL, "agent stopping")
    assert agent.outgoing() == []
    assert agent.closed == Closing(1000, "agent stopping")


def test_close_reasons_fit_a_close_frame_and_the_error_message_keeps_the_whole_text():
    agent, connector = connect()
    connector.close(CloseCode.FORBIDDEN, "é" * 200)
    assert connector.closed is not None
    assert len(connector.closed.reason.encode()) <= 123
    (error,) = relay(connector, agent)
    assert error == ErrorReceived(4403, "é" * 200)


# Desired state: full, delta, applied


def test_full_then_delta_then_applied():
    agent, connector = connect()
    first = fleet_bundle("r1")
    message, received = push(connector, agent, first)
    assert "manifests" in message
    assert "patch" not in message
    assert received == DesiredReceived(1, first, delta=False)
    applied = answer(agent, connector, 1, ok_result(first))
    assert applied == AppliedReceived(1, first, ok_result(first), 0)
    assert connector.base == first

    second = fleet_bundle("r2", app_7="1.1")
    message, received = push(connector, agent, second)
    assert message["baseDigest"] == first.digest
    assert "manifests" not in message
    assert received == DesiredReceived(2, second, delta=True)
    assert received.bundle.manifests == second.manifests  # byte for byte
    assert answer(agent, connector, 2, ok_result(second)).generation == 2
    assert connector.base == second
    assert agent.applied_digest == connector.applied_digest == second.digest


def test_a_one_line_change_in_a_50_kb_bundle_is_a_desired_under_1_kb():
    base = fleet_bundle("r1")
    assert 48_000 <= len(base.manifests.encode()) <= 55_000
    agent, connector = connect(applied=base, base=base)
    connector.push(fleet_bundle("r2", app_45="1.0.1"))
    (text,) = connector.outgoing()
    assert len(text.encode()) <= 1024
    assert json.loads(text)["patch"] == [
        {
            "op": "replace",
            "path": f"/lines/{base.manifests[: base.manifests.index('app-45:1.0')].count(chr(10))}",
            "value": "        image: registry.example.com/edge/app-45:1.0.1\n",
        }
    ]
    (event,) = agent.receive(text)
    assert isinstance(event, DesiredReceived)
    assert event.bundle == fleet_bundle("r2", app_45="1.0.1")


def test_a_delta_larger_than_the_full_state_is_not_sent():
    base = fleet_bundle("r1", count=3)
    other = bundle_of({i: deployment(i, "2.0").replace("edge", "core") for i in range(7)}, "r2")
    agent, connector = connect(applied=base, base=base)
    message, received = push(connector, agent, other)
    assert "manifests" in message
    assert received == DesiredReceived(1, other, delta=False)


def test_the_first_push_is_a_delta_against_the_bundle_the_hello_named():
    base = fleet_bundle("r1")
    agent, connector = connect(applied=base, base=base)
    message, received = push(connector, agent, fleet_bundle("r2", app_3="3"))
    assert message["baseDigest"] == base.digest
    assert received.bundle == fleet_bundle("r2", app_3="3")


def test_without_the_hello_bundle_the_first_push_is_full():
    base = fleet_bundle("r1")
    agent, connector = connect(applied=base)  # the I/O layer had no copy of it
    message, _ = push(connector, agent, fleet_bundle("r2", app_3="3"))
    assert "manifests" in message


def test_accept_refuses_a_base_that_is_not_the_agents_applied_bundle():
    agent = AgentSession(DEVICE, TOKEN, "0.1.0", fleet_bundle("r1"))
    connector = ConnectorSession(DEVICE)
    agent.hello()
    relay(agent, connector)
    with pytest.raises(protocol.SessionError, match="not the agent's applied bundle"):
        connector.accept(30, base=fleet_bundle("r2", app_1="x"))


def test_a_failed_apply_keeps_the_previous_base_on_both_sides():
    base = fleet_bundle("r1")
    agent, connector = connect(applied=base, base=base)
    second = fleet_bundle("r2", app_1="broken")
    push(connector, agent, second)
    failed = ApplyResult(second.digest, (ResourceResult(second.resources[1], "failed", "bad"),))
    event = answer(agent, connector, 1, failed)
    assert not event.result.ok
    assert connector.base == base
    assert agent.applied_digest == connector.applied_digest == base.digest
    message, received = push(connector, agent, fleet_bundle("r3", app_1="fixed"))
    assert message["baseDigest"] == base.digest
    assert received.bundle == fleet_bundle("r3", app_1="fixed")


def test_the_agent_may_answer_only_the_newest_of_several_desired():
    agent, connector = connect()
    push(connector, agent, fleet_bundle("r1", count=3))
    newest = fleet_bundle("r2", count=4)
    push(connector, agent, newest)
    assert answer(agent, connector, 2, ok_result(newest)).bundle == newest
    with pytest.raises(protocol.SessionError, match="generation 1"):
        agent.applied(1, ok_result(fleet_bundle("r1", count=3)))


def test_applied_must_name_the_digest_of_its_generation():
    agent, connector = connect()
    push(connector, agent, fleet_bundle("r1", count=3))
    with pytest.raises(protocol.SessionError, match="not sha256"):
        agent.applied(1, ok_result(fleet_bundle("r1", count=4)))


def test_applied_results_are_capped_and_failures_kept():
    agent, connector = connect()
    bundle = fleet_bundle("r1", count=3)
    push(connector, agent, bundle)
    resource = bundle.resources[0]
    many = [ResourceResult(resource, "applied", "x" * 5000)] * (protocol.MAX_RESULTS + 10)
    failure = ResourceResult(bundle.resources[2], "failed", "image pull failed")
    result = ApplyResult(bundle.digest, (*many, failure), error="e" * 10_000)
    agent.applied(1, result)
    (text,) = agent.outgoing()
    sent = json.loads(text)
    assert len(sent["resources"]) == protocol.MAX_RESULTS
    assert sent["omitted"] == 11
    assert sent["resources"][-1] == {
        "resource": failure.resource.to_json(),
        "action": "failed",
        "message": "image pull failed",
    }
    assert len(sent["resources"][0]["message"]) == protocol.MAX_RESULT_MESSAGE
    assert len(sent["error"]) == protocol.MAX_ERROR_TEXT
    (event,) = connector.receive(text)
    assert isinstance(event, AppliedReceived)
    assert not event.result.ok
    assert event.omitted == 11


def test_applied_shrinks_to_the_connectors_message_size():
    agent = opened_agent()  # its welcome said maxMessageBytes 65536
    bundle = fleet_bundle("r1", count=3)
    agent.receive(json.dumps(desired_full(bundle)))
    failure = ResourceResult(bundle.resources[0], "failed", "ü" * 1000)
    agent.applied(1, ApplyResult(bundle.digest, (failure,) * 1000))
    (text,) = agent.outgoing()
    sent = json.loads(text)
    assert len(text.encode()) <= 65536
    assert 0 < len(sent["resources"]) < 1000
    assert sent["omitted"] == 1000 - len(sent["resources"])
    assert sent["ok"] is False


def test_a_desired_over_the_agents_size_limit_is_not_sent():
    agent = AgentSession(DEVICE, TOKEN, "0.1.0", max_message_bytes=64 * 1024)
    connector = ConnectorSession(DEVICE)
    agent.hello()
    relay(agent, connector)
    connector.accept(30)
    connector.outgoing()
    with pytest.raises(protocol.MessageTooLarge, match="at most 65536"):
        connector.push(fleet_bundle("r1", count=150))
    assert connector.outgoing() == []
    assert connector.generation == 0


def test_the_connector_forgets_desired_an_agent_leaves_unanswered_too_long():
    _, connector = connect()
    bundles = [fleet_bundle(f"r{g}", count=1) for g in range(protocol.KEPT_PUSHED + 1)]
    for bundle in bundles:
        connector.push(bundle)

    def applied(generation: int) -> str:
        digest = bundles[generation - 1].digest
        message = {"type": "applied", "generation": generation, "digest": digest, "ok": True}
        return json.dumps(message | {"error": None, "resources": [], "omitted": 0})

    # generation 2 is among the last KEPT_PUSHED, generation 1 is not
    (event,) = connector.receive(applied(2))
    assert isinstance(event, AppliedReceived)
    _, connector = connect()
    for bundle in bundles:
        connector.push(bundle)
    closed_with(connector.receive(applied(1)), CloseCode.PROTOCOL_ERROR)


def test_push_refuses_an_inconsistent_bundle():
    _, connector = connect()
    bundle = fleet_bundle("r1", count=2)
    with pytest.raises(protocol.SessionError, match="inconsistent"):
        connector.push(Bundle("r1", bundle.digest, bundle.manifests + "x", bundle.resources))


# Resync


def test_a_delta_that_does_not_rebuild_the_digest_is_never_applied_and_resent_in_full():
    base = fleet_bundle("r1")
    agent, connector = connect(applied=base, base=base)
    target = fleet_bundle("r2", app_9="9")
    connector.push(target)
    (text,) = connector.outgoing()
    tampered = json.loads(text)
    tampered["patch"][0]["value"] = "        image: evil.example.com/app:1\n"
    (event,) = agent.receive(json.dumps(tampered))
    assert isinstance(event, ResyncSent)
    assert event.generation == 1
    assert "do not match digest" in event.reason
    assert "evil" not in event.reason  # manifest text is never quoted
    (resync,) = relay(agent, connector)
    assert resync == ResyncRequested(1, event.reason)
    assert connector.base is None  # the agent lacks it, as far as deltas go
    (received,) = relay(connector, agent)  # queued by the session itself
    assert received == DesiredReceived(2, target, delta=False)
    assert answer(agent, connector, 2, ok_result(target)).generation == 2


def test_a_delta_against_a_base_the_agent_no_longer_keeps_is_resynced():
    base = fleet_bundle("r0")
    agent, connector = connect(applied=base, base=base)
    # The connector pushes faster than it reads the answers: every delta is against r0, while
    # the agent acknowledges each one. Its last KEPT_BASES bases include r0 until the
    # KEPT_BASES-th answer, so the deltas that crossed the earlier answers still apply.
    bundles = [fleet_bundle(f"r{g}", app_1=str(g)) for g in range(1, protocol.KEPT_BASES + 1)]
    for generation, bundle in enumerate(bundles, start=1):
        message, received = push(connector, agent, bundle)
        assert message["baseDigest"] == base.digest
        agent.applied(generation, ok_result(received.bundle))
    latest = fleet_bundle("r-latest", app_1="latest")
    connector.push(latest)
    generation = protocol.KEPT_BASES + 1
    assert relay(connector, agent) == [ResyncSent(generation, f"no base {base.digest}")]
    events = relay(agent, connector)
    assert [type(e) for e in events] == [AppliedReceived] * len(bundles) + [ResyncRequested]
    # by then the connector knows the last one is acknowledged: the new push is a delta on it
    assert connector.base == bundles[-1]
    (text,) = connector.outgoing()
    assert json.loads(text)["baseDigest"] == bundles[-1].digest
    assert agent.receive(text) == [DesiredReceived(generation + 1, latest, delta=True)]


def test_a_resync_of_an_older_generation_waits_for_the_newer_one():
    base = fleet_bundle("r1")
    agent, connector = connect(applied=base, base=base)
    connector.push(fleet_bundle("r2", app_1="2"))
    connector.push(fleet_bundle("r3", app_1="3"))
    (first, second) = connector.outgoing()
    broken = json.loads(first)
    broken["baseDigest"] = digest_of("gone")
    assert isinstance(agent.receive(json.dumps(broken))[0], ResyncSent)
    assert isinstance(agent.receive(second)[0], DesiredReceived)
    assert relay(agent, connector) == [ResyncRequested(1, f"no base {digest_of('gone')}")]
    assert connector.outgoing() == []  # generation 2 already carries the newer state


def test_a_resync_of_a_full_desired_is_a_protocol_error():
    agent, connector = connect()
    push(connector, agent, fleet_bundle("r1", count=2))
    resync = {"type": "resync", "generation": 1, "reason": "please"}
    closed_with(connector.receive(json.dumps(resync)), CloseCode.PROTOCOL_ERROR)


# Status and renewal


def test_status_reports_the_applied_digest_and_a_summary():
    agent, connector = connect()
    bundle = fleet_bundle("r1", count=2)
    push(connector, agent, bundle)
    answer(agent, connector, 1, ok_result(bundle))
    agent.status({"running": 2, "failed": 0}, {"os": "rhel-9.4", "arch": "aarch64"})
    assert relay(agent, connector) == [
        StatusReceived(
            bundle.digest, {"running": 2, "failed": 0}, {"os": "rhel-9.4", "arch": "aarch64"}
        )
    ]
    agent.status()
    assert relay(agent, connector) == [StatusReceived(bundle.digest, {}, {})]
    with pytest.raises(protocol.SessionError, match="summary"):
        agent.status({"bad key": 1})


def test_renewal_asked_by_the_connector():
    agent, connector = connect()
    connector.request_renewal()
    assert relay(connector, agent) == [RenewRequested()]
    agent.renew(CSR)
    assert relay(agent, connector) == [CsrReceived(CSR)]
    connector.certificate(CHAIN, CA)
    assert relay(connector, agent) == [CertificateReceived(CHAIN, CA)]
    with pytest.raises(protocol.SessionError, match="none is unanswered"):
        connector.certificate(CHAIN, CA)


def test_renewal_offered_by_the_agent_unasked():
    agent, connector = connect()
    agent.renew(CSR)
    assert relay(agent, connector) == [CsrReceived(CSR)]
    connector.certificate(CHAIN, CA)
    assert relay(connector, agent) == [CertificateReceived(CHAIN, CA)]


def test_a_certificate_the_agent_did_not_ask_for_is_a_protocol_error():
    agent, _ = connect()
    certificate = {"type": "certificate", "certificateChain": CHAIN, "caBundle": CA}
    closed_with(agent.receive(json.dumps(certificate)), CloseCode.PROTOCOL_ERROR)


# Bad input: one session closes, nothing raises


def _agent_message_cases() -> list[tuple[str, Any]]:
    return [
        ("not JSON", "{"),
        ("a list", "[]"),
        ("no type", "{}"),
        ("unknown type", '{"type": "launch"}'),
        ("a type the connector never sends", '{"type": "hello"}'),
        ("NaN", '{"type": "renew", "x": NaN}'),
        ("a 5000-digit number", '{"type": "renew", "x": ' + "9" * 5000 + "}"),
        ("deep nesting", '{"type": "renew", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        ("binary", b'{"type": "renew"}'),
        ("protocol 2", '{"type": "renew", "protocol": 2}'),
        ("protocol true", '{"type": "renew", "protocol": true}'),
        (
            "a second welcome",
            '{"type":"welcome","protocol":1,"statusInterval":3,"maxMessageBytes":65536}',
        ),
        ("desired without fields", '{"type": "desired"}'),
    ]


@pytest.mark.parametrize(("name", "text"), _agent_message_cases())
def test_bad_input_to_an_agent_closes_with_4400(name: str, text: str | bytes):
    agent = opened_agent()
    closed_with(agent.receive(text), CloseCode.PROTOCOL_ERROR)
    assert isinstance(agent.failure, protocol.PeerViolation)
    (error,) = agent.outgoing()
    assert json.loads(error)["code"] == 4400
    assert agent.receive('{"type": "renew"}') == []  # closed: nothing more is read


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("not JSON", "hello"),
        ("unknown type", '{"type": "desired"}'),
        ("wrong field types", '{"type":"hello","protocol":1,"deviceId":1}'),
        ("status before hello", '{"type": "status", "appliedDigest": null}'),
        ("a bare string", '"hello"'),
    ],
)
def test_bad_input_to_a_connector_closes_with_4400(name: str, text: str):
    connector = ConnectorSession(DEVICE)
    closed_with(connector.receive(text), CloseCode.PROTOCOL_ERROR)


def test_an_oversized_message_closes_with_1009():
    connector = ConnectorSession(DEVICE, max_message_bytes=64 * 1024)
    message = {"type": "status", "appliedDigest": None, "pad": "é" * 40_000}
    text = json.dumps(message, ensure_ascii=False)
    assert len(text) < 64 * 1024 < len(text.encode())  # counted in bytes, not characters
    reason = closed_with(connector.receive(text), CloseCode.TOO_BIG)
    assert "65536" in reason


@pytest.mark.parametrize(
    ("name", "steps"),
    [
        ("a second hello", ["hello", "hello"]),
        ("a message between hello and welcome", ["hello", "status"]),
        ("applied for a generation never sent", ["hello", "accept", "applied 5"]),
        ("applied twice for one generation", ["hello", "accept", "push", "applied 1", "applied 1"]),
        ("resync for a generation never sent", ["hello", "accept", "resync 3"]),
    ],
)
def test_out_of_order_messages_to_a_connector_close_with_4400(name: str, steps: list[str]):
    agent = AgentSession(DEVICE, TOKEN, "0.1.0")
    connector = ConnectorSession(DEVICE)
    bundle = fleet_bundle("r1", count=2)
    agent.hello()
    (hello,) = agent.outgoing()
    events: list[Any] = []
    for step in steps:
        if step == "hello":
            events = connector.receive(hello)  # a second time: a faulty agent
        elif step == "accept":
            connector.accept(30)
            connector.outgoing()
        elif step == "push":
            connector.push(bundle)
            connector.outgoing()
        elif step == "status":
            events = connector.receive('{"type": "status", "appliedDigest": null}')
        else:
            kind, generation = step.split()
            message: dict[str, Any] = {"type": kind, "generation": int(generation)}
            if kind == "applied":
                message |= {"digest": bundle.digest, "ok": True, "error": None}
                message |= {"resources": [], "omitted": 0}
            else:
                message["reason"] = "?"
            events = connector.receive(json.dumps(message))
    closed_with(events, CloseCode.PROTOCOL_ERROR)


def test_out_of_order_messages_to_an_agent_close_with_4400():
    bundle = fleet_bundle("r1", count=2)
    before_hello = AgentSession(DEVICE, TOKEN, "0.1.0")
    reason = closed_with(before_hello.receive(json.dumps(desired_full(bundle))), 4400)
    assert "before hello" in reason
    before_welcome = AgentSession(DEVICE, TOKEN, "0.1.0")
    before_welcome.hello()
    reason = closed_with(before_welcome.receive(json.dumps(desired_full(bundle))), 4400)
    assert "before welcome" in reason
    agent = opened_agent()
    assert isinstance(agent.receive(json.dumps(desired_full(bundle, 2)))[0], DesiredReceived)
    reason = closed_with(agent.receive(json.dumps(desired_full(bundle, 2))), 4400)
    assert "must increase" in reason


def test_a_desired_for_another_device_is_refused():
    agent = opened_agent()
    text = json.dumps(desired_full(fleet_bundle("r1", count=2), device="dev-9999"))
    reason = closed_with(agent.receive(text), CloseCode.PROTOCOL_ERROR)
    assert "dev-9999" in reason
    assert agent.generation == 0


def test_a_full_desired_whose_manifests_do_not_match_the_digest_is_refused():
    agent = opened_agent()
    message = desired_full(fleet_bundle("r1", count=2))
    message["manifests"] += "extra: 1\n"
    reason = closed_with(agent.receive(json.dumps(message)), CloseCode.PROTOCOL_ERROR)
    assert "do not match digest" in reason


def test_an_applied_whose_ok_disagrees_with_its_results_is_refused():
    agent, connector = connect()
    bundle = fleet_bundle("r1", count=2)
    push(connector, agent, bundle)
    failed = {"resource": bundle.resources[0].to_json(), "action": "failed", "message": "x"}
    message = {"type": "applied", "generation": 1, "digest": bundle.digest, "ok": True}
    message |= {"error": None, "resources": [failed], "omitted": 0}
    reason = closed_with(connector.receive(json.dumps(message)), CloseCode.PROTOCOL_ERROR)
    assert "'ok' disagrees" in reason


@pytest.mark.parametrize(
    "text",
    [
        r'{"type": "status", "appliedDigest": null, "system": {"os": "\ud800"}}',
        r'{"type": "renew", "csr": "-----BEGIN CERTIFICATE REQUEST-----\udfff"}',
    ],
)
def test_a_lone_surrogate_escaped_in_json_is_refused(text: str):
    # it parses, but it is no Unicode text: nothing downstream could encode it
    _, connector = connect()
    reason = closed_with(connector.receive(text), CloseCode.PROTOCOL_ERROR)
    assert "must be" in reason


def test_a_bug_inside_the_session_closes_it_with_1011(monkeypatch: pytest.MonkeyPatch):
    def broken(*args: object) -> Bundle:
        raise KeyError("bug")

    base = fleet_bundle("r1", count=3)
    agent, connector = connect(applied=base, base=base)
    monkeypatch.setattr(protocol, "apply_delta", broken)
    connector.push(fleet_bundle("r2", count=3, app_1="2"))
    closed_with(relay(connector, agent), CloseCode.INTERNAL_ERROR)
    assert isinstance(agent.failure, KeyError)


def test_the_caller_misusing_a_session_gets_a_session_error():
    agent = AgentSession(DEVICE, TOKEN, "0.1.0")
    with pytest.raises(protocol.SessionError, match="before the session is open"):
        agent.status()
    agent.hello()
    with pytest.raises(protocol.SessionError, match="once"):
        agent.hello()
    connector = ConnectorSession(DEVICE)
    with pytest.raises(protocol.SessionError, match="before the session is open"):
        connector.push(fleet_bundle(count=1))
    with pytest.raises(protocol.SessionError, match="answers a hello"):
        connector.accept(30)
    with pytest.raises(protocol.SessionError, match="close code"):
        connector.close(99, "no")
    with pytest.raises(protocol.SessionError, match="max_message_bytes"):
        ConnectorSession(DEVICE, max_message_bytes=10)


# Secrets


def test_the_device_token_never_shows_in_reprs_or_errors():
    agent = AgentSession(DEVICE, TOKEN, "0.1.0")
    connector = ConnectorSession(DEVICE)
    agent.hello()
    (hello,) = relay(agent, connector)
    assert hello.device_token == TOKEN
    for text in (repr(agent), repr(connector), repr(hello), str(hello)):
        assert TOKEN not in text
    # a hello whose token breaks a rule: the error names the field, not the value
    for token in (TOKEN + " with a space", TOKEN * 100, [TOKEN]):
        session = ConnectorSession(DEVICE)
        message = {"type": "hello", "protocol": 1, "deviceId": DEVICE, "deviceToken": token}
        events = session.receive(json.dumps(message))
        reason = closed_with(events, CloseCode.PROTOCOL_ERROR)
        assert "deviceToken" in reason
        assert TOKEN not in reason + repr(session.failure) + "".join(session.outgoing())
    with pytest.raises(protocol.SessionError) as raised:
        AgentSession(DEVICE, TOKEN + " x", "0.1.0")
    assert TOKEN not in str(raised.value)


def test_manifests_never_show_in_the_reprs_of_events():
    # they may hold Kubernetes Secrets, and events are what an I/O layer logs
    secret = "c2VjcmV0LXZhbHVl"
    manifests = f"apiVersion: v1\ndata:\n  password: {secret}\nkind: Secret\n"
    bundle = Bundle("r1", digest_of(manifests), manifests, (ResourceId("v1", "Secret", "s"),))
    agent, connector = connect()
    _, received = push(connector, agent, bundle)
    applied = answer(agent, connector, 1, ok_result(bundle))
    assert received.bundle.manifests == manifests
    assert secret not in repr(received) + repr(applied)


# Deltas on their own


@pytest.mark.parametrize("seed", range(300))
def test_random_edits_rebuild_byte_for_byte(seed: int):
    rng = random.Random(seed)  # noqa: S311 - test data, not a secret
    documents = {i: deployment(i, str(rng.randint(0, 9))) for i in range(rng.randint(0, 12))}
    base = bundle_of(documents, "r1")
    for _ in range(rng.randint(1, 6)):
        edit = rng.choice(["line", "insert", "delete", "add-doc", "drop-doc", "crlf", "tail"])
        keys = list(documents)
        if not keys:
            edit = "add-doc"
        if edit == "add-doc":
            new = max(keys, default=0) + rng.randint(1, 50)
            place = rng.randint(0, len(keys))
            items = list(documents.items())
            items.insert(place, (new, deployment(new, "ü")))
            documents = dict(items)
            continue
        key = rng.choice(keys)
        lines = documents[key].split("\n")
        at = rng.randrange(len(lines))
        if edit == "drop-doc":
            del documents[key]
        elif edit == "line":
            lines[at] = f"  note: {rng.random()}"
        elif edit == "insert":
            lines[at:at] = [f"  extra{k}: x" for k in range(rng.randint(1, 5))]
        elif edit == "delete":
            del lines[at : at + rng.randint(1, 4)]
        elif edit == "crlf":
            lines[at] += "\r"
        else:
            lines[-1] = "tail: without a newline"  # kept only in the last document
        if edit != "drop-doc":
            documents[key] = "\n".join(lines)
    # every document but the last ends with a newline, or the separator after it would not be one
    last = list(documents)[-1:]
    documents = {k: v if k in last or v.endswith("\n") else v + "\n" for k, v in documents.items()}
    target = bundle_of(documents, "r2")
    patch = protocol.diff_bundles(base, target)
    assert protocol.apply_delta(base, json.loads(json.dumps(patch)), "r2", target.digest) == target


def test_a_diff_beyond_the_matching_budget_still_rebuilds_byte_for_byte():
    rng = random.Random(7)  # noqa: S311 - test data, not a secret
    lines = [f"line {i}\n" for i in range(3000)]
    shuffled = lines[:]
    rng.shuffle(shuffled)
    ids = (ResourceId("v1", "ConfigMap", "c"),)
    base = Bundle("r1", digest_of("".join(lines)), "".join(lines), ids)
    target = Bundle("r2", digest_of("".join(shuffled)), "".join(shuffled), ids)
    patch = protocol.diff_bundles(base, target)
    # the matcher was skipped: one replace per line between the common head and tail
    assert {operation["op"] for operation in patch} == {"replace"}
    assert len(patch) > 2990
    assert protocol.apply_delta(base, patch, "r2", target.digest) == target


def test_lines_split_after_newlines_only():
    assert protocol.split_lines("a\r\nb\x0cc\u2028d\n\ne") == [
        "a\r\n",
        "b\x0cc\u2028d\n",
        "\n",
        "e",
    ]
    assert protocol.split_lines("") == []
    assert protocol.split_lines("x\n") == ["x\n"]


def test_apply_delta_refuses_a_patch_that_does_not_apply():
    base = fleet_bundle(count=2)
    with pytest.raises(protocol.DeltaError, match="does not apply"):
        protocol.apply_delta(base, [{"op": "remove", "path": "/lines/9999"}], "r2", base.digest)
    ids_only = [{"op": "remove", "path": "/resources/1"}]
    with pytest.raises(protocol.DeltaError, match="1 resource id"):
        protocol.apply_delta(base, ids_only, "r2", base.digest)
