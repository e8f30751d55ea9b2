"""A small fleet repo as a snapshot dict, shared by the desired-state and reconcile tests:
one tenant, one template that reads the device identity, one fleet, two devices."""

from __future__ import annotations

T = "tenants/acme"
TENANT = b"apiVersion: rciots.io/v1\nkind: Tenant\nmetadata:\n  name: acme\nspec: {}\n"
TEMPLATE = b"""\
resources:
- app.yaml
- ../../device-identity
replacements:
- source:
    kind: ConfigMap
    name: rciots-device-identity
    fieldPath: data.device
  targets:
  - select:
      kind: Deployment
    fieldPaths:
    - spec.template.spec.containers.[name=app].env.[name=DEVICE].value
- source:
    kind: ConfigMap
    name: rciots-device-identity
    fieldPath: metadata.labels.site
  targets:
  - select:
      kind: Deployment
    fieldPaths:
    - metadata.labels.site
    options:
      create: true
"""
APP = b"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  template:
    spec:
      containers:
      - name: app
        image: app:1
        env:
        - name: DEVICE
          value: unknown
"""
FLEET = b"""\
apiVersion: rciots.io/v1
kind: Fleet
metadata:
  name: all
spec:
  selector:
    matchLabels:
      role: gw
  template: app
"""


def device(name: str, site: str, extra: str = "") -> bytes:
    return (
        f"apiVersion: rciots.io/v1\nkind: Device\nmetadata:\n  name: {name}\n  labels:\n"
        f"    role: gw\n    site: {site}\nspec:\n  approved: true\n{extra}"
    ).encode()


def repo() -> dict[str, bytes]:
    return {
        f"{T}/tenant.yaml": TENANT,
        f"{T}/fleets/all.yaml": FLEET,
        f"{T}/templates/app/kustomization.yaml": TEMPLATE,
        f"{T}/templates/app/app.yaml": APP,
        f"{T}/devices/gw-1/device.yaml": device("gw-1", "lyon"),
        f"{T}/devices/gw-2/device.yaml": device("gw-2", "oslo"),
    }
