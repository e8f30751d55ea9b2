"""The status page's view model: what a person (or a check) is shown of the fleet.

Position in the flow: desired table (reconcile), observations (connector -> ``observed``),
registry (enrollment) and the fleet model -> **fleetview** -> status page (``statuspage``: HTML
pages and the JSON API) and metrics. Pure: plain values in, plain values out, no clock (the
time is passed in), no I/O; so every rule here is tested without a server.

A device's **state**, decided by ``decide_state`` in this order (the first that holds):

1. ``pending-approval``: an enrollment of that name waits for a pull request to approve it;
2. ``failed``: its last attempted commit did not render for it, or it reported the desired
   digest applied with errors (whether or not it is connected now: a failure needs a person);
3. ``offline``: it has no session with the controller (never connected, or gone);
4. ``in-sync``: connected, and the digest it applied is the desired digest;
5. ``out-of-sync``: connected and anything else (not told yet, applying, an older digest).

Everything a device or a tenant controls (names, labels, descriptions, error texts, system
information) is carried here as plain text; escaping is the template's (Jinja autoescape) and
the JSON encoder's job, never string building.
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NamedTuple, get_args

from rciots.controller import fleet, layout, observed, reconcile, registry
from rciots.controller.diagnostics import Diagnostic

__all__ = [
    "STATES",
    "Counts",
    "DeviceDetail",
    "DeviceRow",
    "Page",
    "PendingView",
    "Query",
    "ResourceLine",
    "State",
    "TenantCounts",
    "TokenView",
    "approve_commands",
    "build_detail",
    "build_pending",
    "build_rows",
    "build_tokens",
    "commit_url",
    "count",
    "count_by_tenant",
    "decide_state",
    "filter_rows",
    "paginate",
    "parse_query",
    "render_failures",
    "visible_diagnostics",
]

State = Literal["in-sync", "out-of-sync", "failed", "offline", "pending-approval"]
STATES: tuple[State, ...] = get_args(State)

DeviceKey = tuple[str, str]

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 500
_MAX_SUMMARY = 300  # characters of an error shown in a table cell


def decide_state(
    desired: reconcile.DesiredState | None,
    seen: observed.Observed | None,
    *,
    pending: bool = False,
) -> State:
    """The state of one device (the rules are in the module docstring)."""
    if pending:
        return "pending-approval"
    seen = seen or observed.Observed()
    target = desired.bundle_digest if desired is not None else None
    if desired is not None and desired.failing:
        return "failed"
    if target is not None and seen.tried_digest == target and not seen.tried_ok:
        return "failed"
    if not seen.connected:
        return "offline"
    if target is not None and seen.applied_digest == target:
        return "in-sync"
    return "out-of-sync"


class DeviceRow(NamedTuple):
    """One line of the device table, and one object of ``GET /api/v1/devices``. (A named
    tuple: 10,000 of them are made per change of the fleet, three times faster than frozen
    dataclasses.)"""

    tenant: str
    name: str
    state: State
    online: bool
    last_seen: datetime | None
    labels: Mapping[str, str]
    desired_revision: str | None
    desired_digest: str | None
    applied_revision: str | None
    applied_digest: str | None
    enrolled: bool
    enabled: bool
    error: str | None  # the first thing that went wrong, shortened; None when nothing did
    device_id: str | None = None

    @property
    def key(self) -> DeviceKey:
        return (self.tenant, self.name)


def build_rows(
    table: Mapping[DeviceKey, reconcile.DesiredState],
    seen: Mapping[DeviceKey, observed.Observed],
    model: fleet.FleetModel,
    registrations: Iterable[registry.Registration],
    pending: Iterable[registry.Pending],
) -> list[DeviceRow]:
    """Every device the controller knows, sorted by tenant and name: each device of the
    desired table, each registration without one (its tenant gone, say), and each pending
    enrollment (``pending-approval``, whatever else is known of the name)."""
    enrolled = {r.key: r for r in registrations}
    waiting = {p.key: p for p in pending}
    keys = set(table) | set(enrolled) | set(waiting)
    rows = []
    for key in sorted(keys):
        tenant, name = key
        desired = table.get(key)
        seen_ = seen.get(key) or observed.Observed()
        registration = enrolled.get(key)
        waits = waiting.get(key)
        tenant_model = model.tenants.get(tenant)
        device = tenant_model.devices.get(name) if tenant_model is not None else None
        if device is not None:
            labels: Mapping[str, str] = device.labels
        elif registration is not None:
            labels = registration.labels
        elif waits is not None:
            labels = waits.labels
        else:
            labels = {}
        state = decide_state(desired, seen_, pending=waits is not None)
        rows.append(
            DeviceRow(
                tenant=tenant,
                name=name,
                state=state,
                online=seen_.connected,
                last_seen=seen_.last_seen,
                labels=labels,
                desired_revision=desired.revision if desired is not None else None,
                desired_digest=desired.bundle_digest if desired is not None else None,
                applied_revision=seen_.applied_revision,
                applied_digest=seen_.applied_digest,
                enrolled=registration is not None,
                enabled=device.enabled if device is not None else True,
                error=_summary(_first_error(desired, seen_, state)),
                device_id=registration.device_id if registration is not None else None,
            )
        )
    return rows


def _first_error(
    desired: reconcile.DesiredState | None, seen: observed.Observed, state: State
) -> str | None:
    if state != "failed":
        return None
    if desired is not None and desired.error:
        return desired.error
    if seen.tried_error:
        return seen.tried_error
    if seen.resource_errors:
        resource, message = seen.resource_errors[0]
        more = len(seen.resource_errors) - 1
        return f"{resource}: {message}" + (f" (and {more} more)" if more else "")
    return "the apply failed"


def _summary(text: str | None) -> str | None:
    if text is None:
        return None
    line = " ".join(text.split())
    return line if len(line) <= _MAX_SUMMARY else line[: _MAX_SUMMARY - 1] + "…"


# -- counting ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """Devices per state, and how many are online."""

    total: int = 0
    online: int = 0
    states: Mapping[State, int] = field(default_factory=dict)

    def of(self, state: State) -> int:
        return self.states.get(state, 0)

    def share(self, state: State) -> float:
        """The part of all devices in ``state``, in percent (for the bars)."""
        return 100.0 * self.of(state) / self.total if self.total else 0.0


def count(rows: Iterable[DeviceRow]) -> Counts:
    by_state: Counter[State] = Counter()
    total = online = 0
    for row in rows:
        total += 1
        online += row.online
        by_state[row.state] += 1
    return Counts(total, online, {state: by_state[state] for state in STATES})


@dataclass(frozen=True)
class TenantCounts:
    tenant: str
    display_name: str
    counts: Counts


def count_by_tenant(rows: Sequence[DeviceRow], model: fleet.FleetModel) -> list[TenantCounts]:
    """Counts per tenant, for every tenant that has a device or is in the model."""
    grouped: dict[str, list[DeviceRow]] = {name: [] for name in model.tenants}
    for row in rows:
        grouped.setdefault(row.tenant, []).append(row)
    result = []
    for tenant in sorted(grouped):
        loaded = model.tenants.get(tenant)
        display = loaded.tenant.display_name if loaded is not None else ""
        result.append(TenantCounts(tenant, display or tenant, count(grouped[tenant])))
    return result


# -- search, filters, pages --------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """What the device table shows: a name search, a label (``key`` or ``key=value``), a
    state and a tenant, each optional; and which page."""

    text: str = ""
    label: str = ""
    state: State | None = None
    tenant: str = ""
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE

    @property
    def filtered(self) -> bool:
        """Whether it leaves any device out."""
        return bool(self.text.strip() or self.label or self.state or self.tenant)

    def matches(self, row: DeviceRow) -> bool:
        if self.tenant and row.tenant != self.tenant:
            return False
        if self.state is not None and row.state != self.state:
            return False
        text = self.text.strip().lower()
        if text and text not in row.name.lower() and text not in row.tenant.lower():
            return False
        if self.label:
            key, has_value, value = self.label.partition("=")
            key = key.strip()
            if key not in row.labels:
                return False
            if has_value and row.labels[key] != value.strip():
                return False
        return True

    def as_params(self, **changes: object) -> dict[str, str]:
        """The query string parameters that say this query (for links), with ``changes``."""
        values: dict[str, object] = {
            "q": self.text,
            "label": self.label,
            "state": self.state or "",
            "tenant": self.tenant,
            "page": self.page,
            "per_page": self.per_page,
        }
        values.update(changes)
        defaults = {"page": 1, "per_page": DEFAULT_PER_PAGE}
        return {
            key: str(value)
            for key, value in values.items()
            if value not in ("", None) and defaults.get(key) != value
        }


def parse_query(
    text: str | None = None,
    label: str | None = None,
    state: str | None = None,
    tenant: str | None = None,
    page: str | int | None = None,
    per_page: str | int | None = None,
) -> Query:
    """A Query from query string values: unknown states are ignored, numbers are clamped,
    so that a hand-edited address shows something sensible rather than an error."""
    chosen: State | None = None
    for known in STATES:
        if state == known:
            chosen = known
    return Query(
        text=(text or "")[:200],
        label=(label or "")[:320],
        state=chosen,
        tenant=(tenant or "")[:63],
        page=max(1, _number(page, 1)),
        per_page=min(MAX_PER_PAGE, max(1, _number(per_page, DEFAULT_PER_PAGE))),
    )


def _number(value: str | int | None, default: int) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(value) if value else default
    except ValueError:
        return default


def filter_rows(rows: Iterable[DeviceRow], query: Query) -> list[DeviceRow]:
    return [row for row in rows if query.matches(row)]


@dataclass(frozen=True)
class Page:
    rows: Sequence[DeviceRow]
    number: int  # 1-based, within 1..pages
    pages: int  # at least 1
    total: int  # rows over all pages
    first: int  # 1-based position of the first row shown (0 when none)


def paginate(rows: Sequence[DeviceRow], page: int, per_page: int) -> Page:
    pages = max(1, -(-len(rows) // per_page))
    number = min(max(1, page), pages)
    start = (number - 1) * per_page
    shown = rows[start : start + per_page]
    return Page(shown, number, pages, len(rows), start + 1 if shown else 0)


# -- one device --------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceLine:
    resource: str  # Kind/name or Kind/namespace/name
    action: str  # applied, unchanged, pruned, failed, skipped
    message: str

    @property
    def ok(self) -> bool:
        return self.action != "failed"


@dataclass(frozen=True)
class DeviceDetail:
    """Everything the device page shows, but its history (read from Git, see
    ``statushistory``)."""

    row: DeviceRow
    description: str
    template: str | None
    attempted_revision: str | None
    render_error: str | None
    tried_revision: str | None  # of the last apply the device reported on
    tried_digest: str | None
    tried_at: datetime | None
    apply_error: str | None
    resources: tuple[ResourceLine, ...]
    registration: registry.Registration | None
    pending: registry.Pending | None
    denied: str | None  # why it may not connect, when it may not
    approved: bool | None  # of its Device file; None without one


def build_detail(
    row: DeviceRow,
    desired: reconcile.DesiredState | None,
    seen: observed.Observed | None,
    model: fleet.FleetModel,
    registration: registry.Registration | None,
    pending: registry.Pending | None,
    denied: str | None,
) -> DeviceDetail:
    seen_ = seen or observed.Observed()
    tenant_model = model.tenants.get(row.tenant)
    device = tenant_model.devices.get(row.name) if tenant_model is not None else None
    template = device.template if device is not None else None
    if template is None and registration is not None:
        template = registration.template
    return DeviceDetail(
        row=row,
        description=device.description if device is not None else "",
        template=template,
        attempted_revision=desired.attempted_revision if desired is not None else None,
        render_error=desired.error if desired is not None else None,
        tried_revision=seen_.tried_revision,
        tried_digest=seen_.tried_digest,
        tried_at=seen_.tried_at,
        apply_error=seen_.tried_error,
        resources=tuple(ResourceLine(*result) for result in seen_.results),
        registration=registration,
        pending=pending,
        denied=denied,
        approved=device.approved if device is not None else None,
    )


def commit_url(template: str | None, revision: str | None) -> str | None:
    """The web page of a commit, from ``--repo-web-url`` (``{revision}`` is replaced)."""
    if not template or not revision:
        return None
    return template.replace("{revision}", revision)


# -- pending enrollments -------------------------------------------------------------------


@dataclass(frozen=True)
class PendingView:
    entry: registry.Pending
    device_file: str  # the file the approving pull request adds
    commands: tuple[str, ...]  # what to type, in a clone of the fleet repo


def approve_commands(entry: registry.Pending, branch: str) -> tuple[str, ...]:
    """The commands that approve ``entry`` through a pull request against ``branch``.

    Everything from the device is quoted for the shell: the labels it asked for come from
    the device (or from the status branch), and a person pastes these lines."""
    topic = f"approve-{entry.tenant}-{entry.name}"
    labels = "".join(
        f" --label {shlex.quote(f'{key}={value}')}" for key, value in sorted(entry.labels.items())
    )
    device = f"{entry.tenant}/{entry.name}"
    message = f"Approve {device} (key {entry.key_fingerprint})"
    return (
        f"git switch -c {shlex.quote(topic)} origin/{shlex.quote(branch)}",
        f"rciots device approve {shlex.quote(device)}{labels}",
        f"git add {shlex.quote(layout.device_file(entry.tenant, entry.name))}",
        f"git commit -m {shlex.quote(message)}",
        f"git push -u origin {shlex.quote(topic)}",
    )


def build_pending(pending: Iterable[registry.Pending], branch: str) -> list[PendingView]:
    """Pending enrollments, oldest request first."""
    return [
        PendingView(
            entry, layout.device_file(entry.tenant, entry.name), approve_commands(entry, branch)
        )
        for entry in sorted(pending, key=lambda p: (p.requested_at, p.tenant, p.name))
    ]


# -- tokens ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenView:
    """A provisioning token as the page shows it: never its secret, nor even its hash."""

    tenant: str
    name: str
    approval: fleet.Approval
    enabled: bool
    expires: datetime | None
    expired: bool
    max_devices: int | None
    used: int  # devices enrolled with it
    pending: int  # enrollments with it waiting for approval
    template: str | None
    labels: Mapping[str, str]

    @property
    def usage(self) -> float | None:
        """Percent of ``max_devices`` used; None without a limit."""
        if not self.max_devices:
            return None
        return min(100.0, 100.0 * self.used / self.max_devices)


def build_tokens(
    model: fleet.FleetModel,
    registrations: Iterable[registry.Registration],
    pending: Iterable[registry.Pending],
    now: datetime,
    tenants: Collection[str] | None = None,
) -> list[TokenView]:
    used = Counter((r.tenant, r.token) for r in registrations)
    waiting = Counter((p.tenant, p.token) for p in pending)
    views = []
    for tenant_name in sorted(model.tenants):
        if tenants is not None and tenant_name not in tenants:
            continue
        tokens = model.tenants[tenant_name].tokens
        for name in sorted(tokens):
            token = tokens[name]
            views.append(
                TokenView(
                    tenant=tenant_name,
                    name=name,
                    approval=token.approval,
                    enabled=token.enabled,
                    expires=token.expires,
                    expired=token.is_expired(now),
                    max_devices=token.max_devices,
                    used=used[(tenant_name, name)],
                    pending=waiting[(tenant_name, name)],
                    template=token.template,
                    labels=token.labels,
                )
            )
    return views


# -- health ------------------------------------------------------------------------------


def render_failures(
    table: Mapping[DeviceKey, reconcile.DesiredState], tenants: Collection[str] | None = None
) -> dict[str, list[str]]:
    """Per tenant, the devices whose last attempted commit did not render, by name."""
    failing: dict[str, list[str]] = {}
    for (tenant, name), state in table.items():
        if state.failing and (tenants is None or tenant in tenants):
            failing.setdefault(tenant, []).append(name)
    return {tenant: sorted(names) for tenant, names in sorted(failing.items())}


def visible_diagnostics(
    diagnostics: Iterable[Diagnostic], tenants: Collection[str] | None, limit: int = 50
) -> list[Diagnostic]:
    """The fleet repo's errors a viewer may see: all for an admin (``tenants`` None), else
    only those in files of their tenants (another tenant's paths say too much)."""
    shown = []
    for diagnostic in diagnostics:
        if tenants is None or any(
            diagnostic.path.startswith(layout.tenant_dir(t) + "/") for t in tenants
        ):
            shown.append(diagnostic)
            if len(shown) >= limit:
                break
    return shown
