"""Desired state: what each device of a fleet repo snapshot should run.

Position in the flow: snapshot -> fleet model -> **desired** (one render per device) ->
connector / status / `rciots diff`. Pure: a snapshot and its loaded model in, one
``DeviceRender`` per device out. Each render reads only its tenant's directory (the render
root) plus the device's identity folder (``identity``), and records the files it read, so that
after a commit only devices whose inputs changed are rendered again (``affected``). The
tenant policy, when given, runs on each rendered result: a violation fails the render.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rciots.agent.bundle import ResourceId
from rciots.controller import fleet, identity, layout, render
from rciots.controller.render import engine

__all__ = [
    "DeviceKey",
    "DeviceRender",
    "PolicyCheck",
    "affected",
    "render_devices",
    "resource_ids",
]

DeviceKey = tuple[str, str]  # (tenant, device)
# (tenant, rendered resources) -> violations (each printable as one line); none: allowed
PolicyCheck = Callable[[str, Sequence[Mapping[str, Any]]], Sequence[object]]


@dataclass(frozen=True)
class DeviceRender:
    tenant: str
    device: str
    entry: str | None  # the kustomization rendered; None when the device has no workload
    yaml: str = ""
    digest: str = ""
    inputs: frozenset[str] = frozenset()
    error: str | None = None
    error_path: str = ""  # the file the error is about (a kustomization, a manifest)
    resources: tuple[ResourceId, ...] = ()  # one per document of ``yaml``, in order

    @property
    def ok(self) -> bool:
        return self.error is None


def _render_one(
    source: engine.Source,
    tenant: fleet.TenantModel,
    device: fleet.Device,
    cache: engine.Cache,
    device_id: str,
    policy: PolicyCheck | None,
) -> DeviceRender:
    name = tenant.tenant.name
    workload = tenant.workload_of(device)
    inputs = frozenset({device.path})
    if workload is None:
        return DeviceRender(name, device.name, None, inputs=inputs)
    laid = identity.IdentitySource(source, device, device_id)
    try:
        rendered = engine.build_from(
            laid, workload.entry, root=layout.tenant_dir(name), cache=cache
        )
    except render.RenderError as exc:
        return DeviceRender(
            name, device.name, workload.entry, inputs=inputs, error=str(exc), error_path=exc.path
        )
    inputs = rendered.inputs - laid.files.keys() | inputs
    violations = policy(name, rendered.resources) if policy is not None else ()
    if violations:
        error = "; ".join(str(v) for v in violations)
        return DeviceRender(
            name,
            device.name,
            workload.entry,
            inputs=inputs,
            error=f"policy: {error}",
            error_path=workload.kustomization,
        )
    return DeviceRender(
        name,
        device.name,
        workload.entry,
        rendered.yaml,
        rendered.digest,
        inputs,
        resources=resource_ids(rendered.resources),
    )


def resource_ids(resources: Sequence[Mapping[str, Any]]) -> tuple[ResourceId, ...]:
    """Which object each rendered resource is, for the agent's results and pruning."""
    ids = []
    for resource in resources:
        metadata = resource.get("metadata")
        metadata = metadata if isinstance(metadata, Mapping) else {}
        namespace = metadata.get("namespace")
        ids.append(
            ResourceId(
                str(resource.get("apiVersion", "")),
                str(resource.get("kind", "")),
                str(metadata.get("name", "")),
                str(namespace) if namespace else None,
            )
        )
    return tuple(ids)


def render_devices(
    snapshot: Mapping[str, bytes],
    model: fleet.FleetModel,
    *,
    only: Iterable[DeviceKey] | None = None,
    cache: engine.Cache | None = None,
    device_ids: Mapping[DeviceKey, str] | None = None,
    policy: PolicyCheck | None = None,
    changed: Iterable[str] | None = None,
) -> dict[DeviceKey, DeviceRender]:
    """Render every device of ``model`` (or those in ``only``) from ``snapshot``.

    ``device_ids`` gives enrolled devices' ids to their identity ConfigMap; ``policy``
    checks each rendered result; ``changed`` (the paths changed since the snapshot the
    ``cache`` last saw) lets the cache update its index of the snapshot instead of
    rebuilding it.
    """
    wanted = set(only) if only is not None else None
    cache = cache if cache is not None else engine.Cache()
    source = cache.source_for(snapshot, changed)
    ids = device_ids or {}
    renders: dict[DeviceKey, DeviceRender] = {}
    for tenant_name in sorted(model.tenants):
        tenant = model.tenants[tenant_name]
        for device_name in sorted(tenant.devices):
            key = (tenant_name, device_name)
            if wanted is None or key in wanted:
                device = tenant.devices[device_name]
                renders[key] = _render_one(source, tenant, device, cache, ids.get(key, ""), policy)
    return renders


def affected(
    previous: Mapping[DeviceKey, DeviceRender],
    previous_model: fleet.FleetModel | None,
    model: fleet.FleetModel,
    changed_paths: Iterable[str],
) -> set[DeviceKey]:
    """The devices of ``model`` to render again after ``changed_paths`` changed.

    Those that are new, whose previous render failed (a failed render does not know all it
    would have read), or whose previous render read a changed file. In a tenant whose model
    changed (``previous_model`` holds another object for it), also every device whose
    workload is now another kustomization: fleets, templates and tokens decide which
    template a device gets without being read by its render.
    """
    changed = set(changed_paths)
    result: set[DeviceKey] = set()
    for tenant_name, tenant in model.tenants.items():
        before_tenant = previous_model.tenants.get(tenant_name) if previous_model else None
        same_model = before_tenant is tenant
        for device_name, device in tenant.devices.items():
            key = (tenant_name, device_name)
            before = previous.get(key)
            if before is None or not before.ok or not before.inputs.isdisjoint(changed):
                result.add(key)
            elif not same_model:
                workload = tenant.workload_of(device)
                if (workload.entry if workload else None) != before.entry:
                    result.add(key)
    return result
