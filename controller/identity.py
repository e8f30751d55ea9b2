"""The device identity ConfigMap: how a shared template learns which device it renders for.

Position in the flow: desired state (per device render) -> **identity** -> renderer. For each
device's render the controller provides the folder ``tenants/<tenant>/device-identity/``: a
kustomization whose one resource is the ConfigMap ``rciots-device-identity``::

    metadata:
      name: rciots-device-identity
      labels: <the device's labels>
      annotations: {config.kubernetes.io/local-config: "true"}
    data: {tenant: ..., device: ..., id: ...}

A template (or overlay) lists the folder as a resource (``- ../../device-identity``) and copies
values into its objects with standard Kustomize ``replacements``. The local-config annotation
makes kustomize drop the ConfigMap from the output: it feeds the build, it is not deployed.
Pure: ``IdentitySource`` lays the two files over a snapshot source without copying it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from rciots.controller import fleet, layout
from rciots.controller.render import engine

__all__ = ["CONFIGMAP_NAME", "IdentitySource", "identity_files"]

CONFIGMAP_NAME = "rciots-device-identity"
_KUSTOMIZATION = b"resources:\n- identity.yaml\n"


def identity_files(device: fleet.Device, device_id: str = "") -> dict[str, bytes]:
    """The provided folder's files for ``device`` (``device_id``: its enrolled id, if any)."""
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIGMAP_NAME,
            "labels": dict(device.labels),
            "annotations": {"config.kubernetes.io/local-config": "true"},
        },
        "data": {"tenant": device.tenant, "device": device.name, "id": device_id},
    }
    folder = layout.identity_dir(device.tenant)
    return {
        f"{folder}/kustomization.yaml": _KUSTOMIZATION,
        # JSON is YAML, and json.dumps quotes every string: no value can change type or escape
        f"{folder}/identity.yaml": json.dumps(configmap, indent=1).encode(),
    }


class IdentitySource:
    """A snapshot source with one device's identity folder laid over it."""

    def __init__(self, base: engine.Source, device: fleet.Device, device_id: str = "") -> None:
        self.base = base
        self.files: Mapping[str, bytes] = identity_files(device, device_id)
        self.folder = layout.identity_dir(device.tenant)

    def get(self, path: str) -> bytes | None:
        provided = self.files.get(path)
        return provided if provided is not None else self.base.get(path)

    def is_directory(self, path: str) -> bool:
        return path == self.folder or self.base.is_directory(path)
