"""Fleet model loader: a snapshot of the fleet repo in, the fleet model and diagnostics out.

Pure: the snapshot is a mapping of repo-relative path to file bytes (from a working tree, a Git
revision, or a test); nothing here touches the filesystem or Git. Position in the flow:
source (snapshot) -> **loader** -> fleet model -> render / enrollment / connector.

Each file is parsed with the bounded YAML reader, checked against the JSON Schema of the kind
its location calls for, checked against its path (name, tenant), and only then turned into a
typed object. Every problem becomes a diagnostic with path, line and column; loading goes on,
so all problems of a run are reported together and a broken file of one tenant never stops the
others. An object whose file has errors is left out of the model; a tenant whose tenant.yaml
has errors is left out whole (its other files are still checked). Cross-references (templates
named by devices, tokens and fleets; fleets selecting a device) are checked last; an object
with a broken reference stays in the model with no workload.

The controller loads every new revision; a ``LoadMemo`` carried from one load to the next
makes that incremental: a file whose bytes did not change is not parsed again, and a tenant
none of whose model files (and no path) changed is not assembled again.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rciots.controller import fleet, layout, names, schemas, timestamps, yamlsafe
from rciots.controller.diagnostics import Diagnostic, Severity, count_errors

__all__ = ["LoadMemo", "LoadResult", "load"]

_YAML_SUFFIXES = (".yaml", ".yml")
_DEVICE_FILES = frozenset("device" + suffix for suffix in _YAML_SUFFIXES)
_DOCS = "docs/fleet-repo.md"


@dataclass(frozen=True)
class LoadResult:
    model: fleet.FleetModel
    diagnostics: list[Diagnostic]

    @property
    def ok(self) -> bool:
        return count_errors(self.diagnostics) == 0


@dataclass
class _TenantLoad:
    """One tenant's earlier load: valid while its paths and model files are the same."""

    paths: frozenset[str]
    model_files: dict[str, bytes]
    model: fleet.TenantModel | None
    diagnostics: list[Diagnostic]


@dataclass
class LoadMemo:
    """What earlier loads found, to be passed to the next ``load`` of a newer snapshot."""

    objects: dict[tuple[str, str, str, str], tuple[bytes, _Object | None, list[Diagnostic]]] = (
        field(default_factory=dict)
    )
    tenants: dict[str, _TenantLoad] = field(default_factory=dict)


@dataclass
class _Object:
    """A parsed, schema-valid object file: its data and where each field is."""

    path: str
    data: dict[str, Any]
    positions: yamlsafe.Positions
    # typed objects made from this one, by variant: kept with the object in the memo, so a
    # later load of the same bytes does not make them again
    built: dict[str | None, Any] = field(default_factory=dict, compare=False, repr=False)

    def spec(self) -> dict[str, Any]:
        spec = self.data.get("spec")
        return spec if isinstance(spec, dict) else {}

    def at(self, *path: str | int) -> tuple[int, int]:
        return self.positions.of_value(path)


@dataclass
class _TenantFiles:
    """The files of one tenant directory, sorted by what the layout says they are."""

    tenant: list[str] = field(default_factory=list)
    tokens: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    devices: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    overlays: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    device_dirs: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    fleets: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    templates: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    template_dirs: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    unexpected: list[str] = field(default_factory=list)
    reserved: list[str] = field(default_factory=list)


def _yaml_stem(filename: str) -> str | None:
    for suffix in _YAML_SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return None


def _classify(tenant: str, paths: list[str]) -> _TenantFiles:
    files = _TenantFiles()
    start = len(layout.tenant_dir(tenant)) + 1
    for path in sorted(paths):
        parts = path[start:].split("/")
        head, depth, last = parts[0], len(parts), parts[-1]
        if head == "devices" and depth == 3 and last in _DEVICE_FILES:
            files.devices[parts[1]].append(path)  # the common case first: fleets are devices
        elif last.lower().endswith(".md"):
            continue  # documentation may sit anywhere
        elif depth == 1 and _yaml_stem(last) == "tenant":
            files.tenant.append(path)
        elif head == "tokens" and depth == 2 and _yaml_stem(last):
            files.tokens[_yaml_stem(last) or ""].append(path)
        elif head == "fleets" and depth == 2 and _yaml_stem(last):
            files.fleets[_yaml_stem(last) or ""].append(path)
        elif head == "devices" and depth == 3 and last in layout.KUSTOMIZATION_NAMES:
            files.overlays[parts[1]].append(path)
        elif head == "devices" and depth >= 3:
            files.device_dirs[parts[1]].append(path)  # inputs of the device's overlay
        elif head == "templates" and depth == 3 and last in layout.KUSTOMIZATION_NAMES:
            files.templates[parts[1]].append(path)
        elif head == "templates" and depth >= 3:
            files.template_dirs[parts[1]].append(path)
        elif head == layout.IDENTITY_DIR:
            files.reserved.append(path)
        else:
            files.unexpected.append(path)
    return files


