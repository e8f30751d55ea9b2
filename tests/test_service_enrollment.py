"""Enrollment in the running controller, against a real Git repo and real HTTPS: a device
enrolls with the example's tokens, is rendered, lands in the registry on the status branch;
a manual enrollment waits, a commit approves it; a restart keeps every identity; a lost state
directory recovers them from Git; disabling or deleting a device in Git takes its access."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from rciots.controller import enroll_endpoint, service
from tests import aio, gitserver
from tests.cryptohelp import csr_pem, ec_key
from tests.fleetcontroller import EXAMPLE, PLANT, WAREHOUSE, controller, settings

DEVICE_DIR = "tenants/acme-sensors/devices"


Body = Callable[[service.Controller, httpx.AsyncClient], Awaitable[None]]


async def running(remote: gitserver.Remote, state: Path, body: Body) -> None:
    """``body`` with the controller of ``remote`` (its files in ``state``; no connector) and
    an HTTPS client of its enrollment endpoint."""
    async with controller(settings(remote, state, connector_on=False)) as started:
        trust = ssl.create_default_context(cafile=str(state / "ca" / "root.pem"))
        url = f"https://127.0.0.1:{started.enrollment_port}"
        async with httpx.AsyncClient(base_url=url, verify=trust, timeout=10) as client:
            await body(started, client)


def request(token: str, name: str, key: object) -> dict[str, object]:
    return {"token": token, "name": name, "csr": csr_pem(key).decode()}  # type: ignore[arg-type]


def branch_file(remote: gitserver.Remote, path: str) -> str | None:
    listed = gitserver.run_git(remote.bare, "ls-tree", "--name-only", "rciots/status", path)
    if not listed.strip():
        return None
    return gitserver.run_git(remote.bare, "show", f"rciots/status:{path}")


def test_enroll_render_approve_restart_and_recover(tmp_path: Path) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", source=EXAMPLE)
    state = tmp_path / "state"
    key, pending_key = ec_key(), ec_key()
    ids: dict[str, str] = {}

    async def first_run(controller: service.Controller, client: httpx.AsyncClient) -> None:
        answer = await client.post(enroll_endpoint.PATH, json=request(WAREHOUSE, "wh-07", key))
        assert answer.status_code == 200
        ids["wh-07"] = answer.json()["deviceId"]
        key_of_device = ("acme-sensors", "wh-07")

        def rendered() -> bool:
            """the enrolled device has a desired state, rendered with its id"""
            state = controller.reconciler.table.get(key_of_device)
            return state is not None and state.digest != ""

        await aio.eventually(rendered)
        # no Device file: the token's labels chose the warehouse fleet's template
        manifests = controller.reconciler.table[key_of_device].manifests
        assert "mqtt-broker" in manifests
        waiting = await client.post(enroll_endpoint.PATH, json=request(PLANT, "pl-01", pending_key))
        assert waiting.status_code == 202
        assert controller.status is not None
        await controller.status.flush()

    aio.run(running(remote, state, first_run))
    registered = branch_file(remote, "registry/acme-sensors/wh-07.yaml")
    assert registered is not None
    assert ids["wh-07"] in registered
    assert "token: warehouse-rollout" in registered
    assert "rciots-dt-" not in registered  # the device token never reaches Git
    pending = branch_file(remote, "pending/acme-sensors/pl-01.yaml")
    assert pending is not None
    assert "kind: PendingEnrollment" in pending
    assert 'address: "127.0.0.1"' in pending
    status = branch_file(remote, "status/acme-sensors/wh-07.yaml")
    assert status is not None
    assert "result: Pending" in status  # rendered for it, never connected
    assert "desiredDigest: sha256:" in status

    # approval is a merged commit; the restarted controller keeps every identity
    remote.commit(
        {
            f"{DEVICE_DIR}/pl-01/device.yaml": (
                "apiVersion: rciots.io/v1\nkind: Device\nmetadata:\n  name: pl-01\n"
                "spec:\n  approved: true\n  template: mqtt-edge\n"
            )
        },
        "approve pl-01",
    )

    async def second_run(controller: service.Controller, client: httpx.AsyncClient) -> None:
        assert controller.registry is not None
        assert controller.registry.get(ids["wh-07"]) is not None
        again = await client.post(enroll_endpoint.PATH, json=request(WAREHOUSE, "wh-07", key))
        assert again.status_code == 200
        assert again.json()["deviceId"] == ids["wh-07"]  # the same device, not a new one
        stranger = await client.post(
            enroll_endpoint.PATH, json=request(WAREHOUSE, "wh-07", ec_key())
        )
        assert stranger.status_code == 409
        approved = await client.post(
            enroll_endpoint.PATH, json=request(PLANT, "pl-01", pending_key)
        )
        assert approved.status_code == 200
        ids["pl-01"] = approved.json()["deviceId"]
        assert controller.status is not None
        await controller.status.flush()

    aio.run(running(remote, state, second_run))
    assert branch_file(remote, "pending/acme-sensors/pl-01.yaml") is None
    assert branch_file(remote, "registry/acme-sensors/pl-01.yaml") is not None

    # a new state directory (the old one lost): the identities come back from the branch
    async def recovered(controller: service.Controller, client: httpx.AsyncClient) -> None:
        store = controller.registry
        assert store is not None
        assert {r.name for r in store.registrations()} == {"wh-07", "pl-01"}

        def rendered() -> bool:
            """the recovered auto-enrolled device is rendered again"""
            return ("acme-sensors", "wh-07") in controller.reconciler.table

        await aio.eventually(rendered)

    aio.run(running(remote, tmp_path / "new-state", recovered))


def test_disabling_or_deleting_a_device_in_git_takes_its_access(tmp_path: Path) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", source=EXAMPLE)
    device_file = (
        "apiVersion: rciots.io/v1\nkind: Device\nmetadata:\n  name: pl-02\n"
        "spec:\n  approved: true\n  enabled: {enabled}\n  template: mqtt-edge\n"
    )
    remote.commit({f"{DEVICE_DIR}/pl-02/device.yaml": device_file.format(enabled="true")})

    async def body(controller: service.Controller, client: httpx.AsyncClient) -> None:
        answer = await client.post(enroll_endpoint.PATH, json=request(PLANT, "pl-02", ec_key()))
        assert answer.status_code == 200  # approved before it asked
        device_id = answer.json()["deviceId"]
        assert device_id not in controller.access.denied
        remote.commit({f"{DEVICE_DIR}/pl-02/device.yaml": device_file.format(enabled="false")})

        def denied() -> bool:
            """the disabled device is on the deny list"""
            return device_id in controller.access.denied

        await aio.eventually(denied)
        assert controller.access.denied[device_id] == "device acme-sensors/pl-02 is disabled"
        refused = await client.post(enroll_endpoint.PATH, json=request(PLANT, "pl-02", ec_key()))
        assert refused.status_code == 403
        remote.commit({f"{DEVICE_DIR}/pl-02/device.yaml": None}, "decommission pl-02")

        def removed() -> bool:
            """the deleted device's registration is gone, and with it its access"""
            assert controller.registry is not None
            return controller.registry.get(device_id) is None

        await aio.eventually(removed)
        assert controller.status is not None
        await controller.status.flush()
        assert branch_file(remote, "registry/acme-sensors/pl-02.yaml") is None

    aio.run(running(remote, tmp_path / "state", body))
