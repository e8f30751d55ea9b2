"""The read-only status web page, its JSON API, and the controller's health and metrics.

Position in the flow: the controller's state (desired table, observations, registry, source
status; see ``service.Controller``) -> ``fleetview`` (pure views) -> **statuspage** (HTTP:
FastAPI routes, Jinja2 pages, server-sent events) -> browsers, API clients, Prometheus.
Served on the controller's ``--listen`` endpoint, next to the push webhook.

Routes:

- pages: ``/`` (fleet overview), ``/devices/{tenant}/{name}``, ``/enrollments``, ``/tokens``,
  ``/health``, ``/login``; each has a live region that the page's script fetches again as a
  fragment (header ``X-Rciots-Fragment``) when ``/api/v1/events`` says something changed;
- the JSON API under ``/api/v1/`` (documented by FastAPI in ``/openapi.json``): ``devices``,
  ``devices/{tenant}/{name}``, ``overview``, ``enrollments``, ``tokens``, ``health``, and
  ``events`` (server-sent events: ``changed``);
- ``/healthz`` (the process answers), ``/readyz`` (the first reconcile pass is done and the
  status writer runs), ``/metrics`` (Prometheus text; the admin's only).

Access (``auth``): a credential as ``Authorization: Bearer`` or in the cookie the login page
sets (HttpOnly, SameSite=Strict). A tenant's viewer sees that tenant only, in every page and
API; a device of another tenant is answered exactly as a device that does not exist. Without
a credential, pages send the browser to the login page and the API answers 401. Failed
credentials are rate limited per client address.

Speed: the views of the whole fleet are built once per change (in a worker thread, at most
every ``min_rebuild`` seconds) and the device list's JSON once per change and per tenant
scope, so that a request costs filtering and one page of HTML, not the fleet's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import fastapi
import jinja2
from fastapi import Depends, Query, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles

from rciots.controller import (
    auth,
    fleet,
    fleetview,
    httpbody,
    metrics,
    ratelimit,
    statusapi,
    statusdocs,
    statushistory,
)

if TYPE_CHECKING:
    from rciots.controller import service

__all__ = ["COOKIE", "FRAGMENT_HEADER", "PageSettings", "StatusPage"]

log = logging.getLogger(__name__)

COOKIE = "rciots_credential"
FRAGMENT_HEADER = "X-Rciots-Fragment"
_HERE = Path(__file__).resolve().parent
_MAX_FORM_BYTES = 4096
_KEEPALIVE = 15.0  # seconds between comments on an idle event stream (proxies close idle ones)

# No inline script or style anywhere: the page's own files only.
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # links to the forge's commits tell it nothing of this page; and same-origin keeps the
    # Origin header of the login form's POST (no-referrer makes browsers send "null")
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


@dataclass(frozen=True)
class PageSettings:
    """The status page's part of the controller's settings."""

    admin_token: str | None = field(default=None, repr=False)  # None: the state dir's file
    repo_web_url: str | None = None  # a commit's web page, "{revision}" replaced
    history_limit: int = statushistory.DEFAULT_LIMIT
    min_rebuild: float = 0.5  # seconds between two builds of the fleet's views
    event_poll: float = 0.25  # seconds between two looks for changes per event stream
    failure_rate: float = 1 / 3  # failed credentials per second and client address
    failure_burst: float = 20.0
    body_timeout: float = httpbody.BODY_TIMEOUT  # seconds for the login form's body


class _LoginNeeded(Exception):
    """A page was asked for without a valid credential."""


class _Unauthorized(Exception):
    """An API route was asked for without a valid credential."""


class _Throttled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class _NotFound(Exception):
    """No such thing, or not the asker's to see: answered alike."""