class _Loader:
    def __init__(
        self, snapshot: Mapping[str, bytes], limits: yamlsafe.Limits, memo: LoadMemo
    ) -> None:
        self.snapshot = snapshot
        self.limits = limits
        self.memo = memo
        self.diagnostics: list[Diagnostic] = []
        self.model_files: dict[str, bytes] = {}  # of the tenant being loaded

    def report(
        self,
        path: str,
        position: tuple[int, int],
        message: str,
        severity: Severity = "error",
    ) -> None:
        self.diagnostics.append(Diagnostic(path, position[0], position[1], message, severity))

    def run(self) -> LoadResult:
        by_tenant: dict[str, list[str]] = defaultdict(list)
        prefix = layout.TENANTS_DIR + "/"
        for path in self.snapshot:
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            if len(parts) == 1:
                if not parts[0].lower().endswith(".md"):
                    self.report(
                        path,
                        (1, 1),
                        "unexpected file: tenants/ holds one directory per tenant",
                        "warning",
                    )
                continue
            by_tenant[parts[0]].append(path)
        if not by_tenant:
            self.report(
                layout.TENANTS_DIR,
                (1, 1),
                f"no tenants: a fleet repo has tenants/<tenant>/tenant.yaml (see {_DOCS})",
            )
        tenants: dict[str, fleet.TenantModel] = {}
        for tenant_name in sorted(by_tenant):
            model = self.load_tenant_once(tenant_name, by_tenant[tenant_name])
            if model is not None:
                tenants[tenant_name] = model
        self.forget_removed(by_tenant)
        self.check_unique_secrets(tenants)
        self.diagnostics.sort()
        return LoadResult(fleet.FleetModel(tenants), self.diagnostics)

    def forget_removed(self, tenants: Mapping[str, list[str]]) -> None:
        for gone in set(self.memo.tenants) - set(tenants):
            del self.memo.tenants[gone]
        snapshot = self.snapshot
        for key in [key for key in self.memo.objects if key[0] not in snapshot]:
            del self.memo.objects[key]

    # -- one file -------------------------------------------------------------------------

    def read_object(self, path: str, kind: str, name: str, tenant: str) -> _Object | None:
        content = self.snapshot[path]
        self.model_files[path] = content
        key = (path, kind, name, tenant)
        known = self.memo.objects.get(key)
        if known is not None and (known[0] is content or known[0] == content):
            self.diagnostics.extend(known[2])
            return known[1]
        before = len(self.diagnostics)
        obj = self.parse_object(path, kind, name, tenant)
        self.memo.objects[key] = (content, obj, self.diagnostics[before:])
        return obj

    def parse_object(self, path: str, kind: str, name: str, tenant: str) -> _Object | None:
        try:
            documents = yamlsafe.parse(self.snapshot[path], self.limits)
        except yamlsafe.YamlError as exc:
            self.report(path, (exc.line, exc.column), exc.message)
            return None
        if len(documents) != 1:
            where = (documents[1].line, 1) if documents else (1, 1)
            found = "no object" if not documents else f"{len(documents)} documents"
            self.report(path, where, f"found {found}: the file must declare one {kind}")
            return None
        try:
            data, positions = yamlsafe.to_python(documents[0])
        except yamlsafe.YamlError as exc:
            self.report(path, (exc.line, exc.column), exc.message)
            return None
        if not isinstance(data, dict):
            self.report(
                path, positions.of_value(()), f"the file must be a mapping declaring {kind}"
            )
            return None
        obj = _Object(path, data, positions)
        if data.get("kind") != kind:
            declared = data.get("kind")
            shown = f"kind {declared!r}" if declared is not None else "no kind"
            self.report(
                path,
                obj.at("kind"),
                f"this file declares {shown}; files at this place declare kind: {kind} "
                f"(see {_DOCS})",
            )
            return None
        problems = schemas.validate(kind, data)
        for problem in problems:
            locate = positions.of_key if problem.at_key else positions.of_value
            self.report(path, locate(problem.path), problem.message)
        if problems:
            return None
        return obj if self.check_identity(obj, name, tenant) else None

    def check_identity(self, obj: _Object, name: str, tenant: str) -> bool:
        """A file declares the object its path names, in the tenant its path names."""
        metadata = obj.data["metadata"]
        ok = True
        if metadata.get("tenant", tenant) != tenant:
            self.report(
                obj.path,
                obj.at("metadata", "tenant"),
                f"metadata.tenant is {metadata['tenant']!r} but the file is in tenant "
                f"{tenant!r}: a tenant's objects live under tenants/<tenant>/ only; move the "
                "file or fix metadata.tenant",
            )
            ok = False
        if metadata["name"] != name:
            self.report(
                obj.path,
                obj.at("metadata", "name"),
                f"metadata.name is {metadata['name']!r} but the path names {name!r}: make "
                "them equal (rename the file or fix metadata.name)",
            )
            ok = False
        return ok

    def read_once(self, kind: str, paths: list[str]) -> str:
        """The one file that declares an object; report the others as duplicates."""
        for extra in paths[1:]:
            self.report(
                extra,
                (1, 1),
                f"{kind} declared twice: also by {paths[0]}; remove one of the files",
            )
        return paths[0]

    def dir_name_ok(self, what: str, name: str, path: str) -> bool:
        if names.is_dns_label(name):
            return True
        self.report(
            path, (1, 1), f"{what} directory name {name!r} is not valid; {names.DNS_LABEL_HINT}"
        )
        return False

    # -- one tenant -----------------------------------------------------------------------

    def load_tenant_once(self, tenant: str, paths: list[str]) -> fleet.TenantModel | None:
        """``load_tenant``, or its earlier result when nothing it depends on changed."""
        known = self.memo.tenants.get(tenant)
        present = frozenset(paths)  # as a set: a snapshot may list its paths in another order
        if known is not None and known.paths == present:
            snapshot = self.snapshot
            if all(
                snapshot[p] is data or snapshot[p] == data for p, data in known.model_files.items()
            ):
                self.diagnostics.extend(known.diagnostics)
                return known.model
        before = len(self.diagnostics)
        self.model_files = {}
        model = self.load_tenant(tenant, paths)
        self.memo.tenants[tenant] = _TenantLoad(
            present, self.model_files, model, self.diagnostics[before:]
        )
        return model

    def load_tenant(self, tenant: str, paths: list[str]) -> fleet.TenantModel | None:
        files = _classify(tenant, paths)
        for path in files.unexpected:
            self.report(
                path,
                (1, 1),
                "unexpected file: a tenant holds tenant.yaml, tokens/, devices/, fleets/ and "
                f"templates/ (see {_DOCS}); this file is ignored",
                "warning",
            )
        for path in files.reserved:
            self.report(
                path,
                (1, 1),
                f"{layout.identity_dir(tenant)}/ is provided by the controller for each "
                "device's render (its identity ConfigMap) and cannot be committed: remove "
                f"this file (see {_DOCS})",
            )
        if not self.dir_name_ok("tenant", tenant, sorted(paths)[0]):
            return None
        tenant_obj = None
        if not files.tenant:
            self.report(
                layout.tenant_file(tenant),
                (1, 1),
                f"missing: tenant {tenant!r} has files but no tenant.yaml declaring kind: "
                f"Tenant (see {_DOCS})",
            )
        else:
            tenant_obj = self.read_object(
                self.read_once("Tenant", files.tenant), "Tenant", tenant, tenant
            )
        templates = self.load_templates(tenant, files)
        tokens = self.load_each(tenant, "ProvisioningToken", files.tokens, _token)
        fleets = self.load_each(tenant, "Fleet", files.fleets, _fleet)
        devices = self.load_devices(tenant, files)
        self.check_references(templates, tokens.values(), fleets.values(), devices.values())
        self.check_fleet_choice(tenant, fleets, devices.values())
        if tenant_obj is None:
            return None
        return fleet.TenantModel(
            tenant=_tenant(tenant_obj, tenant),
            tokens={name: built for name, (built, _) in tokens.items()},
            devices={name: built for name, (built, _) in devices.items()},
            fleets={name: built for name, (built, _) in fleets.items()},
            templates=templates,
        )

    def load_each(
        self,
        tenant: str,
        kind: str,
        declared: Mapping[str, list[str]],
        build: Callable[[_Object, str, str], Any],
    ) -> dict[str, tuple[Any, _Object]]:
        loaded: dict[str, tuple[Any, _Object]] = {}
        for name in sorted(declared):
            obj = self.read_object(self.read_once(kind, declared[name]), kind, name, tenant)
            if obj is None:
                continue
            built = self.built_before(obj)
            if built is None:
                built = self.remember(obj, build(obj, tenant, name))
            loaded[name] = (built, obj)
        return loaded

    def built_before(self, obj: _Object, variant: str | None = None) -> Any:
        """What was made from this very parsed object (and variant) before, or None."""
        return obj.built.get(variant)

    def remember(self, obj: _Object, built: Any, variant: str | None = None) -> Any:
        obj.built[variant] = built
        return built

    def load_templates(self, tenant: str, files: _TenantFiles) -> dict[str, fleet.Template]:
        templates: dict[str, fleet.Template] = {}
        for name in sorted(set(files.templates) | set(files.template_dirs)):
            kustomizations = files.templates.get(name, [])
            first = (kustomizations or files.template_dirs[name])[0]
            if not self.dir_name_ok("template", name, first):
                continue
            if not kustomizations:
                self.report(
                    first,
                    (1, 1),
                    f"template {name!r} has no kustomization.yaml at "
                    f"{layout.template_dir(tenant, name)}/: a template is a Kustomize base",
                )
                continue
            templates[name] = fleet.Template(
                tenant,
                name,
                layout.template_dir(tenant, name),
                self.read_once("kustomization", _kustomize_order(kustomizations)),
            )
        return templates

    def load_devices(
        self, tenant: str, files: _TenantFiles
    ) -> dict[str, tuple[fleet.Device, _Object]]:
        for name in sorted((set(files.overlays) | set(files.device_dirs)) - set(files.devices)):
            first = (files.overlays.get(name) or files.device_dirs[name])[0]
            self.report(
                first,
                (1, 1),
                f"device {name!r} has files but no device.yaml: add "
                f"{layout.device_file(tenant, name)} declaring kind: Device",
            )
        loaded: dict[str, tuple[fleet.Device, _Object]] = {}
        for name, (device, obj) in self.load_each(tenant, "Device", files.devices, _device).items():
            overlays = files.overlays.get(name)
            if overlays:
                overlay = self.read_once("kustomization", _kustomize_order(overlays))
                device = self.built_before(obj, overlay) or self.remember(
                    obj, dataclasses.replace(device, overlay=overlay), overlay
                )
            loaded[name] = (device, obj)
        return loaded

    # -- across objects -------------------------------------------------------------------

    def check_references(
        self,
        templates: Mapping[str, fleet.Template],
        *groups: Any,
    ) -> None:
        for group in groups:
            for built, obj in group:
                template = getattr(built, "template", None)
                if template is None:
                    continue
                position = obj.at("spec", "template")
                if getattr(built, "overlay", None):
                    self.report(
                        obj.path,
                        position,
                        f"spec.template is set but the device has its own {built.overlay}; "
                        "the overlay names its template in resources: remove spec.template",
                    )
                elif template not in templates:
                    known = ", ".join(sorted(templates)) or "none"
                    self.report(
                        obj.path,
                        position,
                        f"template {template!r} does not exist in this tenant (templates: "
                        f"{known}); add templates/{template}/kustomization.yaml or fix the name",
                    )

    def check_fleet_choice(
        self,
        tenant: str,
        fleets: Mapping[str, tuple[fleet.Fleet, _Object]],
        devices: Any,
    ) -> None:
        by_name = {name: built for name, (built, _) in fleets.items()}
        for device, obj in devices:
            if device.overlay is not None or device.template is not None:
                continue
            matching = fleet.choose_fleets(by_name, device.labels)
            if len(matching) > 1:
                listed = ", ".join(f.path for f in matching)
                self.report(
                    obj.path,
                    obj.at("metadata", "labels"),
                    f"device {device.name!r} is selected by {len(matching)} fleets ({listed}); "
                    "set spec.template on the device or make the fleets' selectors exclusive",
                )
            elif not matching:
                self.report(
                    obj.path,
                    obj.at("metadata", "name"),
                    f"device {device.name!r} gets no workload: it has no kustomization.yaml, "
                    "no spec.template and no fleet selects its labels",
                    "warning",
                )

    def check_unique_secrets(self, tenants: Mapping[str, fleet.TenantModel]) -> None:
        first: dict[str, str] = {}
        for model in tenants.values():
            for token in model.tokens.values():
                if token.secret_hash in first:
                    self.report(
                        token.path,
                        (1, 1),
                        f"token has the same secretHash as {first[token.secret_hash]}: every "
                        "token needs its own secret; create a new one with `rciots token create`",
                    )
                else:
                    first[token.secret_hash] = token.path


