"""The status page's JSON API, its access rules, health, readiness and metrics, over HTTP with
httpx against a running controller (real uvicorn on loopback) on the example fleet repo, with
a real agent connected (directory applier) and a real pending enrollment.

One controller serves the whole module; the tests that change it (an agent stops, failed
credentials are throttled) come last.
"""

from __future__ import annotations

import dataclasses
import http.client
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import TypeAdapter

from rciots.controller import fleetview, service, statusapi, statuspage
from tests import gitserver
from tests.cryptohelp import csr_pem, ec_key
from tests.fleetcontroller import EXAMPLE, PLANT, RunningAgent, agent_config, settings
from tests.liveloop import LiveController

ADMIN = "rciots-adm-api-test-admin-credential"
ACME_VIEWER = "rciots-vw-2Mt8v2MbhCymUpBTae3Xnlncc624-x8711TenBDuJoI"  # example README
NORTHWIND_VIEWER = "rciots-vw-dGgP4GhiVb519zHetftVAyEpmjOIbNRK5kHJDrgz8jw"
WEB = "https://forge.example/edge/fleet/commit/{revision}"
AGENT = ("acme-sensors", "wh-api-01")
WAITING = ("acme-sensors", "plant-gw-77")


class Fleet:
    def __init__(self, folder: Path) -> None:
        self.remote = gitserver.make_remote(folder / "fleet.git", source=EXAMPLE)
        wanted = dataclasses.replace(
            settings(self.remote, folder / "state"),
            listen=("127.0.0.1", 0),
            page=statuspage.PageSettings(
                admin_token=ADMIN,
                repo_web_url=WEB,
                min_rebuild=0.05,
                event_poll=0.05,
                body_timeout=0.5,
            ),
        )
        self.live = LiveController(wanted)
        self.agent: RunningAgent | None = None
        try:
            self.agent = RunningAgent(agent_config(folder / "agent", self.controller, AGENT[1]))
            self.live.call(_start(self.agent))
            self.key = ec_key()
            self.pending_answer = self._enroll_manually(folder)
        except BaseException:
            self.close()
            raise

    @property
    def controller(self) -> service.Controller:
        return self.live.controller

    def client(self, credential: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        return httpx.Client(base_url=self.live.url, headers=headers, timeout=10)

    def _enroll_manually(self, folder: Path) -> httpx.Response:
        root = folder / "state" / "ca" / "root.pem"
        body = {
            "token": PLANT,
            "name": WAITING[1],
            "csr": csr_pem(self.key).decode(),
            "labels": {"site": "plant-7"},
            "system": {"os": "<b>bold</b>-os"},
        }
        url = f"https://127.0.0.1:{self.controller.enrollment_port}/v1/enroll"
        with httpx.Client(verify=ssl.create_default_context(cafile=root), timeout=10) as client:
            return client.post(url, json=body)

    def close(self) -> None:
        if self.agent is not None and self.agent.running:
            self.live.call(self.agent.halt())
        self.live.close()


async def _start(agent: RunningAgent) -> None:
    agent.start()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    running = Fleet(tmp_path_factory.mktemp("statuspage-api"))
    try:
        yield running
    finally:
        running.close()


def eventually(check: Callable[[], bool], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within} s: {check.__doc__ or check}")
        time.sleep(0.05)


def devices(client: httpx.Client, **params: str) -> dict[tuple[str, str], dict[str, object]]:
    answer = client.get("/api/v1/devices", params=params)
    assert answer.status_code == 200, answer.text
    return {(d["tenant"], d["name"]): d for d in answer.json()}


def in_sync(fleet: Fleet) -> dict[str, object]:
    with fleet.client(ADMIN) as client:
        found: dict[str, object] = {}

        def check() -> bool:
            """the agent's device is in sync on the API"""
            found.update(devices(client).get(AGENT, {}))
            return found.get("state") == "in-sync"

        eventually(check)
        return found


def test_without_a_credential_the_api_answers_401_and_pages_send_to_login(fleet: Fleet) -> None:
    with fleet.client() as client:
        for path in ("/api/v1/devices", "/api/v1/enrollments?state=pending", "/metrics"):
            answer = client.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["www-authenticate"].startswith("Bearer")
        assert (
            client.get("/api/v1/devices", headers={"Authorization": "Bearer nope"}).status_code
            == 401
        )
        page = client.get("/devices/acme-sensors/wh-api-01?x=1")
        assert page.status_code == 303
        assert (
            page.headers["location"] == "/login?next=%2Fdevices%2Facme-sensors%2Fwh-api-01%3Fx%3D1"
        )
        login = client.get("/login")
        assert login.status_code == 200
        assert 'type="password"' in login.text


def test_devices_follow_the_contract(fleet: Fleet) -> None:
    row = in_sync(fleet)
    head = fleet.remote.head()
    assert row["online"] is True
    assert row["desiredRevision"] == head
    assert row["appliedRevision"] == head
    assert row["desiredDigest"] == row["appliedDigest"]
    with fleet.client(ADMIN) as client:
        answer = client.get("/api/v1/devices")
        listed = TypeAdapter(list[statusapi.Device]).validate_json(answer.content)
        assert answer.headers["content-type"] == "application/json"
    found = {(d.tenant, d.name): d for d in listed}
    # the example's 8 devices, the agent's (enrolled with the automatic token), the waiting one
    assert len(found) == 10
    assert found[WAITING].state == "pending-approval"
    assert found[WAITING].labels == {"site": "plant-7"}
    assert found[("northwind-retail", "store-0042")].state == "offline"
    assert found[("northwind-retail", "store-0042")].online is False
    for item in answer.json():
        assert {"tenant", "name", "online", "state", "desiredRevision", "appliedRevision"} <= set(
            item
        )
        assert item["state"] in fleetview.STATES


def test_filters_on_the_api(fleet: Fleet) -> None:
    in_sync(fleet)
    with fleet.client(ADMIN) as client:
        assert set(devices(client, state="in-sync")) == {AGENT}
        assert set(devices(client, q="store-00")) == {
            ("northwind-retail", "store-0042"),
        }
        assert all(k[0] == "northwind-retail" for k in devices(client, tenant="northwind-retail"))
        assert set(devices(client, label="site=plant-7")) == {WAITING}
        assert client.get("/api/v1/devices", params={"state": "sideways"}).status_code == 422


def test_a_viewer_sees_only_its_tenant(fleet: Fleet) -> None:
    with fleet.client(NORTHWIND_VIEWER) as client:
        seen = devices(client)
        assert {tenant for tenant, _ in seen} == {"northwind-retail"}
        assert len(seen) == 4
        assert devices(client, tenant="acme-sensors") == {}
        # another tenant's device is answered as one that does not exist
        other = client.get("/api/v1/devices/acme-sensors/wh-api-01")
        missing = client.get("/api/v1/devices/northwind-retail/no-such-store")
        assert other.status_code == missing.status_code == 404
        assert other.json() == missing.json()
        assert client.get("/api/v1/enrollments", params={"state": "pending"}).json() == []
        overview = client.get("/api/v1/overview").json()
        assert overview["counts"]["total"] == 4
        assert [t["tenant"] for t in overview["tenants"]] == ["northwind-retail"]
        health = client.get("/api/v1/health").json()
        assert set(health["renderFailures"]) <= {"northwind-retail"}
        assert health["connectedAgents"] == 0  # the agent is acme-sensors'
        # the last pass rendered the agent's device (it enrolled): none of northwind's
        with fleet.client(ADMIN) as admin:
            assert admin.get("/api/v1/health").json()["lastPassRendered"] >= 1
        assert health["lastPassRendered"] == 0
        assert client.get("/api/v1/tokens").json()[0]["tenant"] == "northwind-retail"
        page = client.get("/devices/acme-sensors/wh-api-01")
        assert page.status_code == 404
        assert "wh-api-01" not in page.text.replace("/devices/acme-sensors/wh-api-01", "")
    with fleet.client(ACME_VIEWER) as client:
        assert {tenant for tenant, _ in devices(client)} == {"acme-sensors"}
        assert client.get("/api/v1/devices/acme-sensors/wh-api-01").status_code == 200


def test_pending_enrollments_say_how_to_approve(fleet: Fleet) -> None:
    assert fleet.pending_answer.status_code == 202, fleet.pending_answer.text
    with fleet.client(ADMIN) as client:
        pending = client.get("/api/v1/enrollments", params={"state": "pending"}).json()
        enrolled = client.get("/api/v1/enrollments", params={"state": "enrolled"}).json()
        assert client.get("/api/v1/enrollments", params={"state": "maybe"}).status_code == 422
        page = client.get("/enrollments")
    [waiting] = pending
    assert (waiting["tenant"], waiting["name"], waiting["state"]) == (*WAITING, "pending")
    assert waiting["token"] == "plant-commissioning"
    assert waiting["keyFingerprint"].startswith("sha256:")
    assert waiting["address"] == "127.0.0.1"
    assert waiting["deviceFile"] == "tenants/acme-sensors/devices/plant-gw-77/device.yaml"
    assert (
        "rciots device approve acme-sensors/plant-gw-77 --label site=plant-7"
        in (waiting["approveCommands"])
    )
    assert [e["name"] for e in enrolled] == [AGENT[1]]
    assert enrolled[0]["deviceId"]
    assert enrolled[0]["certificateNotAfter"]
    # what the device sent is text on the page, never markup
    assert page.status_code == 200
    assert "&lt;b&gt;bold&lt;/b&gt;-os" in page.text
    assert "<b>bold</b>" not in page.text
    assert waiting["keyFingerprint"] in page.text


def test_a_device_in_detail(fleet: Fleet) -> None:
    in_sync(fleet)
    assert fleet.controller.status is not None
    fleet.live.call(fleet.controller.status.flush())
    head = fleet.remote.head()
    with fleet.client(ADMIN) as client:
        detail = client.get("/api/v1/devices/acme-sensors/wh-api-01").json()
        page = client.get("/devices/acme-sensors/wh-api-01")
    assert detail["device"]["state"] == "in-sync"
    assert detail["desiredRevisionUrl"] == WEB.format(revision=head)
    assert detail["lastApplyRevision"] == head
    assert detail["resources"]
    assert all(r["ok"] for r in detail["resources"])
    assert {r["resource"] for r in detail["resources"]} >= {"Deployment/mqtt-broker"}
    assert detail["enrollment"]["state"] == "enrolled"
    assert detail["history"], "the status branch's log of its file"
    assert detail["history"][0]["desiredRevision"] == head
    assert page.status_code == 200
    assert f'href="{WEB.format(revision=head)}"' in page.text
    assert "Deployment/mqtt-broker" in page.text


def test_tokens_never_show_a_secret(fleet: Fleet) -> None:
    in_sync(fleet)
    with fleet.client(ADMIN) as client:
        answer = client.get("/api/v1/tokens")
        page = client.get("/tokens")
    tokens = {(t["tenant"], t["name"]): t for t in answer.json()}
    rollout = tokens[("acme-sensors", "warehouse-rollout")]
    assert (rollout["approval"], rollout["maxDevices"], rollout["used"]) == ("auto", 200, 1)
    assert tokens[("acme-sensors", "plant-commissioning")]["pending"] == 1
    hashes = re.findall(
        r"secretHash: (sha256:[0-9a-f]{64})",
        "".join(p.read_text() for p in EXAMPLE.glob("tenants/*/tokens/*.yaml")),
    )
    assert len(hashes) == 4
    for body in (answer.text, page.text):
        assert "secretHash" not in body
        assert not any(h in body or h[7:] in body for h in hashes)


def test_health_readiness_and_metrics(fleet: Fleet) -> None:
    in_sync(fleet)
    with fleet.client() as anyone:
        assert anyone.get("/healthz").text == "ok\n"
        ready = anyone.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "checks": {"reconciled": True, "statusWriter": True}}
    with fleet.client(NORTHWIND_VIEWER) as viewer:
        assert viewer.get("/metrics").status_code == 404  # the admin's only
    with fleet.client(ADMIN) as admin:
        answer = admin.get("/metrics")
        health = admin.get("/api/v1/health").json()
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in answer.text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["rciots_connected_agents"] == 1
    assert values['rciots_devices{state="in-sync"}'] == 1
    assert values['rciots_devices{state="pending-approval"}'] == 1
    assert values['rciots_enrollments_total{outcome="enrolled"}'] == 1
    assert values['rciots_enrollments_total{outcome="pending"}'] == 1
    assert values["rciots_pushes_total"] >= 1
    assert values["rciots_sent_bytes_total"] > 1000  # at least one bundle
    assert values["rciots_reconcile_duration_seconds_count"] >= 1
    assert values['rciots_render_errors{tenant="acme-sensors"}'] == 0
    assert health["ready"]
    assert health["revision"] == fleet.remote.head()
    assert health["connectedAgents"] == 1
    assert health["staleSince"] is None


