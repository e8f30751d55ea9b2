"""The fleet model: typed, validated objects of one fleet repo snapshot.

The loader (``loader.load``) builds these from a snapshot; everything downstream (rendering,
enrollment, the connector, the status page) reads them and never the YAML. All pure: label
selection and the choice of a device's workload are decided here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = [
    "Approval",
    "Device",
    "Fleet",
    "FleetModel",
    "ProvisioningToken",
    "Requirement",
    "Selector",
    "Template",
    "Tenant",
    "TenantModel",
    "Viewer",
    "Workload",
    "choose_fleets",
]

Approval = Literal["auto", "manual"]
Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        found = self.key in labels and labels[self.key] in self.values
        return found if self.operator == "In" else not found


@dataclass(frozen=True)
class Selector:
    """A Kubernetes-style label selector: every matchLabels entry and every expression hold."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            r.matches(labels) for r in self.match_expressions
        )


@dataclass(frozen=True)
class Viewer:
    name: str
    token_hash: str


@dataclass(frozen=True)
class Tenant:
    name: str
    path: str
    display_name: str
    enabled: bool = True
    viewers: tuple[Viewer, ...] = ()
    max_devices: int | None = None


@dataclass(frozen=True)
class ProvisioningToken:
    tenant: str
    name: str
    path: str
    secret_hash: str
    approval: Approval = "manual"  # the safe default: a leaked token alone enrolls nothing
    enabled: bool = True
    expires: datetime | None = None
    max_devices: int | None = None
    template: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def is_expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires


@dataclass(frozen=True)
class Device:
    tenant: str
    name: str
    path: str
    labels: Mapping[str, str] = field(default_factory=dict)
    approved: bool = False
    enabled: bool = True
    template: str | None = None
    description: str = ""
    overlay: str | None = None  # path of the device's own kustomization file, if any


@dataclass(frozen=True)
class Fleet:
    tenant: str
    name: str
    path: str
    selector: Selector
    template: str


@dataclass(frozen=True)
class Template:
    tenant: str
    name: str
    directory: str
    kustomization: str  # path of its kustomization file


@dataclass(frozen=True)
class Workload:
    """What a device runs: the Kustomize entry directory to render, and why that one."""

    entry: str
    source: Literal["overlay", "device", "fleet"]
    fleet: str | None = None
    # the entry's kustomization file, to point at in messages (derived from ``entry``)
    kustomization: str = field(default="", compare=False)


def choose_fleets(fleets: Mapping[str, Fleet], labels: Mapping[str, str]) -> list[Fleet]:
    """The fleets whose selector matches ``labels``, by name."""
    return [fleets[name] for name in sorted(fleets) if fleets[name].selector.matches(labels)]


@dataclass(frozen=True)
class TenantModel:
    tenant: Tenant
    tokens: Mapping[str, ProvisioningToken] = field(default_factory=dict)
    devices: Mapping[str, Device] = field(default_factory=dict)
    fleets: Mapping[str, Fleet] = field(default_factory=dict)
    templates: Mapping[str, Template] = field(default_factory=dict)

    def workload_of(self, device: Device) -> Workload | None:
        """The device's own overlay, else its template, else the one fleet that selects it.

        None when nothing applies, or when several fleets select it (the loader reports that
        as an error, so a valid model never has it).
        """
        if device.overlay is not None:
            overlay = device.overlay
            return Workload(overlay.rpartition("/")[0], "overlay", kustomization=overlay)
        if device.template is not None:
            template = self.templates.get(device.template)
            if template is None:
                return None
            return Workload(template.directory, "device", kustomization=template.kustomization)
        matching = choose_fleets(self.fleets, device.labels)
        if len(matching) != 1:
            return None
        template = self.templates.get(matching[0].template)
        if template is None:
            return None
        return Workload(
            template.directory, "fleet", matching[0].name, kustomization=template.kustomization
        )


@dataclass(frozen=True)
class FleetModel:
    tenants: Mapping[str, TenantModel] = field(default_factory=dict)

    def token_by_hash(self, secret_hash: str) -> ProvisioningToken | None:
        for tenant in self.tenants.values():
            for token in tenant.tokens.values():
                if token.secret_hash == secret_hash:
                    return token
        return None

    def counts(self) -> dict[str, int]:
        """How many objects of each kind the model holds, for summaries."""
        models = self.tenants.values()
        return {
            "tenants": len(self.tenants),
            "tokens": sum(len(t.tokens) for t in models),
            "devices": sum(len(t.devices) for t in models),
            "fleets": sum(len(t.fleets) for t in models),
            "templates": sum(len(t.templates) for t in models),
        }