def _kustomize_order(paths: list[str]) -> list[str]:
    """Kustomization files in kustomize's order of preference (it takes the first)."""
    order = {name: index for index, name in enumerate(layout.KUSTOMIZATION_NAMES)}
    return sorted(paths, key=lambda p: order[p.rpartition("/")[2]])


def _labels(value: Any) -> dict[str, str]:
    return dict(value) if isinstance(value, dict) else {}


def _tenant(obj: _Object, name: str) -> fleet.Tenant:
    spec = obj.spec()
    return fleet.Tenant(
        name=name,
        path=obj.path,
        display_name=spec.get("displayName", name),
        enabled=spec.get("enabled", True),
        viewers=tuple(fleet.Viewer(v["name"], v["tokenHash"]) for v in spec.get("viewers", [])),
        max_devices=spec.get("limits", {}).get("maxDevices"),
    )


def _token(obj: _Object, tenant: str, name: str) -> fleet.ProvisioningToken:
    spec = obj.spec()
    expires = spec.get("expires")
    return fleet.ProvisioningToken(
        tenant=tenant,
        name=name,
        path=obj.path,
        secret_hash=spec["secretHash"],
        approval=spec.get("approval", "manual"),
        enabled=spec.get("enabled", True),
        expires=timestamps.parse_timestamp(expires) if expires is not None else None,
        max_devices=spec.get("maxDevices"),
        template=spec.get("template"),
        labels=_labels(spec.get("labels")),
    )


