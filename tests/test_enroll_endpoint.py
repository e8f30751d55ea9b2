"""The enrollment endpoint over real HTTPS (our CA's server certificate) with httpx as the
client: every answer, rate limits, the body cap, and maxDevices under concurrency."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import fastapi
import httpx
import pytest

from rciots.controller import (
    castore,
    enroll_endpoint,
    enrollment,
    fleet,
    httpserver,
    ratelimit,
    registry,
)
from tests import aio, enrollfiles
from tests.cryptohelp import csr_pem, ec_key
from tests.enrollfiles import AUTO, MANUAL
from tests.fleetcontroller import OPEN


def body(token: str = AUTO, name: str = "gw-new", key=None, **extra: object) -> dict[str, object]:
    pem = csr_pem(key if key is not None else ec_key()).decode()
    return {"token": token, "name": name, "csr": pem, **extra}


Client = httpx.AsyncClient


def serve(
    tmp_path: Path,
    test: Callable[[Client, registry.Registry], Awaitable[None]],
    *,
    files: dict[str, bytes] | None = None,
    limits: ratelimit.ClientLimits = OPEN,
) -> None:
    now = datetime.now(UTC)  # real time: TLS checks the certificates against it
    authority = castore.load_or_create(tmp_path / "ca", ["localhost", "127.0.0.1"], now)
    store = registry.Registry(tmp_path / "registry.db")
    model: fleet.FleetModel = enrollfiles.model(files or enrollfiles.repo())
    enroller = enrollment.Enroller(authority, store, enrollment.Policy("wss://localhost:1/c"))
    app = fastapi.FastAPI()
    app.include_router(
        enroll_endpoint.enroll_router(enroller, lambda: model, limits=limits, clock=lambda: now)
    )
    trust = ssl.create_default_context(cafile=str(tmp_path / "ca" / "root.pem"))

    async def main() -> None:
        server = await httpserver.Server.start(
            app,
            "127.0.0.1",
            0,
            certificate=tmp_path / "ca" / "server.pem",
            key=tmp_path / "ca" / "server.key",
        )
        try:
            async with httpx.AsyncClient(
                base_url=f"https://127.0.0.1:{server.port}", verify=trust, timeout=10
            ) as client:
                await test(client, store)
        finally:
            await server.stop()
            store.close()

    aio.run(main())


def test_an_identity_over_https_with_our_server_certificate(tmp_path):
    async def test(client: Client, store: registry.Registry) -> None:
        answer = await client.post(enroll_endpoint.PATH, json=body())
        assert answer.status_code == 200
        data = answer.json()
        assert data["name"] == "gw-new"
        assert store.get(data["deviceId"]) is not None
        # a client that trusts only the public roots does not get past the handshake
        async with httpx.AsyncClient(base_url=str(client.base_url), verify=True) as stranger:
            with pytest.raises(httpx.ConnectError):
                await stranger.post(enroll_endpoint.PATH, json=body())

    serve(tmp_path, test)


def test_an_enrollment_is_decided_signed_and_recorded_off_the_event_loop(tmp_path):
    """The registry's synchronous write (an fsync) and the signing must not hold up the
    event loop, which also serves every agent's session and the status page."""

    async def test(client: Client, store: registry.Registry) -> None:
        loop_thread = threading.get_ident()
        writers: list[int] = []
        store.listener = lambda *_: writers.append(threading.get_ident())
        answer = await client.post(enroll_endpoint.PATH, json=body())
        assert answer.status_code == 200
        assert len(writers) == 1
        assert writers[0] != loop_thread

    serve(tmp_path, test)


def test_pending_is_202_with_retry_after_and_the_same_again(tmp_path):
    async def test(client: Client, store: registry.Registry) -> None:
        request = body(MANUAL)
        first = await client.post(enroll_endpoint.PATH, json=request)
        second = await client.post(enroll_endpoint.PATH, json=request)
        for answer in (first, second):
            assert answer.status_code == 202
            assert answer.headers["Retry-After"] == "30"
            assert answer.json()["status"] == "pending"
        assert [p.name for p in store.all_pending()] == ["gw-new"]

    serve(tmp_path, test)


def test_unknown_and_malformed_tokens_get_identical_answers(tmp_path):
    async def test(client: Client, store: registry.Registry) -> None:
        answers = [
            await client.post(enroll_endpoint.PATH, json=body(token))
            for token in ("rciots-pt-" + "x" * 43, "garbage", AUTO[:-1])
        ]
        assert {(a.status_code, a.content) for a in answers} == {
            (404, b'{"error":"token not found"}')
        }

    serve(tmp_path, test)


