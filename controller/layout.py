"""Where things live in a fleet repo (format v1): the path conventions, in one place.

Pure string functions; the loader, the snapshot readers and the editing commands all use these
so that the layout documented in docs/fleet-repo.md is written down once in code.
"""

from __future__ import annotations

__all__ = [
    "API_VERSION",
    "IDENTITY_DIR",
    "KUSTOMIZATION_NAMES",
    "TENANTS_DIR",
    "device_dir",
    "device_file",
    "fleet_file",
    "identity_dir",
    "template_dir",
    "tenant_dir",
    "tenant_file",
    "token_file",
]

API_VERSION = "rciots.io/v1"
TENANTS_DIR = "tenants"
# The file names kustomize accepts for a kustomization, in its order of preference.
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
# In each tenant, a folder the controller provides at render time (never committed): a
# kustomization holding the rendered device's identity ConfigMap.
IDENTITY_DIR = "device-identity"


def tenant_dir(tenant: str) -> str:
    return f"{TENANTS_DIR}/{tenant}"


def tenant_file(tenant: str) -> str:
    return f"{tenant_dir(tenant)}/tenant.yaml"


def token_file(tenant: str, name: str) -> str:
    return f"{tenant_dir(tenant)}/tokens/{name}.yaml"


def device_dir(tenant: str, name: str) -> str:
    return f"{tenant_dir(tenant)}/devices/{name}"


def device_file(tenant: str, name: str) -> str:
    return f"{device_dir(tenant, name)}/device.yaml"


def fleet_file(tenant: str, name: str) -> str:
    return f"{tenant_dir(tenant)}/fleets/{name}.yaml"


def template_dir(tenant: str, name: str) -> str:
    return f"{tenant_dir(tenant)}/templates/{name}"


def identity_dir(tenant: str) -> str:
    return f"{tenant_dir(tenant)}/{IDENTITY_DIR}"