def _device(obj: _Object, tenant: str, name: str) -> fleet.Device:
    spec = obj.spec()
    return fleet.Device(
        tenant=tenant,
        name=name,
        path=obj.path,
        labels=_labels(obj.data["metadata"].get("labels")),
        approved=spec.get("approved", False),
        enabled=spec.get("enabled", True),
        template=spec.get("template"),
        description=spec.get("description", ""),
    )


def _fleet(obj: _Object, tenant: str, name: str) -> fleet.Fleet:
    spec = obj.spec()
    selector = spec["selector"]
    return fleet.Fleet(
        tenant=tenant,
        name=name,
        path=obj.path,
        selector=fleet.Selector(
            match_labels=_labels(selector.get("matchLabels")),
            match_expressions=tuple(
                fleet.Requirement(e["key"], e["operator"], frozenset(e.get("values", [])))
                for e in selector.get("matchExpressions", [])
            ),
        ),
        template=spec["template"],
    )


def load(
    snapshot: Mapping[str, bytes],
    limits: yamlsafe.Limits = yamlsafe.DEFAULT_LIMITS,
    memo: LoadMemo | None = None,
) -> LoadResult:
    """Load the fleet model of ``snapshot`` (repo-relative path -> bytes).

    ``memo``, passed again with each newer snapshot, keeps what earlier loads parsed: the
    result is the same as without it, only faster. It must not be shared between different
    ``limits``.
    """
    return _Loader(snapshot, limits, memo if memo is not None else LoadMemo()).run()