class _Snapshot:
    """The fleet's views at one change: every device row, and what is derived per scope
    (all tenants, or a viewer's) on first use."""

    def __init__(
        self,
        generation: int,
        rows: list[fleetview.DeviceRow],
    ) -> None:
        self.generation = generation
        self.built_at = time.monotonic()
        self.rows = rows
        self.by_key = {row.key: row for row in rows}
        self._scoped: dict[frozenset[str] | None, list[fleetview.DeviceRow]] = {}
        self._json: dict[frozenset[str] | None, bytes] = {}
        self._counts: dict[frozenset[str] | None, fleetview.Counts] = {}

    def rows_for(self, principal: auth.Principal) -> list[fleetview.DeviceRow]:
        scope = principal.tenants
        if scope is None:
            return self.rows
        if scope not in self._scoped:
            self._scoped[scope] = [row for row in self.rows if row.tenant in scope]
        return self._scoped[scope]

    def devices_json(self, principal: auth.Principal) -> bytes:
        scope = principal.tenants
        if scope not in self._json:
            self._json[scope] = statusapi.dump_devices(self.rows_for(principal))
        return self._json[scope]

    def counts(self, principal: auth.Principal) -> fleetview.Counts:
        scope = principal.tenants
        if scope not in self._counts:
            self._counts[scope] = fleetview.count(self.rows_for(principal))
        return self._counts[scope]


