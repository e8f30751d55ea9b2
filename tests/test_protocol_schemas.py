"""schemas/protocol-*.schema.json against the sessions' hand-written checks: every message the
sessions send is valid, and each malformed message of a table is refused by both."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
from referencing.jsonschema import DRAFT202012

from rciots.agent import protocol
from rciots.agent.bundle import ApplyResult, ResourceResult
from rciots.agent.protocol import AgentSession, CloseCode, Closing, ConnectorSession
from tests.test_protocol import (
    CA,
    CHAIN,
    CSR,
    DEVICE,
    TOKEN,
    closed_with,
    connect,
    desired_full,
    fleet_bundle,
    ok_result,
    opened_agent,
    push,
    relay,
)

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
URN = "urn:rciots:schema:protocol:v1:"


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    loaded = [json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("protocol-*.schema.json"))]
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        (schema["$id"], DRAFT202012.create_resource(schema)) for schema in loaded
    )
    schema = registry.contents(URN + name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def schema_errors(direction: str, message: Any) -> list[str]:
    """Why ``message`` is invalid as one sent ``direction`` ("to-agent", "to-connector")."""
    return [error.message for error in _validator(direction).iter_errors(message)]


def test_every_schema_is_valid_draft_2020_12_with_its_own_id():
    for path in sorted(SCHEMAS.glob("protocol-*.schema.json")):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"] == URN + path.name.removeprefix("protocol-").split(".")[0]


def test_every_message_a_session_sends_is_valid():
    to_connector: list[str] = []
    to_agent: list[str] = []
    base = fleet_bundle("r1")
    agent = AgentSession(DEVICE, TOKEN, "0.1.0", base)
    connector = ConnectorSession(DEVICE)
    agent.hello()
    relay(agent, connector, to_connector)
    connector.accept(30, session_id="s-1", base=base)
    relay(connector, agent, to_agent)
    second = fleet_bundle("r2", app_3="3")
    push(connector, agent, second, log=to_agent)  # a delta
    agent.applied(1, ok_result(second))
    relay(agent, connector, to_connector)
    third = fleet_bundle("r3", count=2)
    push(connector, agent, third, log=to_agent)  # full: smaller than the delta
    failure = ResourceResult(third.resources[0], "failed", "no")
    agent.applied(2, ApplyResult(third.digest, (failure,), error="podman exited 125"))
    agent.status({"running": 1}, {"os": "rhel"})
    agent.renew(CSR)
    relay(agent, connector, to_connector)
    connector.certificate(CHAIN, CA)
    connector.request_renewal()
    relay(connector, agent, to_agent)
    connector.push(fleet_bundle("r4", app_3="4"))
    tampered = json.loads(connector.outgoing()[0])
    tampered["patch"][0]["value"] = "x\n"
    to_agent.append(json.dumps(tampered))
    agent.receive(json.dumps(tampered))  # answered with resync
    relay(agent, connector, to_connector)  # ... and the full state is resent
    relay(connector, agent, to_agent)
    agent.close(CloseCode.PROTOCOL_ERROR, "an error message")
    relay(agent, connector, to_connector)

    sent = {"to-connector": to_connector, "to-agent": to_agent}
    types = {direction: [json.loads(t)["type"] for t in texts] for direction, texts in sent.items()}
    assert types == {
        "to-connector": ["hello", "applied", "applied", "status", "renew", "resync", "error"],
        "to-agent": ["welcome", "desired", "desired", "certificate", "renew", "desired", "desired"],
    }
    for direction, texts in sent.items():
        for text in texts:
            message = json.loads(text)
            assert schema_errors(direction, message) == [], message["type"]
            if message["type"] != "renew":
                assert _validator(message["type"]).is_valid(message)


def _doc_examples() -> list[dict[str, Any]]:
    text = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, re.DOTALL)
    return [json.loads(block) for block in blocks]


def test_the_examples_in_the_protocol_doc_are_valid():
    examples = _doc_examples()
    assert {example["type"] for example in examples} == {
        "hello",
        "welcome",
        "desired",
        "applied",
        "status",
        "resync",
        "renew",
        "certificate",
        "error",
    }
    for example in examples:
        assert _validator(example["type"]).is_valid(example), example
    full, delta = (example for example in examples if example["type"] == "desired")
    agent = AgentSession(full["deviceId"], TOKEN, "0.1.0")
    agent.hello()
    agent.receive(json.dumps(next(e for e in examples if e["type"] == "welcome")))
    (first,) = agent.receive(json.dumps(full))
    assert isinstance(first, protocol.DesiredReceived)
    agent.applied(1, ApplyResult(first.bundle.digest))
    (second,) = agent.receive(json.dumps(delta))
    assert isinstance(second, protocol.DesiredReceived)
    assert second.bundle.manifests == full["manifests"].replace("Berlin", "Hamburg")


# Malformed messages: each case is a valid message for a session in the right state, then a
# change that breaks it. The valid message must pass both; the broken one must fail both.


def _connector_fresh() -> tuple[ConnectorSession, dict[str, Any]]:
    hello = {
        "type": "hello",
        "protocol": 1,
        "deviceId": DEVICE,
        "deviceToken": TOKEN,
        "agentVersion": "0.1.0",
        "appliedDigest": None,
        "maxMessageBytes": 65536,
    }
    return ConnectorSession(DEVICE), hello


def _connector_pushed() -> tuple[ConnectorSession, AgentSession]:
    base = fleet_bundle("r1", count=3)
    agent, connector = connect(applied=base, base=base)
    push(connector, agent, fleet_bundle("r2", count=3, app_1="2"))
    return connector, agent


def _applied() -> tuple[ConnectorSession, dict[str, Any]]:
    connector, _ = _connector_pushed()
    bundle = fleet_bundle("r2", count=3, app_1="2")
    result = {"resource": bundle.resources[0].to_json(), "action": "applied", "message": ""}
    message = {
        "type": "applied",
        "generation": 1,
        "digest": bundle.digest,
        "ok": True,
        "error": None,
        "resources": [result],
        "omitted": 0,
    }
    return connector, message


def _status() -> tuple[ConnectorSession, dict[str, Any]]:
    connector, _ = _connector_pushed()
    message = {
        "type": "status",
        "appliedDigest": fleet_bundle("r1", count=3).digest,
        "summary": {"running": 3},
        "system": {"os": "rhel-9.4"},
    }
    return connector, message


def _csr() -> tuple[ConnectorSession, dict[str, Any]]:
    connector, _ = _connector_pushed()
    return connector, {"type": "renew", "csr": CSR}


def _resync() -> tuple[ConnectorSession, dict[str, Any]]:
    connector, _ = _connector_pushed()
    return connector, {"type": "resync", "generation": 1, "reason": "no base"}


def _agent_after_hello() -> tuple[AgentSession, dict[str, Any]]:
    agent = AgentSession(DEVICE, TOKEN, "0.1.0")
    agent.hello()
    welcome = {"type": "welcome", "protocol": 1, "statusInterval": 30, "maxMessageBytes": 65536}
    return agent, welcome | {"sessionId": "s-1"}


def _desired() -> tuple[AgentSession, dict[str, Any]]:
    return opened_agent(), desired_full(fleet_bundle("r1", count=2))


def _delta() -> tuple[AgentSession, dict[str, Any]]:
    base = fleet_bundle("r1", count=2)
    agent, connector = connect(applied=base, base=base)
    connector.push(fleet_bundle("r2", count=2, app_0="0"))
    return agent, json.loads(connector.outgoing()[0])


def _certificate() -> tuple[AgentSession, dict[str, Any]]:
    agent, _ = connect()
    agent.renew(CSR)
    return agent, {"type": "certificate", "certificateChain": CHAIN, "caBundle": CA}


def _error() -> tuple[AgentSession, dict[str, Any]]:
    agent, _ = connect()
    return agent, {"type": "error", "code": 4409, "message": "replaced"}


Scenario = Callable[[], tuple[AgentSession | ConnectorSession, dict[str, Any]]]
_DIRECTION = {ConnectorSession: "to-connector", AgentSession: "to-agent"}
REMOVE = object()


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """A change of ``message`` at ``a.b.0.c`` (REMOVE deletes the key)."""

    def change(message: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = message
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if value is REMOVE:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


CASES: list[tuple[str, Scenario, Callable[[dict[str, Any]], None]]] = [
    ("hello without protocol", _connector_fresh, _set("protocol", REMOVE)),
    ("hello of protocol 2", _connector_fresh, _set("protocol", 2)),
    ("hello with a numeric deviceId", _connector_fresh, _set("deviceId", 7)),
    ("hello with an empty deviceId", _connector_fresh, _set("deviceId", "")),
    ("hello without deviceToken", _connector_fresh, _set("deviceToken", REMOVE)),
    ("hello with a spaced token", _connector_fresh, _set("deviceToken", "a b")),
    ("hello with a long agentVersion", _connector_fresh, _set("agentVersion", "1" * 65)),
    ("hello without appliedDigest", _connector_fresh, _set("appliedDigest", REMOVE)),
    ("hello with a short digest", _connector_fresh, _set("appliedDigest", "sha256:abc")),
    (
        "hello with an upper-case digest",
        _connector_fresh,
        _set("appliedDigest", "sha256:" + "A" * 64),
    ),
    ("hello with a tiny maxMessageBytes", _connector_fresh, _set("maxMessageBytes", 100)),
    ("hello with a text maxMessageBytes", _connector_fresh, _set("maxMessageBytes", "65536")),
    ("hello with a fractional maxMessageBytes", _connector_fresh, _set("maxMessageBytes", 65536.5)),
    ("an unknown type", _connector_fresh, _set("type", "helo")),
    ("a numeric type", _connector_fresh, _set("type", 1)),
    ("applied with generation 0", _applied, _set("generation", 0)),
    ("applied with a boolean generation", _applied, _set("generation", True)),
    ("applied with a text ok", _applied, _set("ok", "true")),
    ("applied without error", _applied, _set("error", REMOVE)),
    ("applied with a numeric error", _applied, _set("error", 1)),
    ("applied with resources as an object", _applied, _set("resources", {})),
    ("applied with an unknown action", _applied, _set("resources.0.action", "deleted")),
    ("applied with a long message", _applied, _set("resources.0.message", "m" * 1001)),
    ("applied with a resource without kind", _applied, _set("resources.0.resource.kind", REMOVE)),
    ("applied with an empty namespace", _applied, _set("resources.0.resource.namespace", "")),
    ("applied without omitted", _applied, _set("omitted", REMOVE)),
    ("applied with a negative omitted", _applied, _set("omitted", -1)),
    ("applied with protocol 2", _applied, _set("protocol", 2)),
    ("status without appliedDigest", _status, _set("appliedDigest", REMOVE)),
    ("status with a text count", _status, _set("summary.running", "3")),
    ("status with a negative count", _status, _set("summary.running", -3)),
    ("status with a spaced key", _status, _set("summary.not ready", 1)),
    ("status with a numeric fact", _status, _set("system.os", 9)),
    ("status with a list summary", _status, _set("summary", [])),
    ("renew with a certificate for a CSR", _csr, _set("csr", CHAIN)),
    ("renew with a numeric csr", _csr, _set("csr", 1)),
    ("resync without generation", _resync, _set("generation", REMOVE)),
    ("resync with a numeric reason", _resync, _set("reason", 5)),
    ("resync with a long reason", _resync, _set("reason", "r" * 4001)),
    ("welcome without protocol", _agent_after_hello, _set("protocol", REMOVE)),
    ("welcome with statusInterval 0", _agent_after_hello, _set("statusInterval", 0)),
    ("welcome with a day and a second", _agent_after_hello, _set("statusInterval", 86401)),
    ("welcome with a null sessionId", _agent_after_hello, _set("sessionId", None)),
    ("welcome with a huge maxMessageBytes", _agent_after_hello, _set("maxMessageBytes", 2**40)),
    ("desired without deviceId", _desired, _set("deviceId", REMOVE)),
    ("desired with a spaced revision", _desired, _set("revision", "main branch")),
    ("desired with a bytes-like manifests", _desired, _set("manifests", [1, 2])),
    ("desired without resources", _desired, _set("resources", REMOVE)),
    ("desired with a resource as text", _desired, _set("resources.0", "ConfigMap/x")),
    ("desired with a patch too", _desired, _set("patch", [])),
    ("desired delta with manifests too", _delta, _set("manifests", "")),
    ("desired delta without baseDigest", _delta, _set("baseDigest", REMOVE)),
    ("desired delta with a patch object", _delta, _set("patch", {})),
    ("desired delta with a move", _delta, _set("patch.0.op", "move")),
    (
        "desired delta with a copy",
        _delta,
        _set("patch.0", {"op": "copy", "from": "/lines", "path": "/lines/0"}),
    ),
    ("desired delta on the root", _delta, _set("patch.0.path", "")),
    ("desired delta on another field", _delta, _set("patch.0.path", "/revision")),
    ("desired delta with a leading zero", _delta, _set("patch.0.path", "/lines/01")),
    ("desired delta without value", _delta, _set("patch.0.value", REMOVE)),
    ("desired delta with a numeric line", _delta, _set("patch.0.value", 5)),
    (
        "desired delta with a bad resource",
        _delta,
        _set("patch.0", {"op": "add", "path": "/resources/0", "value": {"kind": "X"}}),
    ),
    ("certificate with a CSR for a chain", _certificate, _set("certificateChain", CSR)),
    ("certificate without caBundle", _certificate, _set("caBundle", REMOVE)),
    ("error without code", _error, _set("code", REMOVE)),
    ("error with a text protocol", _error, _set("protocol", "1")),
    ("error with code 99", _error, _set("code", 99)),
    ("error with a numeric message", _error, _set("message", 404)),
]


@pytest.mark.parametrize(("name", "scenario", "change"), CASES, ids=[case[0] for case in CASES])
def test_a_malformed_message_is_refused_by_the_schema_and_by_the_session(
    name: str, scenario: Scenario, change: Callable[[dict[str, Any]], None]
):
    session, valid = scenario()
    direction = _DIRECTION[type(session)]
    assert schema_errors(direction, valid) == []
    good_session, _ = scenario()
    events = good_session.receive(json.dumps(valid))
    assert not any(isinstance(event, Closing) for event in events), events

    broken = copy.deepcopy(valid)
    change(broken)
    assert schema_errors(direction, broken) != []
    closed_with(session.receive(json.dumps(broken)), CloseCode.PROTOCOL_ERROR)
    assert isinstance(session.failure, protocol.PeerViolation)
