"""Reconcile: each snapshot from the source -> the desired table (device -> what it runs).

Position in the flow: source (``snapshots.Snapshot``) -> **reconcile** (loader, per-device
render, policy) -> desired table -> connector and status writer. Pure: no Git, sockets or
clock; the controller runs ``Reconciler.apply`` in a worker thread for each new revision.

Incremental: the loader memo re-parses only changed files, and only the devices whose inputs
intersect the snapshot's changed paths (``desired.affected``) are rendered again; rendered
bases are shared through one render cache. Failure is contained per device, as Flux keeps
``lastAttemptedRevision`` apart from ``lastAppliedRevision``: a device whose render fails, or
whose Device file or tenant no longer loads, keeps its last good desired state and records the
revision it attempted and why it failed; every other device proceeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from rciots.agent.bundle import Bundle, ResourceId, digest_of
from rciots.controller import desired, enrolled, fleet, layout, loader, snapshots
from rciots.controller.diagnostics import Diagnostic, count_errors
from rciots.controller.render import engine

__all__ = ["DesiredState", "Outcome", "Reconciler"]

log = logging.getLogger(__name__)

DeviceKey = desired.DeviceKey


@dataclass(frozen=True)
class DesiredState:
    """What one device should run, and how the last attempt to compute it went."""

    tenant: str
    device: str
    revision: str | None  # the revision the manifests were rendered from; None: never good
    digest: str  # "sha256:..." of the manifests; "" when the device runs nothing
    manifests: str  # multi-document YAML, as `kustomize build` prints it
    attempted_revision: str  # the last revision this device was rendered at
    error: str | None = None  # why attempted_revision failed; None when it gave the above
    resources: tuple[ResourceId, ...] = ()  # one per document of ``manifests``

    def bundle(self) -> Bundle | None:
        """What the device is sent (no manifests, for a device that runs nothing: it removes
        what it ran); None before a first good render."""
        digest = self.bundle_digest
        if self.revision is None or digest is None:
            return None
        return Bundle(self.revision, digest, self.manifests, self.resources)

    @property
    def bundle_digest(self) -> str | None:
        """The digest of what the device is sent, which it reports once it applied it: for a
        device that runs nothing, that of no manifests (``digest`` is "" then); None before a
        first good render."""
        if self.revision is None:
            return None
        return self.digest or digest_of(self.manifests)

    @property
    def failing(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class Outcome:
    """What one reconcile pass did; ``changed`` devices need their new state pushed."""

    revision: str
    rendered: tuple[DeviceKey, ...]  # the devices rendered in this pass
    changed: tuple[DeviceKey, ...]  # new devices and devices whose digest changed
    removed: tuple[DeviceKey, ...]  # devices no longer in the repo
    failed: tuple[DeviceKey, ...]  # devices that failed at this revision (last good kept)
    diagnostics: tuple[Diagnostic, ...]  # the loader's, for the repo as a whole
    seconds: float

    @property
    def errors(self) -> int:
        return count_errors(list(self.diagnostics))


@dataclass
class Reconciler:
    """Holds the desired table across snapshots; ``apply`` moves it to a new snapshot.

    ``table`` (the desired table) is replaced, never changed in place, by each pass, so a
    reader on another thread always sees one consistent table.
    """

    policy: desired.PolicyCheck | None = None
    table: Mapping[DeviceKey, DesiredState] = field(default_factory=dict)
    model: fleet.FleetModel = field(default_factory=fleet.FleetModel)  # with enrolled devices
    loaded: fleet.FleetModel = field(default_factory=fleet.FleetModel)  # from Git alone
    enrollments: Mapping[DeviceKey, enrolled.Enrolled] = field(default_factory=dict)
    revision: str | None = None
    _renders: dict[DeviceKey, desired.DeviceRender] = field(default_factory=dict)
    _memo: loader.LoadMemo = field(default_factory=loader.LoadMemo)
    _cache: engine.Cache = field(default_factory=engine.Cache)
    _merged: enrolled.ModelMemo = field(default_factory=enrolled.ModelMemo)

    def apply(
        self,
        snapshot: snapshots.Snapshot,
        devices: Mapping[DeviceKey, enrolled.Enrolled] | None = None,
    ) -> Outcome:
        """Move the table to ``snapshot``, with the enrolled ``devices`` (None: those of the
        last pass). The same snapshot again with other enrolled devices renders only the
        devices whose enrollment changed."""
        with engine.gc_paused():  # see there: a tenth of a large pass is the collector's
            return self._apply(snapshot, self.enrollments if devices is None else devices)

    def _apply(
        self, snapshot: snapshots.Snapshot, devices: Mapping[DeviceKey, enrolled.Enrolled]
    ) -> Outcome:
        started = time.perf_counter()
        result = loader.load(snapshot.files, memo=self._memo)
        model = enrolled.merge(result.model, devices, self._merged)
        if snapshot.changed is None or self.revision is None:
            wanted = None  # first snapshot: everything
        else:
            wanted = desired.affected(self._renders, self.model, model, snapshot.changed)
            wanted |= {
                key
                for key in self.enrollments.keys() | devices.keys()
                if self.enrollments.get(key) != devices.get(key)
            }
        renders = desired.render_devices(
            snapshot.files,
            model,
            only=wanted,
            cache=self._cache,
            device_ids={key: entry.device_id for key, entry in devices.items()},
            policy=self.policy,
            changed=snapshot.changed,
        )
        table = dict(self.table)
        changed, failed = [], []
        for key, render in renders.items():
            before = table.get(key)
            table[key] = _next_state(before, render, snapshot.revision)
            if render.ok and (before is None or before.digest != render.digest):
                changed.append(key)
            if not render.ok:
                failed.append(key)
        self._renders.update(renders)
        missing = [key for key in table if not _in_model(model, key)]
        removed = _removed(missing, snapshot.files)
        for key in missing:
            self._renders.pop(key, None)
            if key in removed:
                del table[key]
            else:
                table[key] = _not_loaded(table[key], snapshot.revision, result.diagnostics)
                failed.append(key)
        self.table, self.model, self.revision = table, model, snapshot.revision
        self.loaded, self.enrollments = result.model, devices
        diagnostics = tuple(snapshot.problems) + tuple(result.diagnostics)
        outcome = Outcome(
            snapshot.revision,
            tuple(renders),
            tuple(sorted(changed)),
            tuple(sorted(removed)),
            tuple(sorted(failed)),
            diagnostics,
            time.perf_counter() - started,
        )
        log.info(
            "reconciled %s: %d rendered, %d changed, %d removed, %d failing, %d repo errors "
            "in %.3f s",
            snapshot.revision[:12],
            len(outcome.rendered),
            len(outcome.changed),
            len(outcome.removed),
            len(outcome.failed),
            outcome.errors,
            outcome.seconds,
        )
        return outcome


def _next_state(
    before: DesiredState | None, render: desired.DeviceRender, revision: str
) -> DesiredState:
    if render.ok:
        if before is not None and before.digest == render.digest and not before.failing:
            # same output: the device keeps the revision its manifests came from
            return replace(before, attempted_revision=revision)
        return DesiredState(
            render.tenant,
            render.device,
            revision,
            render.digest,
            render.yaml,
            revision,
            resources=render.resources,
        )
    if before is None:
        return DesiredState(render.tenant, render.device, None, "", "", revision, render.error)
    return replace(before, attempted_revision=revision, error=render.error)


def _in_model(model: fleet.FleetModel, key: DeviceKey) -> bool:
    tenant = model.tenants.get(key[0])
    return tenant is not None and key[1] in tenant.devices


def _removed(missing: list[DeviceKey], files: Mapping[str, bytes]) -> set[DeviceKey]:
    """The missing devices that were deleted (nothing left of their folder), as opposed to
    those whose Device file or tenant file no longer loads."""
    if not missing:
        return set()
    present: set[DeviceKey] = set()
    wanted = set(missing)
    for path in files:
        parts = path.split("/", 4)
        if len(parts) >= 4 and parts[2] == "devices" and (parts[1], parts[3]) in wanted:
            present.add((parts[1], parts[3]))
    return wanted - present


def _not_loaded(before: DesiredState, revision: str, diagnostics: list[Diagnostic]) -> DesiredState:
    tenant, device = before.tenant, before.device
    device_dir = layout.device_dir(tenant, device) + "/"
    tenant_file = layout.tenant_file(tenant)
    ours = [
        d
        for d in diagnostics
        if d.severity == "error" and (d.path.startswith(device_dir) or d.path == tenant_file)
    ]
    reason = str(ours[0]) if ours else f"{tenant}/{device} no longer loads"
    return replace(before, attempted_revision=revision, error=reason)