def test_forbidden_and_conflict_answers_say_why(tmp_path):
    files = enrollfiles.repo(rollout="  maxDevices: 1\n")

    async def test(client: Client, store: registry.Registry) -> None:
        key = ec_key()
        assert (await client.post(enroll_endpoint.PATH, json=body(key=key))).status_code == 200
        taken = await client.post(enroll_endpoint.PATH, json=body())
        assert taken.status_code == 409
        assert "already enrolled with another key" in taken.json()["error"]
        clone = await client.post(enroll_endpoint.PATH, json=body(name="gw-2", key=key))
        assert clone.status_code == 409
        full = await client.post(enroll_endpoint.PATH, json=body(name="gw-3"))
        assert full.status_code == 403
        assert "device limit (1)" in full.json()["error"]

    serve(tmp_path, test, files=files)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "the body is not JSON"),
        (b"[1, 2]", "the body must be a JSON object"),
        (b'{"token": "t", "name": "n"}', "csr: a non-empty string is required"),
        (b'{"token": "t", "name": "n", "csr": "c", "extra": 1}', "unknown field(s): extra"),
        (
            b'{"token": "t", "name": "n", "csr": "c", "labels": {"a": "b c"}}',
            "labels: a=b c is not a valid Kubernetes label",
        ),
        (b'{"token": "t", "name": "n", "csr": "c", "system": [1]}', "system: an object"),
        # what json.loads cannot or should not hand on: deep nesting, and text that is not
        # Unicode (a lone surrogate, which no answer or log can encode either)
        (b"[" * 50_000, "the body is not JSON"),
        (b'{"token": "t", "name": "n", "csr": "c", "system": ' + b'{"a": ' * 5_000, "not JSON"),
        (b'{"token": "rciots-pt-\\ud800", "name": "n", "csr": "c"}', "not Unicode"),
        (b'{"token": "t", "name": "n", "csr": "\\udfff"}', "not Unicode"),
        (b'{"token": "t", "name": "n", "csr": "c", "labels": {"a": "\\ud800"}}', "not Unicode"),
        (b'{"token": "t", "name": "n", "csr": "c", "\\ud800": 1}', "not Unicode"),
    ],
)
def test_a_malformed_request_is_422_naming_the_field(tmp_path, payload, message):
    async def test(client: Client, store: registry.Registry) -> None:
        answer = await client.post(
            enroll_endpoint.PATH, content=payload, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 422
        assert message in answer.json()["error"]

    serve(tmp_path, test)


def test_an_invalid_csr_is_422(tmp_path):
    async def test(client: Client, store: registry.Registry) -> None:
        request = {"token": AUTO, "name": "gw-new", "csr": "-----BEGIN CERTIFICATE REQUEST-----"}
        answer = await client.post(enroll_endpoint.PATH, json=request)
        assert answer.status_code == 422
        assert "not a PEM certificate request" in answer.json()["error"]

    serve(tmp_path, test)


def test_a_body_over_the_cap_is_413(tmp_path):
    """The declared length is enough to refuse; a streamed (chunked) body over the cap is
    refused by the same reader, tested with the webhook (test_webhook_endpoint)."""
    limits = ratelimit.ClientLimits(
        rate=100, burst=100, failure_rate=100, failure_burst=100, max_body_bytes=4096
    )

    async def test(client: Client, store: registry.Registry) -> None:
        declared = await client.post(enroll_endpoint.PATH, content=b"x" * 5000)
        assert declared.status_code == 413
        assert declared.json() == {"error": "the body is larger than 4096 bytes"}
        assert declared.headers["Connection"] == "close"

    serve(tmp_path, test, limits=limits)


def test_a_body_that_does_not_come_whole_in_time_is_408_and_the_connection_closed(tmp_path):
    """A client that declares a body and sends part of it no longer holds the request open
    (before a token is even looked at)."""
    limits = dataclasses.replace(OPEN, body_timeout=0.5)

    async def test(client: Client, store: registry.Registry) -> None:
        trust = ssl.create_default_context(cafile=str(tmp_path / "ca" / "root.pem"))
        port = client.base_url.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trust)
        try:
            writer.write(
                b"POST /v1/enroll HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                b'{"token": "rciots-pt-'
            )
            answer = await asyncio.wait_for(reader.read(), 5)  # until the server closes
        finally:
            writer.close()
        head, _, text = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert b"connection: close" in head.lower()
        assert json.loads(text) == {"error": "the body did not come whole within 0.5 s"}

    serve(tmp_path, test, limits=limits)


def test_a_client_over_its_rate_gets_429_with_retry_after(tmp_path):
    limits = ratelimit.ClientLimits(rate=0.5, burst=3)

    async def test(client: Client, store: registry.Registry) -> None:
        statuses = [
            (await client.post(enroll_endpoint.PATH, json=body(name=f"gw-{i}"))).status_code
            for i in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        refused = await client.post(enroll_endpoint.PATH, json=body(name="gw-9"))
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "2"

    serve(tmp_path, test, limits=limits)


def test_a_client_that_keeps_failing_is_held_back_even_with_a_good_token(tmp_path):
    limits = ratelimit.ClientLimits(rate=100, burst=100, failure_rate=0.01, failure_burst=5)

    async def test(client: Client, store: registry.Registry) -> None:
        for attempt in range(5):
            guess = await client.post(enroll_endpoint.PATH, json=body(f"rciots-pt-guess-{attempt}"))
            assert guess.status_code == 404
        held = await client.post(enroll_endpoint.PATH, json=body())
        assert held.status_code == 429
        assert int(held.headers["Retry-After"]) > 60
        assert store.registrations() == []

    serve(tmp_path, test, limits=limits)


def test_concurrent_clients_never_exceed_max_devices(tmp_path):
    files = enrollfiles.repo(rollout="  maxDevices: 5\n")

    async def test(client: Client, store: registry.Registry) -> None:
        requests = [body(name=f"gw-{index}") for index in range(40)]
        answers = await asyncio.gather(
            *(client.post(enroll_endpoint.PATH, json=request) for request in requests)
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [200] * 5 + [403] * 35
        assert store.count("acme", "rollout") == 5

    serve(tmp_path, test, files=files)