class _Headers:
    """ASGI middleware: the security headers on every answer, no caching of what a
    credential opened (pages and API hold a tenant's data), and the server's time."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")
        started = time.perf_counter()

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.extend(h for h in _SECURITY_HEADERS if h[0] not in names)
                if not static and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                # the server's time to the answer's first byte (bench/statuspage.py reads it)
                took = (time.perf_counter() - started) * 1000
                headers.append((b"server-timing", f"app;dur={took:.2f}".encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class StatusPage:
    """The status page of one controller: ``install(app)`` adds its routes; ``close()``
    ends its event streams (before the HTTP server stops, which waits for open requests)."""

    def __init__(
        self, controller: service.Controller, settings: PageSettings, admin_token: str
    ) -> None:
        self.controller = controller
        self.settings = settings
        self._admin_token = admin_token
        self._snapshot: _Snapshot | None = None
        self._building = asyncio.Lock()
        self._closing = asyncio.Event()
        self._failures = ratelimit.RateLimiter(settings.failure_rate, settings.failure_burst)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True,  # every template is HTML: device and tenant text is escaped
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(
            states=fleetview.STATES,
            short=_short,
            when=_when,
            ago=_ago,
            commit_url=lambda revision: fleetview.commit_url(settings.repo_web_url, revision),
            query_string=_query_string,
            quote=lambda text: urllib.parse.quote(str(text), safe=""),
        )

    def close(self) -> None:
        self._closing.set()

    # -- the fleet's views, once per change ----------------------------------------------------

    def version(self) -> tuple[int, object]:
        """Moves with every change the pages show: the controller's change counter, and the
        source's status (a new object at each fetch)."""
        return (self.controller.changes.value, self.controller.source.status)

    async def snapshot(self) -> _Snapshot:
        async with self._building:
            current = self._snapshot
            generation = self.controller.changes.value
            if current is not None and current.generation == generation:
                return current
            if current is not None:
                # a busy fleet changes all the time: build at most every min_rebuild seconds,
                # and make the asker wait for that build rather than serve it old views
                wait = current.built_at + self.settings.min_rebuild - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    generation = self.controller.changes.value
            controller = self.controller
            table = controller.reconciler.table
            seen = dict(controller.observed)  # the event loop changes it; the thread reads a copy
            model = controller.reconciler.model
            store = controller.registry
            registrations = store.registrations() if store is not None else []
            pending = store.all_pending() if store is not None else []

            def build() -> _Snapshot:
                rows = fleetview.build_rows(table, seen, model, registrations, pending)
                return _Snapshot(generation, rows)

            self._snapshot = await asyncio.to_thread(build)
            return self._snapshot

    # -- who is asking ---------------------------------------------------------------------

    def _identify(self, request: Request) -> auth.Principal | None:
        """The principal of the request's credential; None without one; raises _Throttled
        when this address failed too often."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        credential = value.strip() if scheme.lower() == "bearer" else ""
        credential = credential or request.cookies.get(COOKIE, "")
        if not credential:
            return None
        return self._check(credential, _address(request))

    def _check(self, credential: str, address: str) -> auth.Principal | None:
        """The principal of ``credential``, or None (a failure, counted against
        ``address``); raises _Throttled when that address failed too often."""
        now = time.monotonic()
        wait = ratelimit.retry_after(self._failures.peek(address, now))
        if wait is not None:
            raise _Throttled(wait)
        principal = auth.identify(credential, self._admin_token, self.controller.reconciler.loaded)
        if principal is None:
            self._failures.take(address, now)
        return principal

    def page_principal(self, request: Request) -> auth.Principal:
        principal = self._identify(request)
        if principal is None:
            raise _LoginNeeded()
        return principal

    def api_principal(self, request: Request) -> auth.Principal:
        principal = self._identify(request)
        if principal is None:
            raise _Unauthorized()
        return principal

    def admin_principal(self, request: Request) -> auth.Principal:
        principal = self.api_principal(request)
        if not principal.admin:
            raise _NotFound()
        return principal

    # -- the app ---------------------------------------------------------------------------

    def install(self, app: fastapi.FastAPI) -> None:
        app.add_middleware(_Headers)
        app.mount("/static", StaticFiles(directory=_HERE / "static"), name="static")
        app.add_exception_handler(_LoginNeeded, self._on_login_needed)
        app.add_exception_handler(_Unauthorized, _on_unauthorized)
        app.add_exception_handler(_Throttled, _on_throttled)
        app.add_exception_handler(_NotFound, self._on_not_found)
        app.include_router(self._ops_router())
        app.include_router(self._api_router())
        app.include_router(self._page_router())

    def _on_login_needed(self, request: Request, exc: Exception) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.headers.get(FRAGMENT_HEADER):
            return JSONResponse({"error": "log in again"}, status_code=401)
        return RedirectResponse("/login?" + urllib.parse.urlencode({"next": target}), 303)

    def _on_not_found(self, request: Request, exc: Exception) -> Response:
        if request.url.path.startswith(("/api/", "/metrics")):
            return JSONResponse({"error": "not found"}, status_code=404)
        principal = None
        with contextlib.suppress(_Throttled):
            principal = self._identify(request)
        return self._render("notfound.html", request, principal, status=404)

    def _render(
        self,
        name: str,
        request: Request,
        principal: auth.Principal | None,
        status: int = 200,
        **context: object,
    ) -> HTMLResponse:
        fragment = request.headers.get(FRAGMENT_HEADER) and name != "login.html"
        template = self.templates.get_template(f"_{name}" if fragment else name)
        html = template.render(
            principal=principal,
            now=datetime.now(UTC),
            path=request.url.path,
            generation=self.controller.changes.value,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    # -- operations: health, readiness, metrics --------------------------------------------

    def _ops_router(self) -> fastapi.APIRouter:
        router = fastapi.APIRouter(tags=["operations"])

        @router.get("/healthz", response_class=PlainTextResponse)
        async def healthz() -> str:
            """The process answers (liveness)."""
            return "ok\n"

        @router.get("/readyz")
        async def readyz() -> JSONResponse:
            """Ready: the first reconcile pass made a desired table, and the status writer
            runs (where the fleet repo has a status branch). 503 otherwise."""
            checks = self.readiness()
            ready = all(checks.values())
            return JSONResponse({"ready": ready, "checks": checks}, 200 if ready else 503)

        @router.get("/metrics", response_class=PlainTextResponse)
        async def metrics_text(
            principal: auth.Principal = Depends(self.admin_principal),  # noqa: B008
        ) -> Response:
            """Prometheus metrics, in the text format; the admin credential only."""
            snapshot = await self.snapshot()
            text = metrics.render(self.metric_families(snapshot))
            return Response(text, media_type=metrics.CONTENT_TYPE)

        return router

    def readiness(self) -> dict[str, bool]:
        controller = self.controller
        writer = controller.status
        return {
            "reconciled": controller.reconciler.revision is not None,
            "statusWriter": writer is None or writer.running,
        }

    def metric_families(self, snapshot: _Snapshot) -> list[metrics.Family]:
        controller = self.controller
        everyone = auth.Principal("admin", None)
        counts = snapshot.counts(everyone)
        connector = controller.connector
        failing = fleetview.render_failures(controller.reconciler.table)
        tenants = sorted(set(controller.reconciler.loaded.tenants) | set(failing))
        outcome = controller.last_outcome
        source = controller.source.status
        store = controller.registry
        writer = controller.status
        return [
            controller.reconcile_durations.family(
                "rciots_reconcile_duration_seconds",
                "Time of each reconcile pass (load, render, desired table).",
            ),
            metrics.Family(
                "rciots_devices",
                "gauge",
                "Devices by state (docs/status-page.md).",
                [metrics.Sample(counts.of(s), {"state": s}) for s in fleetview.STATES],
            ),
            metrics.Family(
                "rciots_connected_agents",
                "gauge",
                "Agents with a session open on the connector.",
                [metrics.Sample(len(connector.sessions) if connector else 0)],
            ),
            metrics.Family(
                "rciots_render_errors",
                "gauge",
                "Devices whose last attempted commit did not render, per tenant.",
                [metrics.Sample(len(failing.get(t, [])), {"tenant": t}) for t in tenants],
            ),
            metrics.Family(
                "rciots_fleet_repo_errors",
                "gauge",
                "Errors in the fleet repo at the last reconcile pass (files that do not load).",
                [metrics.Sample(outcome.errors if outcome else 0)],
            ),
            metrics.Family(
                "rciots_enrollments_total",
                "counter",
                "Answers of the enrollment endpoint, by outcome.",
                [
                    metrics.Sample(controller.enrollment_outcomes[o], {"outcome": o})
                    for o in ("enrolled", "re-enrolled", "pending", "denied")
                ],
            ),
            metrics.Family(
                "rciots_pending_enrollments",
                "gauge",
                "Enrollments waiting for approval.",
                [metrics.Sample(counts.of("pending-approval"))],
            ),
            metrics.Family(
                "rciots_pushes_total",
                "counter",
                "Desired states pushed to agents (full or delta).",
                [metrics.Sample(connector.counters.pushes if connector else 0)],
            ),
            metrics.Family(
                "rciots_sent_messages_total",
                "counter",
                "Messages sent to agents.",
                [metrics.Sample(connector.counters.messages_sent if connector else 0)],
            ),
            metrics.Family(
                "rciots_sent_bytes_total",
                "counter",
                "Bytes of messages sent to agents (before compression).",
                [metrics.Sample(connector.counters.bytes_sent if connector else 0)],
            ),
            metrics.Family(
                "rciots_source_failures",
                "gauge",
                "Failed fetches of the fleet repo in a row (0 while healthy).",
                [metrics.Sample(source.failures)],
            ),
            metrics.Family(
                "rciots_source_last_success_timestamp_seconds",
                "gauge",
                "When the fleet repo was last fetched with success (Unix time; 0: never).",
                [metrics.Sample(_timestamp(source.last_success_at))],
            ),
            metrics.Family(
                "rciots_status_files_pending",
                "gauge",
                "Status branch files waiting to be committed.",
                [metrics.Sample(len(writer.pending) if writer else 0)],
            ),
            metrics.Family(
                "rciots_registered_devices",
                "gauge",
                "Enrolled device identities.",
                [metrics.Sample(len(store.registrations()) if store else 0)],
            ),
        ]

    # -- the JSON API --------------------------------------------------------------------------

    def _api_router(self) -> fastapi.APIRouter:
        router = fastapi.APIRouter(
            prefix="/api/v1",
            tags=["status"],
            responses={401: {"description": "no valid credential"}},
        )
        viewer = Depends(self.api_principal)

        @router.get("/devices", response_model=list[statusapi.Device])
        async def devices(
            principal: auth.Principal = viewer,
            q: str | None = Query(None, description="part of the device's name"),
            label: str | None = Query(None, description="KEY or KEY=VALUE"),
            state: fleetview.State | None = None,
            tenant: str | None = None,
        ) -> Response:
            """Every device the asker may see, by tenant and name, with its state."""
            snapshot = await self.snapshot()
            if not (q or label or state or tenant):
                body = snapshot.devices_json(principal)
            else:
                query = fleetview.parse_query(q, label, state, tenant)
                rows = fleetview.filter_rows(snapshot.rows_for(principal), query)
                body = statusapi.dump_devices(rows)
            return Response(body, media_type="application/json")

        @router.get("/devices/{tenant}/{name}", response_model=statusapi.DeviceDetail)
        async def device(
            tenant: str, name: str, principal: auth.Principal = viewer
        ) -> statusapi.DeviceDetail:
            """One device: revisions, the last apply per resource, errors, recent history."""
            return (await self.device_detail(principal, tenant, name))[0]

        @router.get("/overview", response_model=statusapi.Overview)
        async def overview(
            principal: auth.Principal = viewer,
            q: str | None = None,
            label: str | None = None,
            state: fleetview.State | None = None,
            tenant: str | None = None,
            page: int = Query(1, ge=1),
            per_page: int = Query(fleetview.DEFAULT_PER_PAGE, ge=1, le=fleetview.MAX_PER_PAGE),
        ) -> statusapi.Overview:
            """The fleet overview: counts (of the asker's tenants, or of ``tenant``), counts
            per tenant, and one page of the devices that match the filters."""
            query = fleetview.parse_query(q, label, state, tenant, page, per_page)
            view = await self.overview(principal, query)
            return statusapi.Overview(
                counts=statusapi.counts_of(view["counts"]),
                tenants=[
                    statusapi.TenantCounts(
                        tenant=t.tenant,
                        display_name=t.display_name,
                        counts=statusapi.counts_of(t.counts),
                    )
                    for t in view["tenants"]
                ],
                matching=view["page"].total,
                page=view["page"].number,
                pages=view["page"].pages,
                per_page=query.per_page,
                devices=[statusapi.device_of(row) for row in view["page"].rows],
            )

        @router.get("/enrollments", response_model=list[statusapi.Enrollment])
        async def enrollments(
            principal: auth.Principal = viewer,
            state: Literal["pending", "enrolled"] | None = None,
        ) -> list[statusapi.Enrollment]:
            """Pending enrollments (with how to approve each) and enrolled identities;
            ``state`` keeps one kind."""
            found: list[statusapi.Enrollment] = []
            if state in (None, "pending"):
                found += [statusapi.enrollment_of(v) for v in self.pending(principal)]
            if state in (None, "enrolled"):
                store = self.controller.registry
                registrations = store.registrations() if store is not None else []
                found += [
                    statusapi.registration_of(r)
                    for r in sorted(registrations, key=lambda r: r.key)
                    if principal.may_see(r.tenant)
                ]
            return found

        @router.get("/tokens", response_model=list[statusapi.Token])
        async def tokens(principal: auth.Principal = viewer) -> list[statusapi.Token]:
            """Provisioning tokens: use against maxDevices, expiry, approval; no secret."""
            return [statusapi.token_of(t) for t in self.tokens(principal)]

        @router.get("/health", response_model=statusapi.Health)
        async def health(principal: auth.Principal = viewer) -> statusapi.Health:
            """The controller: tracked revision, fetches, render failures per tenant."""
            return self.health(principal)

        @router.get(
            "/events",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}},
        )
        async def events(
            principal: auth.Principal = viewer,
            since: int | None = Query(None, description="the generation the page shows"),
        ) -> StreamingResponse:
            """Server-sent events: ``changed`` (data: a generation number) whenever what the
            pages show may have changed; fetch again then. At most one per ``event_poll``."""
            return StreamingResponse(
                self._events(since),
                media_type="text/event-stream",
                headers={"X-Accel-Buffering": "no"},
            )

        return router

    async def _events(self, since: int | None) -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        current = self.version()
        # changed between the page and this stream: tell at once
        last = None if since is not None and since != current[0] else current
        quiet = 0.0
        while not self._closing.is_set():
            now = self.version()
            if now != last:
                last = now
                quiet = 0.0
                yield f"event: changed\ndata: {now[0]}\n\n"
            elif quiet >= _KEEPALIVE:
                quiet = 0.0
                yield ": still here\n\n"
            try:
                await asyncio.wait_for(self._closing.wait(), self.settings.event_poll)
            except TimeoutError:
                quiet += self.settings.event_poll

    # -- views shared by pages and API -------------------------------------------------------

    async def overview(self, principal: auth.Principal, query: fleetview.Query) -> dict[str, Any]:
        snapshot = await self.snapshot()
        rows = snapshot.rows_for(principal)
        tenants = fleetview.count_by_tenant(rows, self._visible_model(principal))
        if query.tenant:
            scoped = [row for row in rows if row.tenant == query.tenant]
            counts = fleetview.count(scoped)
        else:
            counts = snapshot.counts(principal)
        matching = fleetview.filter_rows(rows, query) if query.filtered else rows
        page = fleetview.paginate(matching, query.page, query.per_page)
        return {"counts": counts, "tenants": tenants, "page": page, "query": query}

    def _visible_model(self, principal: auth.Principal) -> fleet.FleetModel:
        model = self.controller.reconciler.model
        if principal.tenants is None:
            return model
        return fleet.FleetModel(
            {name: t for name, t in model.tenants.items() if name in principal.tenants}
        )

    async def device_detail(
        self, principal: auth.Principal, tenant: str, name: str
    ) -> tuple[statusapi.DeviceDetail, fleetview.DeviceDetail]:
        if not principal.may_see(tenant):
            raise _NotFound()
        snapshot = await self.snapshot()
        row = snapshot.by_key.get((tenant, name))
        if row is None:
            raise _NotFound()
        controller = self.controller
        store = controller.registry
        registration = store.by_name(tenant, name) if store is not None else None
        pending = store.pending(tenant, name) if store is not None else None
        denied = controller.denied(registration.device_id) if registration is not None else None
        detail = fleetview.build_detail(
            row,
            controller.reconciler.table.get((tenant, name)),
            controller.observed.get((tenant, name)),
            controller.reconciler.model,
            registration,
            pending,
            denied,
        )
        history = await self._history(tenant, name)
        pending_view = (
            fleetview.build_pending([pending], controller.settings.branch)[0] if pending else None
        )
        api = statusapi.detail_of(detail, history, pending_view, self.settings.repo_web_url)
        return api, detail

    async def _history(self, tenant: str, name: str) -> list[statushistory.HistoryEntry]:
        branch = self.controller.status_branch
        if branch is None:
            return []
        try:
            path = statusdocs.status_path(tenant, name)
        except ValueError:
            return []
        try:
            return await asyncio.to_thread(
                statushistory.read_history,
                branch.repository_path,
                branch.branch,
                path,
                limit=self.settings.history_limit,
            )
        except Exception as exc:  # a history that does not read must not take the page down
            log.warning("history of %s/%s not read: %s", tenant, name, exc)
            return []

    def pending(self, principal: auth.Principal) -> list[fleetview.PendingView]:
        store = self.controller.registry
        waiting = store.all_pending() if store is not None else []
        return fleetview.build_pending(
            [p for p in waiting if principal.may_see(p.tenant)], self.controller.settings.branch
        )

    def tokens(self, principal: auth.Principal) -> list[fleetview.TokenView]:
        store = self.controller.registry
        return fleetview.build_tokens(
            self.controller.reconciler.loaded,
            store.registrations() if store is not None else [],
            store.all_pending() if store is not None else [],
            datetime.now(UTC),
            principal.tenants,
        )

    def tenant_limits(self, principal: auth.Principal) -> list[dict[str, Any]]:
        store = self.controller.registry
        limits = []
        for name, tenant in sorted(self.controller.reconciler.loaded.tenants.items()):
            if principal.may_see(name):
                used = store.count(name) if store is not None else 0
                maximum = tenant.tenant.max_devices
                limits.append(
                    {
                        "tenant": name,
                        "display_name": tenant.tenant.display_name or name,
                        "enabled": tenant.tenant.enabled,
                        "used": used,
                        "max": maximum,
                        "share": min(100.0, 100.0 * used / maximum) if maximum else None,
                    }
                )
        return limits

    def health(self, principal: auth.Principal) -> statusapi.Health:
        controller = self.controller
        source = controller.source.status
        outcome = controller.last_outcome
        writer = controller.status
        connector = controller.connector
        diagnostics = outcome.diagnostics if outcome else ()
        errors = [d for d in diagnostics if d.severity == "error"]
        return statusapi.Health(
            ready=all(self.readiness().values()),
            tracked_branch=controller.settings.branch,
            revision=source.revision,
            revision_url=fleetview.commit_url(self.settings.repo_web_url, source.revision),
            last_fetch_at=source.last_fetch_at,
            last_success_at=source.last_success_at,
            stale_since=source.stale_since,
            last_error=source.last_error,
            fetch_failures=source.failures,
            last_pass_seconds=outcome.seconds if outcome else None,
            # a viewer learns nothing of other tenants' devices, not even how many changed
            last_pass_rendered=_mine(outcome.rendered, principal) if outcome else None,
            last_pass_failed=_mine(outcome.failed, principal) if outcome else None,
            render_failures=fleetview.render_failures(
                controller.reconciler.table, principal.tenants
            ),
            repo_errors=[
                statusapi.repo_error_of(d)
                for d in fleetview.visible_diagnostics(errors, principal.tenants)
            ],
            connected_agents=sum(
                1
                for session in (connector.sessions.values() if connector else ())
                if principal.may_see(session.key[0])
            ),
            status_branch=controller.settings.status_branch,
            status_writer_running=writer is not None and writer.running,
            status_files_pending=len(writer.pending) if writer is not None else 0,
        )

    # -- pages ---------------------------------------------------------------------------------

    def _page_router(self) -> fastapi.APIRouter:
        router = fastapi.APIRouter(include_in_schema=False)
        viewer = Depends(self.page_principal)

        @router.get("/", response_class=HTMLResponse)
        async def overview_page(
            request: Request,
            principal: auth.Principal = viewer,
            q: str | None = None,
            label: str | None = None,
            state: str | None = None,
            tenant: str | None = None,
            page: str | None = None,
            per_page: str | None = None,
        ) -> HTMLResponse:
            query = fleetview.parse_query(q, label, state, tenant, page, per_page)
            view = await self.overview(principal, query)
            return self._render("overview.html", request, principal, **view)

        @router.get("/devices/{tenant}/{name}", response_class=HTMLResponse)
        async def device_page(
            request: Request, tenant: str, name: str, principal: auth.Principal = viewer
        ) -> HTMLResponse:
            api, detail = await self.device_detail(principal, tenant, name)
            return self._render("device.html", request, principal, device=api, detail=detail)

        @router.get("/enrollments", response_class=HTMLResponse)
        async def enrollments_page(
            request: Request, principal: auth.Principal = viewer
        ) -> HTMLResponse:
            return self._render(
                "enrollments.html",
                request,
                principal,
                pending=self.pending(principal),
                branch=self.controller.settings.branch,
            )

        @router.get("/tokens", response_class=HTMLResponse)
        async def tokens_page(request: Request, principal: auth.Principal = viewer) -> HTMLResponse:
            return self._render(
                "tokens.html",
                request,
                principal,
                tokens=self.tokens(principal),
                limits=self.tenant_limits(principal),
            )

        @router.get("/health", response_class=HTMLResponse)
        async def health_page(request: Request, principal: auth.Principal = viewer) -> HTMLResponse:
            return self._render("health.html", request, principal, health=self.health(principal))

        @router.get("/login", response_class=HTMLResponse)
        async def login_page(request: Request, next: str = "/") -> HTMLResponse:
            return self._render("login.html", request, None, next=_local(next), error=None)

        @router.post("/login")
        async def login(request: Request) -> Response:
            if not _same_origin(request):
                return PlainTextResponse("cross-site login refused\n", status_code=403)
            body = await _read_form(request, self.settings.body_timeout)
            credential = body.get("credential", "").strip()
            target = _local(body.get("next", "/"))
            address = _address(request)
            principal = self._check(credential, address)
            if principal is None:
                return self._render(
                    "login.html",
                    request,
                    None,
                    status=401,
                    next=target,
                    error="That is not a valid credential.",
                )
            log.info("status page: %s logged in from %s", principal.name, address)
            answer = RedirectResponse(target, status_code=303)
            answer.set_cookie(
                COOKIE,
                credential,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
                path="/",
            )
            return answer

        @router.post("/logout")
        async def logout(request: Request) -> Response:
            if not _same_origin(request):
                return PlainTextResponse("cross-site logout refused\n", status_code=403)
            answer = RedirectResponse("/login", status_code=303)
            answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
            return answer

        return router


# -- helpers -------------------------------------------------------------------------------------


def _on_unauthorized(request: Request, exc: Exception) -> Response:
    return JSONResponse(
        {"error": "a credential is required: Authorization: Bearer <credential>"},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="rciots"'},
    )


def _on_throttled(request: Request, exc: Exception) -> Response:
    wait = exc.retry_after if isinstance(exc, _Throttled) else 60
    return JSONResponse(
        {"error": "too many failed credentials from this address; try again later"},
        status_code=429,
        headers={"Retry-After": str(wait)},
    )


async def _read_form(request: Request, timeout: float) -> dict[str, str]:
    """A small application/x-www-form-urlencoded body, as name -> first value; {} for one
    too large, or that did not come whole within ``timeout`` seconds."""
    try:
        body = await httpbody.read_capped(request, _MAX_FORM_BYTES, timeout)
    except httpbody.BodyRefused:
        return {}
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return {}
    return {key: values[0] for key, values in urllib.parse.parse_qs(text).items()}


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _same_origin(request: Request) -> bool:
    """A form on another site cannot log a browser in or out here: the browser's
    Sec-Fetch-Site says same-origin, or else its Origin is this very host; a client that
    sends neither (curl, a script) is not a browser tricked by another site."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urllib.parse.urlsplit(origin).netloc == request.headers.get("host", "")


def _local(target: str) -> str:
    """Only a path on this site to go to after logging in (never another site's address)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _mine(keys: tuple[tuple[str, str], ...], principal: auth.Principal) -> int:
    return sum(1 for tenant, _ in keys if principal.may_see(tenant))


def _timestamp(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else 0.0


def _short(revision: str | None, length: int = 12) -> str:
    if not revision:
        return "—"
    if revision.startswith("sha256:"):
        return revision[: 7 + length]
    return revision[:length]


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(moment: datetime | None, now: datetime) -> str:
    """'3 min ago', 'in 5 days': for people, next to the exact time."""
    if moment is None:
        return "never"
    seconds = (now - moment).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 45:
        amount = "a few seconds" if future else "just now"
        return f"in {amount}" if future else amount
    for size, unit in ((86400 * 365, "year"), (86400, "day"), (3600, "h"), (60, "min")):
        if seconds >= size:
            value = int(seconds // size)
            shown = f"{value} {unit}" + ("s" if value != 1 and unit in ("year", "day") else "")
            return f"in {shown}" if future else f"{shown} ago"
    return "in 1 min" if future else "1 min ago"


def _query_string(query: fleetview.Query, **changes: object) -> str:
    params = query.as_params(**changes)
    return "?" + urllib.parse.urlencode(params) if params else "?"
