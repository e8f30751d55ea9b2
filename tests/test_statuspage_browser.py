"""The status page in a real browser (Debian's chromium, driven by Playwright) against a real
`rciots controller` process with real `rciots-agent` processes connected over mutual TLS.

The overview shows the connected agents; stopping an agent turns its row offline while the
page stays loaded; a failing apply (a kubectl agent whose kubectl fails one resource) shows
its error on the device page; a viewer of one tenant sees none of the other's devices, in the
page and in the API; text a tenant or a device controls (a label holding a script, a tenant's
display name, a device's system information) renders as text, inert.

Screenshots go to the test's tmp folder and to .artifacts/screenshots/ (ignored by Git), for
a person to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Page, sync_playwright

from rciots.controller import registry, registrydocs, statusbranch
from tests import fakekubectl, fleetprocesses, gitserver
from tests.fleetcontroller import EXAMPLE, WAREHOUSE
from tests.processes import Process

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / ".artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN = "rciots-adm-browser-test-admin-credential"
NORTHWIND_VIEWER = "rciots-vw-dGgP4GhiVb519zHetftVAyEpmjOIbNRK5kHJDrgz8jw"  # example README
SCRIPT_LABEL = "<script>window.__xss = 'label'</script>"
SCRIPT_NAME = "ACME <script>window.__xss = 'tenant'</script> Sensors"
SCRIPT_SYSTEM = "<img src=x onerror=\"window.__xss = 'system'\">"
WEB = "https://forge.example/edge/fleet/commit/{revision}"


def make_repo(folder: Path) -> Path:
    """The example fleet repo, whose acme-sensors tenant has a display name holding a
    script, and whose status branch holds a pending enrollment with a label holding one
    (labels are checked at enrollment; the status branch can be written by anyone who may
    push to the repo, so the page must not trust it either)."""
    repo = folder / "fleet"
    shutil.copytree(EXAMPLE, repo)
    tenant = repo / "tenants/acme-sensors/tenant.yaml"
    text = tenant.read_text()
    display = "  displayName: ACME Sensors — plant and warehouse telemetry\n"
    assert display in text
    tenant.write_text(text.replace(display, f"  displayName: {SCRIPT_NAME!r}\n"))
    gitserver.run_git(None, "init", "-q", "-b", "main", str(repo))
    gitserver.run_git(repo, "add", "-A")
    gitserver.run_git(repo, "commit", "-qm", "fleet")
    now = datetime.now(UTC)
    intruder = registry.Pending(
        tenant="acme-sensors",
        name="intruder",
        token="plant-commissioning",
        key_fingerprint="sha256:" + "ab" * 32,
        address="203.0.113.9",
        requested_at=now,
        last_request_at=now,
        labels={"note": SCRIPT_LABEL},
        system={"os": SCRIPT_SYSTEM},
    )
    statusbranch.StatusBranch(repo).commit(
        {
            registrydocs.pending_path("acme-sensors", "intruder"): registrydocs.render_pending(
                intruder
            )
        },
        "a pending enrollment written by hand",
    )
    return repo


class Fleet:
    """A controller process and agent processes; all stopped by ``close``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: list[Process] = []
        try:
            self._start_all()
        except BaseException:
            self.close()  # what did start is stopped, whatever failed
            raise

    def _start_all(self) -> None:
        folder = self.folder
        repo = make_repo(folder)
        self.state = folder / "state"
        self.enroll_port = gitserver.free_port()
        self.http_port = gitserver.free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.controller = self._start(
            fleetprocesses.controller_argv(
                repo,
                self.state,
                self.enroll_port,
                "--poll-interval",
                "0.5",
                "--connect-listen",
                "127.0.0.1:0",
                "--listen",
                f"127.0.0.1:{self.http_port}",
                "--repo-web-url",
                WEB,
            ),
            env={**os.environ, "RCIOTS_ADMIN_TOKEN": ADMIN},
        )
        self.controller.wait_for("controller running on")
        self.agents = {name: self.agent(name, "directory") for name in ("wh-ok-1", "wh-ok-2")}
        kubectl = fakekubectl.install(folder / "bin")
        script = folder / "kube-script.json"
        script.write_text('{"fail": {"apply": ["Deployment/sensor-collector"]}}')
        self.agents["wh-bad"] = self.agent(
            "wh-bad",
            "kubectl",
            ["--kubectl", str(kubectl)],
            {"FAKE_KUBE_SCRIPT": str(script), "FAKE_KUBE_LOG": str(folder / "kube.log")},
        )

    def _start(self, argv: list[str], env: dict[str, str]) -> Process:
        process = Process(argv, env=env)
        self.processes.append(process)
        return process

    def agent(
        self,
        name: str,
        applier: str,
        options: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Process:
        return self._start(
            fleetprocesses.agent_argv(
                name, self.folder / name, self.state, self.enroll_port, applier, *(options or [])
            ),
            env={**os.environ, **(env or {}), "RCIOTS_TOKEN": WAREHOUSE},
        )

    def close(self) -> None:
        for process in reversed(self.processes):  # agents first, then the controller
            process.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed (scripts/test-tools installs it, as root)")
    running = Fleet(tmp_path_factory.mktemp("statuspage-browser"))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def browser(fleet: Fleet) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # Debian's chromium; Playwright's own browser download is never used
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    opened.on("dialog", on_dialog)
    try:
        yield opened
    finally:
        context.close()
    assert dialogs == [], "a script ran: it opened a dialog"


def log_in(page: Page, fleet: Fleet, credential: str, path: str = "/") -> None:
    page.goto(fleet.url + path)
    assert "/login" in page.url
    page.fill("input[name=credential]", credential)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(fleet.url + path)


def row(page: Page, name: str, state: str | None = None) -> str:
    selector = f'tr[data-device="acme-sensors/{name}"]'
    return selector + (f'[data-state="{state}"]' if state else "")


def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / path.name)


