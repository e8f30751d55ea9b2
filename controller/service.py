"""The controller process: source -> reconcile -> desired table -> connector and status branch,
with enrollment and the status page, in one event loop.

Position in the flow: this module wires the parts together and owns nothing else. The source
(a Git mirror polled and woken by webhooks, or a working tree woken by a file watcher) hands
each new snapshot to ``Controller.on_snapshot``, which runs the reconciler in a worker thread
(with the registry's enrolled devices; it also decides who may connect, and renders the status
documents of the devices it touched: ``observations.status_documents``), then has the connector
close the sessions of devices that may no longer connect and push what changed, and queues the
documents for the status writer. Enrollment (HTTPS) records identities in the registry, whose
changes are queued for the status branch (a newly enrolled device brings a pass of its own);
the connector reaches the rest of the controller through this one, its ``connector.Devices``;
the status page, its API, metrics and the push webhook are served on the HTTP listener.

A device's status document is rendered again whenever its desired state changes (in a pass)
or what was observed of it does (``observations``, which the connector feeds through this
controller).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import fastapi
import pygit2

from rciots.agent.bundle import ApplyResult, Bundle
from rciots.controller import (
    auth,
    ca,
    castore,
    changes,
    connector,
    desired,
    enroll_endpoint,
    enrolled,
    enrollment,
    gitsource,
    httpserver,
    metrics,
    observations,
    observed,
    ratelimit,
    reconcile,
    registry,
    registrydocs,
    snapshots,
    sourceloop,
    statusbranch,
    statuspage,
    statuswriter,
    webhook_endpoint,
    worktreesource,
)

__all__ = ["Controller", "EnrollmentSettings", "Settings"]

log = logging.getLogger(__name__)

_MIRROR_DIR = "mirror"
_CA_DIR = "ca"
_REGISTRY_FILE = "registry.sqlite3"
# a burst of enrollments becomes one reconcile pass, this long after the first of them
_ENROLLED_PASS_DELAY = 0.2


@dataclass(frozen=True)
class EnrollmentSettings:
    """The CA, the registry's policies and the HTTPS enrollment endpoint."""

    listen: tuple[str, int] | None = None  # host and port of HTTPS enrollment; None: off
    server_names: tuple[str, ...] = ("localhost", "127.0.0.1")  # in the server certificate
    connector_url: str | None = None  # told to devices; None: from the first name and port
    ca_dir: Path | None = None  # None: <state dir>/ca
    key_type: ca.KeyType = "ec-p256"
    device_lifetime: timedelta = ca.DEFAULT_DEVICE_LIFETIME
    pending_ttl: timedelta = timedelta(days=7)
    max_pending_per_token: int = 100
    limits: ratelimit.ClientLimits = field(default_factory=ratelimit.ClientLimits)

    def policy(self, connector_port: int | None) -> enrollment.Policy:
        port = connector_port or 8444
        url = self.connector_url or f"wss://{self.server_names[0]}:{port}{connector.PATH}"
        return enrollment.Policy(
            connector_url=url,
            device_lifetime=self.device_lifetime,
            pending_ttl=self.pending_ttl,
            max_pending_per_token=self.max_pending_per_token,
        )


@dataclass(frozen=True)
class Settings:
    """What the controller runs with; ``rciots controller`` fills it from its options."""

    source: str = field(repr=False)  # the fleet repo: a URL, or a local path
    state_dir: Path  # the controller's own files: Git mirror, CA, registry, admin credential
    branch: str = gitsource.DEFAULT_BRANCH
    worktree: bool = False  # read a local working tree as saved, not its commits
    poll_interval: float = sourceloop.DEFAULT_INTERVAL
    credentials: gitsource.Credentials = field(default_factory=gitsource.Credentials)
    ca_bundle: Path | None = None
    policy: desired.PolicyCheck | None = None
    status_branch: str = statusbranch.DEFAULT_BRANCH
    status_window: float = statuswriter.DEFAULT_WINDOW
    webhook_secret: bytes | None = field(default=None, repr=False)
    listen: tuple[str, int] | None = None  # host and port of the HTTP endpoints
    enrollment: EnrollmentSettings = field(default_factory=EnrollmentSettings)
    # where agents connect (the connector's WebSocket endpoint) and its limits
    agents: connector.ConnectorSettings = field(default_factory=connector.ConnectorSettings)
    # the status page on the HTTP endpoints (``listen``)
    page: statuspage.PageSettings = field(default_factory=statuspage.PageSettings)


