"""The controller process: source -> reconcile -> desired table -> status branch, in one loop.

Position in the flow: this module wires the parts together and owns nothing else. The source
(a Git mirror polled and woken by webhooks, or a working tree woken by a file watcher) hands
each new snapshot to ``Controller.on_snapshot``, which runs the reconciler and renders the
status documents of the devices it touched in a worker thread (``status_documents``), swaps in
the new desired table, and queues those documents for the status writer on the event loop. The
HTTP endpoints (the push webhook for now) run in the same event loop.

Connectors (pushing desired state to agents) and enrollment join later through
``Controller.reconciler.table`` and the status writer.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import fastapi
import pygit2
import uvicorn

from rciots.controller import (
    desired,
    gitsource,
    reconcile,
    snapshots,
    sourceloop,
    statusbranch,
    statusdocs,
    statuswriter,
    webhook_endpoint,
    worktreesource,
)

__all__ = ["Controller", "Settings", "device_status", "status_documents"]

log = logging.getLogger(__name__)

_MIRROR_DIR = "mirror"


@dataclass(frozen=True)
class Settings:
    """What the controller runs with; ``rciots controller`` fills it from its options."""

    source: str = field(repr=False)  # the fleet repo: a URL, or a local path
    state_dir: Path  # the controller's own files (the Git mirror)
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
        self.watcher: worktreesource.WorktreeWatcher | None = None
        self._server: uvicorn.Server | None = None
        self._server_task: asyncio.Task[None] | None = None
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

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
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
        else:
            log.warning(
                "%s is not in a Git repository: device status is not written", settings.source
            )
        if settings.worktree:
            self.watcher = worktreesource.WorktreeWatcher(Path(settings.source), self.source.wake)
            self.watcher.start()
        self.source.start()  # its first fetch comes when the first pass's delay is over
        if settings.listen is not None:
            await self._start_http(*settings.listen)

    async def stop(self) -> None:
        if self._server is not None and self._server_task is not None:
            self._server.should_exit = True
            await self._server_task
        if self.watcher is not None:
            self.watcher.stop()
        await self.source.stop()
        if self.status is not None:
            await self.status.stop()

    # -- reconcile ------------------------------------------------------------------------

    async def on_snapshot(self, snapshot: snapshots.Snapshot) -> None:
        """The source's hand-on: a new snapshot becomes the new desired table."""
        outcome, documents = await asyncio.to_thread(self._reconcile, snapshot)
        self.last_outcome = outcome
        for diagnostic in outcome.diagnostics:
            if diagnostic.severity == "error":
                log.warning("fleet repo %s: %s", snapshot.revision[:12], diagnostic)
        if self.status is not None:
            self._queue_status(documents)
        else:
            self._unqueued.update(documents)  # the first pass: start() queues them

    def _reconcile(
        self, snapshot: snapshots.Snapshot
    ) -> tuple[reconcile.Outcome, dict[str, bytes | None]]:
        """In a worker thread: the pass, and its status documents (rendering them takes
        ~15 ms per thousand devices, which the event loop must not wait for)."""
        outcome = self.reconciler.apply(snapshot)
        if not self._writes_status:
            return outcome, {}
        return outcome, status_documents(self.reconciler.table, outcome)

    def _queue_status(self, documents: Mapping[str, bytes | None]) -> None:
        assert self.status is not None
        for path, content in documents.items():
            self.status.set(path, content)

    # -- HTTP -----------------------------------------------------------------------------

    async def _start_http(self, host: str, port: int) -> None:
        app = fastapi.FastAPI(title="rciots controller", docs_url=None, redoc_url=None)
        if self.settings.webhook_secret:
            app.include_router(
                webhook_endpoint.webhook_router(
                    self.settings.webhook_secret,
                    self.settings.branch,
                    lambda event: self.source.wake(),
                )
            )
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._server_task = asyncio.create_task(self._server.serve(), name="http")
        while not self._server.started:
            if self._server_task.done():
                await self._server_task  # raises why it could not start
                raise OSError(f"the HTTP server on {host}:{port} stopped at start")
            await asyncio.sleep(0.01)

    @property
    def http_port(self) -> int | None:
        """The port the HTTP endpoints listen on (useful with port 0)."""
        if self._server is None:
            return None
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return None


def status_documents(
    table: Mapping[desired.DeviceKey, reconcile.DesiredState], outcome: reconcile.Outcome
) -> dict[str, bytes | None]:
    """The status files a reconcile pass changes, by path: the document of each device
    rendered or failed in it (once, though it may be both), from its entry in the new
    ``table``; None for each device removed."""
    documents: dict[str, bytes | None] = {}
    for key in dict.fromkeys(outcome.rendered + outcome.failed):
        state = table.get(key)
        if state is not None:
            documents[statusdocs.status_path(*key)] = device_status(state)
    for key in outcome.removed:
        documents[statusdocs.status_path(*key)] = None
    return documents


def device_status(state: reconcile.DesiredState) -> bytes:
    """The status document of a device from its desired state (what it applied comes with
    the connector)."""
    return statusdocs.render_status(
        statusdocs.DeviceStatus(
            tenant=state.tenant,
            device=state.device,
            result=statusdocs.RENDER_FAILED if state.failing else statusdocs.PENDING,
            desired_revision=state.revision,
            desired_digest=state.digest or None,
            attempted_revision=state.attempted_revision,
            render_error=state.error,
        )
    )
