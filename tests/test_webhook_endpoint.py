"""The push webhook route on a real uvicorn server on 127.0.0.1, driven with real HTTP requests."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from rciots.controller import webhook_endpoint, webhooks

SECRET = b"9f1c0ffee-webhook-secret"
BRANCH = "main"
SMALL = 4096  # the limit of the second route, for bodies that fit in socket buffers
NEW = "c0ffee" + "0" * 34


@dataclass
class Pushes:
    """What on_push received; the route calls it on the server's event loop thread."""

    events: list[webhooks.PushEvent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: webhooks.PushEvent) -> None:
        with self.lock:
            self.events.append(event)

    def taken(self) -> list[webhooks.PushEvent]:
        with self.lock:
            events, self.events = self.events, []
        return events


@dataclass
class Server:
    port: int
    pushes: Pushes

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

    def post(
        self, body: bytes | Iterable[bytes], headers: dict[str, str], path: str = "/hooks/git"
    ) -> tuple[int, dict[str, Any]]:
        connection = self.connect()
        try:
            # an iterable body and no Content-Length: http.client sends it chunked
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[int]:
    """Run ``app`` on a real uvicorn server on a free port of 127.0.0.1; stop it on exit."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    # log_config None: uvicorn must leave the test's logging (caplog) alone
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not uv.started:
            assert thread.is_alive(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
            time.sleep(0.01)
        yield listener.getsockname()[1]
    finally:
        uv.should_exit = True
        thread.join(10)
        listener.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    pushes = Pushes()
    app = FastAPI()
    app.include_router(webhook_endpoint.webhook_router(SECRET, BRANCH, pushes))
    # a second route in the same app, as the status page will mount it, with a small limit
    app.include_router(
        webhook_endpoint.webhook_router(
            SECRET, BRANCH, pushes, max_body_bytes=SMALL, path="/hooks/small", body_timeout=0.5
        )
    )
    with serving(app) as port:
        yield Server(port, pushes)


@pytest.fixture
def pushes(server: Server) -> Iterator[Pushes]:
    server.pushes.taken()
    yield server.pushes
    server.pushes.taken()


def payload(ref: str = "refs/heads/main", after: str = NEW) -> bytes:
    return json.dumps(
        {"ref": ref, "before": "1" * 40, "after": after, "repository": {"full_name": "acme/f"}}
    ).encode()


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def github(body: bytes, event: str = "push", secret: bytes = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-Hub-Signature-256": "sha256=" + sign(body, secret),
    }


def gitea(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Gitea-Event": "push",
        "X-GitHub-Event": "push",
        "X-Gitea-Signature": sign(body),
        "X-Hub-Signature-256": "sha256=" + sign(body),
    }


def gitlab(token: bytes = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Gitlab-Event": "Push Hook",
        "X-Gitlab-Token": token.decode(),
    }


@pytest.mark.parametrize(
    ("headers", "provider"),
    [
        pytest.param(github(payload()), "github", id="github"),
        pytest.param(gitea(payload()), "gitea", id="gitea"),
        pytest.param(gitlab(), "gitlab", id="gitlab"),
    ],
)
def test_push_to_the_tracked_branch_schedules_one_fetch(
    server: Server, pushes: Pushes, headers: dict[str, str], provider: str
) -> None:
    status, answer = server.post(payload(), headers)
    assert (status, answer) == (
        202,
        {
            "fetch": "scheduled",
            "provider": provider,
            "branch": "main",
            "after": NEW,
            "deleted": False,
        },
    )
    [event] = pushes.taken()
    assert (event.provider, event.branch, event.after) == (provider, "main", NEW)


def test_chunked_push_within_the_limit_is_read(server: Server, pushes: Pushes) -> None:
    body = payload()
    status, _ = server.post(iter([body[:10], body[10:]]), github(body), path="/hooks/small")
    assert status == 202
    assert [e.branch for e in pushes.taken()] == ["main"]


def test_deleting_the_tracked_branch_schedules_a_fetch(server: Server, pushes: Pushes) -> None:
    body = payload(after="0" * 40)
    status, answer = server.post(body, github(body))
    assert (status, answer["deleted"], answer["after"]) == (202, True, None)
    assert [e.deleted for e in pushes.taken()] == [True]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        pytest.param(
            github(payload(), secret=b"another secret"),
            "X-Hub-Signature-256 does not match the body: the webhook's secret differs from the "
            "controller's webhook secret",
            id="wrong-signature",
        ),
        pytest.param(
            {"Content-Type": "application/json", "X-GitHub-Event": "push"},
            "no X-Hub-Signature-256 header: set the webhook's secret in GitHub to the "
            "controller's webhook secret",
            id="missing-signature",
        ),
        pytest.param(
            gitlab(b"another secret"),
            "X-Gitlab-Token does not match the controller's webhook secret",
            id="wrong-token",
        ),
    ],
)
def test_unauthenticated_push_is_refused(
    server: Server, pushes: Pushes, headers: dict[str, str], message: str
) -> None:
    assert server.post(payload(), headers) == (401, {"detail": message})
    assert pushes.taken() == []


def test_unknown_sender_is_a_bad_request(server: Server, pushes: Pushes) -> None:
    status, answer = server.post(payload(), {"Content-Type": "application/json"})
    assert status == 400
    assert answer["detail"].startswith("no X-GitHub-Event, X-Gitea-Event or X-Gitlab-Event")
    assert pushes.taken() == []


def test_form_encoded_body_says_to_send_json(server: Server, pushes: Pushes) -> None:
    body = b"payload=%7B%7D"
    assert server.post(body, github(body)) == (
        400,
        {"detail": "the body is not JSON: set the webhook's content type to application/json"},
    )
    assert pushes.taken() == []


def test_declared_length_over_the_limit_is_refused_before_the_body(
    server: Server, pushes: Pushes
) -> None:
    """Only the headers are sent: the answer comes without the server waiting for a body."""
    connection = server.connect()
    try:
        connection.putrequest("POST", "/hooks/git")
        for name, value in github(b"{}").items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(100 * 1024 * 1024))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert response.getheader("Connection") == "close"
        assert json.loads(response.read()) == {"detail": "the body is larger than 1048576 bytes"}
    finally:
        connection.close()
    assert pushes.taken() == []


def test_declared_length_just_over_the_limit_is_refused(server: Server, pushes: Pushes) -> None:
    body = payload().ljust(SMALL + 1)
    assert server.post(body, github(body), path="/hooks/small") == (
        413,
        {"detail": f"the body is larger than {SMALL} bytes"},
    )
    assert pushes.taken() == []


def test_body_at_the_limit_is_read(server: Server, pushes: Pushes) -> None:
    body = payload().ljust(SMALL)  # trailing spaces: still the same JSON
    assert server.post(body, github(body), path="/hooks/small")[0] == 202
    assert len(pushes.taken()) == 1


def test_chunked_body_over_the_limit_is_refused_without_reading_to_the_end(
    server: Server, pushes: Pushes
) -> None:
    """No Content-Length: the route counts what the stream delivers and answers 413 once past
    the limit. The body is never finished (no last chunk): a route that read to the end would
    never answer. One write, so that the server has read everything when it closes."""
    body = payload().ljust(3 * SMALL)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(part), part)
        for part in (body[i : i + 1000] for i in range(0, len(body), 1000))
    )
    head = "".join(f"{name}: {value}\r\n" for name, value in github(body).items())
    request = (
        f"POST /hooks/small HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(request + chunks)
        response = http.client.HTTPResponse(connection)
        response.begin()
        assert response.status == 413
        assert json.loads(response.read()) == {"detail": f"the body is larger than {SMALL} bytes"}
    assert pushes.taken() == []


def test_a_body_that_does_not_come_whole_in_time_is_refused(server: Server, pushes: Pushes) -> None:
    """A client that declares a body and sends part of it no longer holds the request open:
    408, and the connection is closed (the rest of the body is never read)."""
    body = payload()
    head = "".join(f"{name}: {value}\r\n" for name, value in github(body).items())
    request = (
        f"POST /hooks/small HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(request + body[:10])
        response = http.client.HTTPResponse(connection)
        response.begin()
        assert response.status == 408
        assert response.getheader("Connection") == "close"
        assert json.loads(response.read()) == {"detail": "the body did not come whole within 0.5 s"}
    assert pushes.taken() == []


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("refs/heads/feature", "push to branch feature; this controller tracks main"),
        ("refs/tags/v1", "push to refs/tags/v1, which is no branch"),
    ],
)
def test_push_elsewhere_is_ignored(server: Server, pushes: Pushes, ref: str, reason: str) -> None:
    body = payload(ref)
    assert server.post(body, github(body)) == (200, {"ignored": reason})
    assert pushes.taken() == []


def test_ping_is_answered(server: Server, pushes: Pushes) -> None:
    body = json.dumps({"zen": "Design for failure.", "hook_id": 7}).encode()
    assert server.post(body, github(body, "ping")) == (200, {"ignored": "not a push event"})
    assert pushes.taken() == []


def test_other_methods_are_not_allowed(server: Server) -> None:
    connection = server.connect()
    try:
        connection.request("GET", "/hooks/git")
        assert connection.getresponse().status == 405
    finally:
        connection.close()


def test_log_has_one_line_per_push_and_never_the_secret_or_body(
    server: Server, pushes: Pushes, caplog: pytest.LogCaptureFixture
) -> None:
    body = payload()
    with caplog.at_level(logging.DEBUG, logger="rciots.controller"):
        assert server.post(body, github(body))[0] == 202
        assert server.post(body, github(body, secret=b"wrong"))[0] == 401
    mine = [r for r in caplog.records if r.name == "rciots.controller.webhook_endpoint"]
    assert [(r.levelname, r.getMessage()) for r in mine] == [
        ("INFO", "webhook: github push to 'main' at c0ffee000000, fetch scheduled"),
        (
            "WARNING",
            "webhook: refused (401): X-Hub-Signature-256 does not match the body: the "
            "webhook's secret differs from the controller's webhook secret",
        ),
    ]
    for text in (SECRET.decode(), sign(body), sign(body, b"wrong"), "acme/f"):
        assert text not in caplog.text
    assert len(pushes.taken()) == 1


def test_failing_callback_is_a_server_error(caplog: pytest.LogCaptureFixture) -> None:
    """on_push raising must not look like success to the forge (it then retries or shows it)."""

    def broken(event: webhooks.PushEvent) -> None:
        raise RuntimeError("queue closed")

    app = FastAPI()
    app.include_router(webhook_endpoint.webhook_router(SECRET, BRANCH, broken))
    body = payload()
    with serving(app) as port:
        status, answer = Server(port, Pushes()).post(body, github(body))
    assert (status, answer) == (
        500,
        {"detail": "the controller could not schedule a fetch; see its log"},
    )
    assert "webhook: could not schedule a fetch" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secret": b""}, r"^the webhook secret is empty: set a long random secret"),
        ({"branch": ""}, r"^the tracked branch is empty"),
        ({"max_body_bytes": 0}, r"^max_body_bytes must be at least 1, not 0$"),
        ({"path": "hooks"}, r"^the webhook path must start with '/', not 'hooks'$"),
    ],
)
def test_bad_configuration_is_refused_at_construction(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"secret": SECRET, "branch": BRANCH, "on_push": Pushes()}
    with pytest.raises(ValueError, match=message):
        webhook_endpoint.webhook_router(**{**arguments, **kwargs})