def _is_local_path(source: str) -> bool:
    return "://" not in source and not source.startswith("git@")


def _local_repository(source: str) -> Path | None:
    """The Git repository (its git directory) at a local path or file:// source, else None.

    Only a repository whose top is exactly that folder: a fleet repo folder that sits inside
    some other repository (say, an example in a project's checkout) must not get a status
    branch written into that other repository."""
    if source.startswith("file://"):
        source = urllib.parse.unquote(urllib.parse.urlsplit(source).path)
    elif not _is_local_path(source):
        return None
    folder = Path(source).resolve()
    found = pygit2.discover_repository(str(folder))
    if not found:
        return None
    repo = pygit2.Repository(found)
    top = Path(repo.workdir) if repo.workdir else Path(repo.path)
    return Path(found) if top.resolve() == folder else None


class Controller:
    """One controller: ``await start()``, then ``await stop()`` (which writes what is
    pending to the status branch)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reconciler = reconcile.Reconciler(policy=settings.policy)
        self.last_outcome: reconcile.Outcome | None = None
        self.last_snapshot: snapshots.Snapshot | None = None
        self.watcher: worktreesource.WorktreeWatcher | None = None
        self._http: httpserver.Server | None = None
        self._https: httpserver.Server | None = None
        self.authority: ca.Authority | None = None
        self.registry: registry.Registry | None = None
        self.enroller: enrollment.Enroller | None = None
        # device id -> why it may not connect (disabled, not approved, tenant disabled)
        self.access: enrolled.Access = enrolled.Access({}, ())
        self.connector: connector.Connector | None = None
        self._pass_lock = asyncio.Lock()  # one reconcile pass at a time
        self._enrolled_pass: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        mirror: sourceloop.Mirror
        local = _local_repository(settings.source)
        # a repository on this machine keeps the status branch itself (libgit2 cannot push
        # to a non-bare one, and writing one ref there directly is what a push would do)
        self._status_branch = (
            statusbranch.StatusBranch(local, settings.status_branch) if local else None
        )
        self.git_mirror: gitsource.GitMirror | None = None
        if settings.worktree:
            mirror = worktreesource.WorktreeMirror(Path(settings.source))
        else:
            url = settings.source
            if _is_local_path(url):
                url = Path(url).resolve().as_uri()
            git_mirror = gitsource.GitMirror(
                gitsource.SourceConfig(
                    url=url,
                    mirror=settings.state_dir / _MIRROR_DIR,
                    branch=settings.branch,
                    credentials=settings.credentials,
                    ca_bundle=settings.ca_bundle,
                )
            )
            mirror = git_mirror
            self.git_mirror = git_mirror
        self.source = sourceloop.SourceLoop(
            mirror, self.on_snapshot, interval=settings.poll_interval
        )
        self.status: statuswriter.StatusWriter | None = None
        # whether status is written at all: a local repository, or the mirror of a remote one
        self._writes_status = self._status_branch is not None or self.git_mirror is not None
        self._unqueued: dict[str, bytes | None] = {}  # documents made before the writer ran
        # for the status page and metrics: what changed, how long passes take, enrollments
        self.changes = changes.Changes()
        self.observations = observations.Observations(
            lambda: self.reconciler.table,
            self.changes,
            self._queue_or_keep if self._writes_status else None,
        )
        self.reconcile_durations = metrics.Histogram()
        self.enrollment_outcomes: collections.Counter[str] = collections.Counter()
        self.page: statuspage.StatusPage | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open_identity)
        # the first pass before anything else: the desired table is there once started (or
        # the source reports why not), and the mirror, which keeps the status branch, exists
        await self.source.run_once()
        mirror = self.git_mirror
        if self._status_branch is None and mirror is not None:
            # commits wait for a fetch in progress: both write objects and refs in the mirror
            self._status_branch = statusbranch.StatusBranch(
                mirror.repository_path,
                settings.status_branch,
                remote_url=mirror.remote_url,
                callbacks=mirror.remote_callbacks,
                lock=lambda: mirror.lock(mirror.config.fetch_timeout),
            )
        if self._status_branch is not None:
            self.status = statuswriter.StatusWriter(self._status_branch, settings.status_window)
            await self.status.start()
            self._queue_status(self._unqueued)
            self._unqueued = {}
            self._sync_registry(self.status.committed)
        else:
            log.warning(
                "%s is not in a Git repository: device status is not written", settings.source
            )
        if settings.worktree:
            self.watcher = worktreesource.WorktreeWatcher(Path(settings.source), self.source.wake)
            self.watcher.start()
        self.source.start()  # its first fetch comes when the first pass's delay is over
        if settings.listen is not None:
            self._http = await httpserver.Server.start(self._http_app(), *settings.listen)
        if settings.agents.listen is not None:
            await self._start_connector()
        assert self.authority is not None
        assert self.registry is not None
        self.enroller = enrollment.Enroller(
            self.authority,
            self.registry,
            settings.enrollment.policy(self.connector.port if self.connector else None),
        )
        if settings.enrollment.listen is not None:
            await self._start_enrollment(*settings.enrollment.listen)

    async def stop(self) -> None:
        if self.page is not None:
            self.page.close()  # ends its event streams, which the HTTP server waits for
        for server in (self._https, self._http):
            if server is not None:
                await server.stop()
        if self.connector is not None:
            await self.connector.stop()
        if self.watcher is not None:
            self.watcher.stop()
        await self.source.stop()
        if self._enrolled_pass is not None:
            await self._enrolled_pass
        if self.status is not None:
            await self.status.stop()
        if self.registry is not None:
            self.registry.close()

    # -- reconcile ------------------------------------------------------------------------

    async def on_snapshot(self, snapshot: snapshots.Snapshot) -> None:
        """The source's hand-on: a new snapshot becomes the new desired table."""
        async with self._pass_lock:
            self.last_snapshot = snapshot
            await self._pass(snapshot)

    async def _pass(self, snapshot: snapshots.Snapshot) -> None:
        seen = dict(self.observed)  # the worker thread reads a copy
        outcome, documents = await asyncio.to_thread(self._reconcile, snapshot, seen)
        self.last_outcome = outcome
        if documents:
            # the pass's documents of devices observed while it ran hold what was seen
            # before: those are rendered once more, from both news
            documents.update(
                self.observations.observed_during(seen, outcome.rendered + outcome.failed)
            )
        self.reconcile_durations.observe(outcome.seconds)
        self.changes.bump()
        if self.connector is not None:
            await self.connector.enforce()
            await self.connector.push_changed(outcome.changed)
        for diagnostic in outcome.diagnostics:
            if diagnostic.severity == "error":
                log.warning("fleet repo %s: %s", snapshot.revision[:12], diagnostic)
        if self.status is not None:
            self._queue_status(documents)
        else:
            self._unqueued.update(documents)  # the first pass: start() queues them

    def _reconcile(
        self,
        snapshot: snapshots.Snapshot,
        seen: Mapping[desired.DeviceKey, observed.Observed],
    ) -> tuple[reconcile.Outcome, dict[str, bytes | None]]:
        """In a worker thread: the pass, and its status documents (rendering them takes
        ~15 ms per thousand devices, which the event loop must not wait for)."""
        store = self.registry
        registrations = store.registrations() if store is not None else []
        outcome = self.reconciler.apply(snapshot, enrolled.enrolled_of(registrations))
        if store is not None:
            self.access = enrolled.decide_access(
                registrations, self.reconciler.loaded, snapshot.files
            )
            for device_id in self.access.removed:
                gone = store.remove(device_id)
                if gone is not None:
                    log.info("removed the registration of %s/%s: deleted from Git", *gone.key)
            if self.enroller is not None:
                self.enroller.expire_pending(datetime.now(UTC))
        if not self._writes_status:
            return outcome, {}
        return outcome, observations.status_documents(self.reconciler.table, outcome, seen)

    def _queue_status(self, documents: Mapping[str, bytes | None]) -> None:
        assert self.status is not None
        for path, content in documents.items():
            self.status.set(path, content)

    # -- enrollment -------------------------------------------------------------------------

    def _open_identity(self) -> None:
        """In a worker thread at start: the CA (created on first start) and the registry."""
        settings = self.settings.enrollment
        folder = self.ca_dir
        self.authority = castore.load_or_create(
            folder, settings.server_names, datetime.now(UTC), settings.key_type
        )
        self.registry = registry.Registry(
            self.settings.state_dir / _REGISTRY_FILE, listener=self._on_registry_change
        )

    def _on_registry_change(
        self,
        kind: Literal["registration", "pending"],
        key: tuple[str, str],
        value: object | None,
    ) -> None:
        """From any thread: queue the changed registry file for the status branch."""
        self.changes.bump()
        path = (
            registrydocs.registration_path(*key)
            if kind == "registration"
            else registrydocs.pending_path(*key)
        )
        content: bytes | None = None
        if isinstance(value, registry.Registration):
            content = registrydocs.render_registration(value)
        elif isinstance(value, registry.Pending):
            content = registrydocs.render_pending(value)
        documents = {path: content}
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._queue_or_keep(documents)
        else:
            loop.call_soon_threadsafe(self._queue_or_keep, documents)

    def _queue_or_keep(self, documents: Mapping[str, bytes | None]) -> None:
        if self.status is not None:
            self._queue_status(documents)
        elif self._writes_status:
            self._unqueued.update(documents)

    def _sync_registry(self, branch: Mapping[str, bytes]) -> None:
        """At start: take in the branch's registrations and pending entries that the store
        lacks (a new state directory recovers every identity from Git), and queue the
        store's files (the writer skips those the branch holds already)."""
        store = self.registry
        if store is None:
            return
        imported = registrydocs.read_documents(
            (path, content)
            for path, content in branch.items()
            if path.startswith(("registry/", "pending/"))
        )
        for problem in imported.problems:
            log.warning("status branch: %s", problem)
        added = 0
        with store.atomic():
            for entry in imported.registrations:
                if store.get(entry.device_id) is None and store.by_name(*entry.key) is None:
                    store.put(entry)
                    added += 1
            for waiting in imported.pending:
                if store.pending(*waiting.key) is None:
                    store.put_pending(waiting)
        if added:
            log.info("took %d registration(s) from the status branch into the registry", added)
            self._schedule_enrolled_pass()
        documents: dict[str, bytes | None] = {}
        for entry in store.registrations():
            documents[registrydocs.registration_path(*entry.key)] = (
                registrydocs.render_registration(entry)
            )
        for waiting in store.all_pending():
            documents[registrydocs.pending_path(*waiting.key)] = registrydocs.render_pending(
                waiting
            )
        for path in branch:  # on the branch, gone from the store: removed while we were down
            if path.startswith(("registry/", "pending/")) and path not in documents:
                documents[path] = None
        self._queue_status(documents)

    def on_enrollment(self, answer: enrollment.Answer) -> None:
        """Every answer of the enrollment endpoint: a new device gets rendered soon."""
        self.enrollment_outcomes[answer.outcome] += 1
        if answer.outcome == "enrolled":
            self._schedule_enrolled_pass()

    def _schedule_enrolled_pass(self) -> None:
        if self._enrolled_pass is None or self._enrolled_pass.done():
            self._enrolled_pass = asyncio.create_task(self._enrolled_pass_soon())

    async def _enrolled_pass_soon(self) -> None:
        await asyncio.sleep(_ENROLLED_PASS_DELAY)
        async with self._pass_lock:
            snapshot = self.last_snapshot
            if snapshot is None:
                return  # the first snapshot's pass will see the registry
            # the same files again: only devices whose enrollment changed are rendered
            await self._pass(dataclasses.replace(snapshot, changed=frozenset()))

    def enrollment_app(self) -> fastapi.FastAPI:
        assert self.enroller is not None  # start() opened it
        app = fastapi.FastAPI(title="rciots enrollment", docs_url=None, redoc_url=None)
        app.include_router(
            enroll_endpoint.enroll_router(
                self.enroller,
                lambda: self.reconciler.loaded,
                limits=self.settings.enrollment.limits,
                on_answer=self.on_enrollment,
            )
        )
        return app

    async def _start_enrollment(self, host: str, port: int) -> None:
        folder = self.ca_dir
        self._https = await httpserver.Server.start(
            self.enrollment_app(),
            host,
            port,
            certificate=folder / "server.pem",
            key=folder / "server.key",
            name="enrollment",
        )

    # -- the connector and what it needs of the controller (connector.Devices) ---------------

    async def _start_connector(self) -> None:
        assert self.authority is not None
        folder = self.ca_dir
        tls = connector.server_context(
            folder / "server.pem", folder / "server.key", folder / "root.pem"
        )
        self.connector = connector.Connector(self.settings.agents, self.authority, tls, self)
        await self.connector.start()

    def registration(self, device_id: str) -> registry.Registration | None:
        return self.registry.get(device_id) if self.registry is not None else None

    def denied(self, device_id: str) -> str | None:
        return self.access.denied.get(device_id)

    def desired(self, key: tuple[str, str]) -> Bundle | None:
        state = self.reconciler.table.get(key)
        return state.bundle() if state is not None else None

    def renew(self, registration: registry.Registration, csr_pem: str) -> tuple[str, str]:
        """Sign a renewal CSR for a connected device (``Enroller.renew``)."""
        assert self.enroller is not None  # start() made it before any session could start
        issued = self.enroller.renew(registration.device_id, csr_pem.encode(), _now())
        return issued.chain_pem.decode(), self.enroller.authority.ca_bundle_pem().decode()

    def connected(self, key: tuple[str, str], applied_digest: str | None) -> None:
        self.observations.connected(key, applied_digest)

    def disconnected(self, key: tuple[str, str]) -> None:
        self.observations.disconnected(key)

    def applied(self, key: tuple[str, str], bundle: Bundle, result: ApplyResult) -> None:
        self.observations.applied(key, bundle, result)

    def seen(self, key: tuple[str, str]) -> None:
        self.observations.seen(key)

    @property
    def observed(self) -> dict[tuple[str, str], observed.Observed]:
        """What was observed of each device, for the status page (``Observations.latest``)."""
        return self.observations.latest

    @property
    def ca_dir(self) -> Path:
        """The CA's folder: root.pem in it is what devices trust."""
        return self.settings.enrollment.ca_dir or self.settings.state_dir / _CA_DIR

    @property
    def enrollment_port(self) -> int | None:
        return self._https.port if self._https is not None else None

    # -- HTTP -----------------------------------------------------------------------------

    def _http_app(self) -> fastapi.FastAPI:
        app = fastapi.FastAPI(
            title="rciots controller",
            summary="Read-only fleet status, health and metrics (docs/status-page.md)",
            version="1",
            docs_url=None,
            redoc_url=None,
        )
        admin_token = self.settings.page.admin_token
        if admin_token is None:
            admin_token, _ = auth.load_or_create_admin_token(self.settings.state_dir)
        self.page = statuspage.StatusPage(self, self.settings.page, admin_token)
        self.page.install(app)
        if self.settings.webhook_secret:
            app.include_router(
                webhook_endpoint.webhook_router(
                    self.settings.webhook_secret,
                    self.settings.branch,
                    lambda event: self.source.wake(),
                )
            )
        return app

    @property
    def status_branch(self) -> statusbranch.StatusBranch | None:
        """Where status is committed (None when it is not written), for readers of its log."""
        return self._status_branch

    @property
    def http_port(self) -> int | None:
        """The port the HTTP endpoints listen on (useful with port 0)."""
        return self._http.port if self._http is not None else None


def _now() -> datetime:
    return datetime.now(UTC)
