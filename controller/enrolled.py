"""Enrolled devices in the fleet model: what the registry adds to what Git says.

Position in the flow: registry -> **enrolled** -> reconcile (which devices exist, their ids) and
revocation (who may connect). Pure.

A device exists for rendering when it has a Device file in Git, or when it enrolled with an
``auto`` token and has none: it then runs with the labels and template its token gave it at
enrollment (docs/fleet-repo.md, "How a device's workload is chosen"). A device enrolled with a
``manual`` token exists only while its Device file approves it. Each enrolled device's id goes
to its identity ConfigMap.

``decide_access`` says, after each reconcile, which enrolled devices may not connect (disabled,
no longer approved, tenant disabled) and which registrations are gone for good (their Device
file or tenant was deleted): those are removed from the registry, which frees the name.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from rciots.controller import fleet, layout, registry

__all__ = [
    "Access",
    "Enrolled",
    "ModelMemo",
    "decide_access",
    "enrolled_of",
    "merge",
    "presence",
]

DeviceKey = tuple[str, str]


@dataclass(frozen=True)
class Enrolled:
    """What reconcile needs of a registration."""

    device_id: str
    approval: Literal["auto", "manual"]
    labels: Mapping[str, str] = field(default_factory=dict)
    template: str | None = None


def enrolled_of(registrations: Collection[registry.Registration]) -> dict[DeviceKey, Enrolled]:
    return {
        r.key: Enrolled(r.device_id, r.approval, dict(r.labels), r.template) for r in registrations
    }


@dataclass
class ModelMemo:
    """Keeps merged tenant models between passes, so that an unchanged tenant stays the same
    object (reconcile compares tenant models by identity to skip work)."""

    # tenant -> (the loaded model, what was added to it, the merged model)
    tenants: dict[str, tuple[fleet.TenantModel, object, fleet.TenantModel]] = field(
        default_factory=dict
    )


def merge(
    model: fleet.FleetModel, enrolled: Mapping[DeviceKey, Enrolled], memo: ModelMemo | None = None
) -> fleet.FleetModel:
    """``model`` with a Device for each ``auto``-enrolled device that has no Device file."""
    extra: dict[str, dict[str, Enrolled]] = {}
    for (tenant, name), entry in enrolled.items():
        loaded = model.tenants.get(tenant)
        if entry.approval == "auto" and loaded is not None and name not in loaded.devices:
            extra.setdefault(tenant, {})[name] = entry
    tenants: dict[str, fleet.TenantModel] = {}
    for tenant_name, loaded in model.tenants.items():
        adding = extra.get(tenant_name)
        if not adding:
            tenants[tenant_name] = loaded
            continue
        signature = sorted(
            (name, e.device_id, sorted(e.labels.items()), e.template or "")
            for name, e in adding.items()
        )
        kept = memo.tenants.get(tenant_name) if memo is not None else None
        if kept is not None and kept[0] is loaded and kept[1] == signature:
            tenants[tenant_name] = kept[2]
            continue
        devices = dict(loaded.devices)
        for name, entry in adding.items():
            devices[name] = fleet.Device(
                tenant=tenant_name,
                name=name,
                path=layout.device_file(tenant_name, name),
                labels=dict(entry.labels),
                approved=True,
                template=entry.template,
            )
        merged = replace(loaded, devices=devices)
        if memo is not None:
            memo.tenants[tenant_name] = (loaded, signature, merged)
        tenants[tenant_name] = merged
    return fleet.FleetModel(tenants)


@dataclass(frozen=True)
class Access:
    denied: Mapping[str, str]  # device id -> why it may not connect
    removed: tuple[str, ...]  # device ids whose registration is gone for good


def presence(paths: Iterable[str]) -> tuple[set[str], set[DeviceKey]]:
    """The tenants and the device folders that have any file among a snapshot's ``paths``."""
    tenants: set[str] = set()
    devices: set[DeviceKey] = set()
    prefix = layout.TENANTS_DIR + "/"
    for path in paths:
        if not path.startswith(prefix):
            continue
        parts = path.split("/", 4)
        if len(parts) >= 3:
            tenants.add(parts[1])
        if len(parts) >= 5 and parts[2] == "devices":
            devices.add((parts[1], parts[3]))
    return tenants, devices


def decide_access(
    registrations: Collection[registry.Registration],
    model: fleet.FleetModel,
    paths: Iterable[str],
) -> Access:
    """Who may connect, from the fleet model loaded from Git (not merged) and the snapshot's
    file ``paths``.

    A registration is removed only when what approved it is deleted: its tenant folder, or
    (manual tokens) its device folder. A tenant or Device file that is present but fails to
    load keeps its devices' access as it was, as they keep their last good desired state.
    """
    tenants_present, devices_present = presence(paths)
    denied: dict[str, str] = {}
    removed: list[str] = []
    for r in registrations:
        tenant = model.tenants.get(r.tenant)
        if tenant is None:
            if r.tenant not in tenants_present:
                removed.append(r.device_id)
            continue
        if not tenant.tenant.enabled:
            denied[r.device_id] = f"tenant {r.tenant} is disabled"
            continue
        device = tenant.devices.get(r.name)
        if device is None:
            if r.approval == "manual" and r.key not in devices_present:
                removed.append(r.device_id)  # its approval (the Device file) was deleted
            continue
        if not device.enabled:
            denied[r.device_id] = f"device {r.tenant}/{r.name} is disabled"
        elif r.approval == "manual" and not device.approved:
            denied[r.device_id] = f"device {r.tenant}/{r.name} is not approved"
    return Access(denied, tuple(removed))