def test_the_overview_shows_the_connected_agents(page: Page, fleet: Fleet, tmp_path: Path) -> None:
    log_in(page, fleet, ADMIN)
    # the agents enroll and apply while the page is open: it follows without a reload
    for name in ("wh-ok-1", "wh-ok-2"):
        page.wait_for_selector(row(page, name, "in-sync"), timeout=20_000)
    page.wait_for_selector(row(page, "wh-bad", "failed"), timeout=20_000)
    assert page.locator("#live-state").inner_text() == "live"
    ok = page.locator(row(page, "wh-ok-1"))
    assert "online" in ok.inner_text()
    assert page.locator('[data-count="in-sync"]').inner_text() == "2"
    assert page.locator('[data-count="failed"]').inner_text() == "1"
    screenshot(page, tmp_path, "overview")


def test_a_stopped_agent_turns_offline_without_a_reload(
    page: Page, fleet: Fleet, tmp_path: Path
) -> None:
    log_in(page, fleet, ADMIN)
    page.wait_for_selector(row(page, "wh-ok-2", "in-sync"), timeout=20_000)
    page.evaluate("window.__same_page = true")
    assert fleet.agents["wh-ok-2"].stop() == 0
    page.wait_for_selector(row(page, "wh-ok-2", "offline"), timeout=15_000)
    assert page.evaluate("window.__same_page") is True  # no reload: the row was refreshed
    offline = page.locator(row(page, "wh-ok-2")).inner_text()
    assert "offline" in offline.lower()
    assert "seen" in offline
    screenshot(page, tmp_path, "overview-agent-stopped")


def test_a_failing_apply_shows_its_error_on_the_device_page(
    page: Page, fleet: Fleet, tmp_path: Path
) -> None:
    log_in(page, fleet, ADMIN, "/devices/acme-sensors/wh-bad")
    problem = page.locator(".card.problem")
    problem.wait_for(timeout=20_000)
    text = problem.inner_text()
    assert "Deployment/sensor-collector" in text
    assert "Error from server" in text  # what the (fake) kubectl said
    failed = page.locator("table.resources tr.bad")
    assert failed.count() == 1
    assert "failed" in failed.inner_text()
    assert page.locator("table.resources tbody tr").count() > 1  # the others were applied
    assert "Failed" in page.locator(".device-head .badge").first.inner_text()
    desired = page.locator("dl.facts a.rev").first.get_attribute("href")
    assert desired is not None
    assert desired.startswith("https://forge.example/edge/fleet/commit/")
    screenshot(page, tmp_path, "device-failed")


def test_a_viewer_sees_only_its_tenant(page: Page, fleet: Fleet, tmp_path: Path) -> None:
    log_in(page, fleet, NORTHWIND_VIEWER)
    devices = page.locator("table.devices tbody tr").all_inner_texts()
    assert len(devices) == 4
    assert all("northwind-retail" in text for text in devices)
    assert "acme-sensors" not in page.locator("main").inner_text()
    page.goto(fleet.url + "/devices/acme-sensors/wh-ok-1")
    assert "Not found" in page.locator("main").inner_text()
    screenshot(page, tmp_path, "viewer-not-found")
    answer = page.request.get(
        fleet.url + "/api/v1/devices",
        headers={"Authorization": f"Bearer {NORTHWIND_VIEWER}"},
    )
    assert answer.status == 200
    assert {device["tenant"] for device in answer.json()} == {"northwind-retail"}
    other = page.request.get(
        fleet.url + "/api/v1/devices/acme-sensors/wh-ok-1",
        headers={"Authorization": f"Bearer {NORTHWIND_VIEWER}"},
    )
    assert other.status == 404


def test_text_holding_a_script_renders_inert(page: Page, fleet: Fleet, tmp_path: Path) -> None:
    log_in(page, fleet, ADMIN, "/?q=intruder")
    intruder = page.locator(row(page, "intruder", "pending-approval"))
    intruder.wait_for(timeout=10_000)
    assert f"note={SCRIPT_LABEL}" in intruder.inner_text()  # shown as text
    assert SCRIPT_NAME in page.locator(".tenant-list").inner_text()
    page.goto(fleet.url + "/enrollments")
    card = page.locator('article[data-device="acme-sensors/intruder"]')
    assert SCRIPT_LABEL in card.inner_text()
    assert f"os={SCRIPT_SYSTEM}" in card.inner_text()
    screenshot(page, tmp_path, "enrollments")
    page.goto(fleet.url + "/devices/acme-sensors/intruder")
    assert SCRIPT_LABEL in page.locator("main").inner_text()
    assert page.evaluate("typeof window.__xss") == "undefined"  # nothing ran
    assert page.locator("main script, main img").count() == 0  # nothing became markup
