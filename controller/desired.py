"""Desired state: what each device of a fleet repo snapshot should run.

Position in the flow: snapshot -> fleet model -> **desired** (one render per device) ->
connector / status / `rciots diff`. Pure: a snapshot and its loaded model in, one
``DeviceRender`` per device out. Each render reads only its tenant's directory (the render
root) and records the files it read, so that after a commit only devices whose inputs changed
are rendered again (``affected``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rciots.controller import fleet, layout, render
from rciots.controller.render import engine

__all__ = ["DeviceKey", "DeviceRender", "affected", "render_devices"]

DeviceKey = tuple[str, str]  # (tenant, device)


@dataclass(frozen=True)
class DeviceRender:
    tenant: str
    device: str
    entry: str | None  # the kustomization rendered; None when the device has no workload
    yaml: str = ""
    digest: str = ""
    inputs: frozenset[str] = frozenset()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _render_one(
    snapshot: Mapping[str, bytes],
    tenant: fleet.TenantModel,
    device: fleet.Device,
    cache: engine.Cache,
) -> DeviceRender:
    name = tenant.tenant.name
    workload = tenant.workload_of(device)
    inputs = frozenset({device.path})
    if workload is None:
        return DeviceRender(name, device.name, None, inputs=inputs)
    try:
        rendered = render.build(snapshot, workload.entry, root=layout.tenant_dir(name), cache=cache)
    except render.RenderError as exc:
        return DeviceRender(name, device.name, workload.entry, inputs=inputs, error=str(exc))
    return DeviceRender(
        name,
        device.name,
        workload.entry,
        rendered.yaml,
        rendered.digest,
        rendered.inputs | inputs,
    )


def render_devices(
    snapshot: Mapping[str, bytes],
    model: fleet.FleetModel,
    *,
    only: Iterable[DeviceKey] | None = None,
    cache: engine.Cache | None = None,
) -> dict[DeviceKey, DeviceRender]:
    """Render every device of ``model`` (or those in ``only``) from ``snapshot``."""
    wanted = set(only) if only is not None else None
    cache = cache if cache is not None else engine.Cache()
    renders: dict[DeviceKey, DeviceRender] = {}
    for tenant_name in sorted(model.tenants):
        tenant = model.tenants[tenant_name]
        for device_name in sorted(tenant.devices):
            key = (tenant_name, device_name)
            if wanted is None or key in wanted:
                renders[key] = _render_one(snapshot, tenant, tenant.devices[device_name], cache)
    return renders


def affected(
    previous: Mapping[DeviceKey, DeviceRender],
    model: fleet.FleetModel,
    changed_paths: Iterable[str],
) -> set[DeviceKey]:
    """The devices to render again after ``changed_paths`` changed: those whose previous
    render read a changed file, and those that are new or were not rendered before.

    Fleet and token files decide which template a device gets without being read by its
    render, so a change to one of them re-renders the devices of its tenant.
    """
    changed = set(changed_paths)
    tenants_touched = {
        path.split("/")[1]
        for path in changed
        if path.startswith(layout.TENANTS_DIR + "/")
        and path.count("/") >= 2
        and ("/fleets/" in path or path.endswith(("tenant.yaml", "tenant.yml")))
    }
    result: set[DeviceKey] = set()
    for tenant_name, tenant in model.tenants.items():
        for device_name in tenant.devices:
            key = (tenant_name, device_name)
            before = previous.get(key)
            if before is None or tenant_name in tenants_touched or before.inputs & changed:
                result.add(key)
    return result