def test_openapi_documents_the_contract(fleet: Fleet) -> None:
    with fleet.client() as client:
        schema = client.get("/openapi.json").json()
    devices = schema["paths"]["/api/v1/devices"]["get"]
    listed = devices["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed["items"]["$ref"] == "#/components/schemas/Device"
    device = schema["components"]["schemas"]["Device"]
    assert {"tenant", "name", "online", "state", "desiredRevision", "appliedRevision"} <= set(
        device["required"]
    )
    assert set(device["properties"]["state"]["enum"]) == set(fleetview.STATES)
    enrollments = schema["paths"]["/api/v1/enrollments"]["get"]
    assert any(p["name"] == "state" for p in enrollments["parameters"])
    assert "/login" not in schema["paths"]  # pages are not API


def test_login_sets_a_strict_http_only_cookie_and_pages_carry_security_headers(
    fleet: Fleet,
) -> None:
    same_site = {"Sec-Fetch-Site": "same-origin"}
    with fleet.client() as client:
        refused = client.post(
            "/login", data={"credential": ACME_VIEWER}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert refused.status_code == 403
        wrong = client.post("/login", data={"credential": "nope", "next": "/"}, headers=same_site)
        assert wrong.status_code == 401
        assert "not a valid credential" in wrong.text
        answer = client.post(
            "/login",
            data={"credential": ACME_VIEWER, "next": "https://elsewhere.example/"},
            headers=same_site,
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/"  # never to another site
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{statuspage.COOKIE}={ACME_VIEWER};")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/" in cookie
        page = client.get("/")  # the cookie came back with it
        assert page.status_code == 200
        assert "acme-sensors" in page.text
        assert "store-0042" not in page.text
        headers = page.headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["cache-control"] == "no-store"
        assert "<script>" not in page.text  # scripts come from /static/ only
        logout = client.post("/logout", headers=same_site)
        assert logout.status_code == 303
        assert 'rciots_credential=""' in logout.headers["set-cookie"]
        assert client.get("/").status_code == 303


def test_a_login_form_that_does_not_come_whole_in_time_is_refused(fleet: Fleet) -> None:
    """A client that declares a form and sends part of it no longer holds the request open."""
    address = httpx.URL(fleet.live.url)
    request = (
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nSec-Fetch-Site: same-origin\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
        b"credential=rciots-"
    )
    with socket.create_connection((address.host, address.port), timeout=5) as connection:
        connection.sendall(request)
        response = http.client.HTTPResponse(connection)
        response.begin()
        assert response.status == 401
        assert "not a valid credential" in response.read().decode()


def test_a_stopped_agent_goes_offline_and_the_event_stream_says_so(fleet: Fleet) -> None:
    in_sync(fleet)
    assert fleet.agent is not None
    with fleet.client(ADMIN) as client:
        generation = fleet.controller.changes.value
        with client.stream(
            "GET", "/api/v1/events", params={"since": generation}, timeout=10
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            assert next(lines) == "retry: 2000"
            fleet.live.call(fleet.agent.halt())
            event = ""
            for line in lines:
                if line.startswith("event:"):
                    event = line
                    break
            assert event == "event: changed"
        eventually(lambda: devices(client)[AGENT]["state"] == "offline")
        row = devices(client)[AGENT]
        assert row["online"] is False
        assert row["lastSeen"] is not None


def test_failed_credentials_are_throttled(fleet: Fleet) -> None:
    with fleet.client("wrong-credential") as client:
        codes = [client.get("/api/v1/devices").status_code for _ in range(25)]
    assert codes[0] == 401
    assert codes[-1] == 429
    with fleet.client(ADMIN) as client:
        throttled = client.get("/api/v1/devices")
    assert throttled.status_code == 429  # the address is held back, whatever it sends next
    assert int(throttled.headers["retry-after"]) >= 1
