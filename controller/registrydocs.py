"""The registry's files on the status branch: ``registry/<t>/<d>.yaml`` and
``pending/<t>/<name>.yaml``.

Position in the flow: registry (a change) -> **registrydocs** (bytes) -> status writer; and
back, at start-up, status branch files -> **registrydocs** -> registry import. Pure. The same
entry always gives the same bytes (fixed key order, every key present), so the writer commits
only real changes. The files hold hashes and fingerprints, never a token, key or certificate
secret; the field names are those of docs/status-branch.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from rciots.controller import layout, names, registry, statusdocs, yamlsafe, yamlwrite

__all__ = [
    "PENDING_KIND",
    "REGISTRATION_KIND",
    "Imported",
    "pending_path",
    "read_documents",
    "registration_path",
    "render_pending",
    "render_registration",
]

REGISTRATION_KIND = "DeviceRegistration"
PENDING_KIND = "PendingEnrollment"


def _path(folder: str, tenant: str, name: str) -> str:
    for what, value in (("tenant", tenant), ("name", name)):
        if not names.is_dns_label(value):
            raise ValueError(f"{folder}/{tenant}/{name}: {what} {value!r} is not a DNS label")
    return f"{folder}/{tenant}/{name}.yaml"


def registration_path(tenant: str, name: str) -> str:
    return _path("registry", tenant, name)


def pending_path(tenant: str, name: str) -> str:
    return _path("pending", tenant, name)


def _document(kind: str, tenant: str, name: str, spec: Mapping[str, object]) -> bytes:
    lines = [
        f"apiVersion: {layout.API_VERSION}",
        f"kind: {kind}",
        "metadata:",
        yamlwrite.entry(2, "tenant", tenant),
        yamlwrite.entry(2, "name", name),
        "spec:",
    ]
    for key, value in spec.items():
        if isinstance(value, Mapping):
            if not value:
                lines.append(f"  {key}: {{}}")
                continue
            lines.append(f"  {key}:")
            for inner in sorted(value):
                lines.append(yamlwrite.entry(4, yamlwrite.scalar(inner), str(value[inner])))
        else:
            lines.append(yamlwrite.entry(2, key, None if value is None else str(value)))
    return ("\n".join(lines) + "\n").encode("utf-8")


def render_registration(entry: registry.Registration) -> bytes:
    data = registry.registration_to_json(
        replace(entry, enrolled_at=entry.enrolled_at.replace(microsecond=0))
    )
    spec = {k: v for k, v in data.items() if k not in ("tenant", "name")}
    return _document(REGISTRATION_KIND, entry.tenant, entry.name, spec)


def render_pending(entry: registry.Pending) -> bytes:
    # the agent polls every half minute: only the hour of its last poll is written, so that
    # polls do not make commits (as lastSeen in device status)
    polled = statusdocs.written_last_seen(entry.last_request_at, connected=True)
    assert polled is not None
    data = registry.pending_to_json(
        replace(
            entry, requested_at=entry.requested_at.replace(microsecond=0), last_request_at=polled
        )
    )
    spec = {k: v for k, v in data.items() if k not in ("tenant", "name")}
    return _document(PENDING_KIND, entry.tenant, entry.name, spec)


@dataclass
class Imported:
    registrations: list[registry.Registration] = field(default_factory=list)
    pending: list[registry.Pending] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "path: why", for the log


def read_documents(files: Iterable[tuple[str, bytes]]) -> Imported:
    """The registrations and pending entries among status branch ``files`` (path, content);
    a file that does not read is reported in ``problems`` and skipped."""
    result = Imported()
    for path, content in files:
        folder = path.split("/", 1)[0]
        if folder not in ("registry", "pending") or not path.endswith(".yaml"):
            continue
        try:
            data = _read(content)
            kind, metadata, spec = data.get("kind"), data["metadata"], data["spec"]
            if not isinstance(metadata, Mapping) or not isinstance(spec, Mapping):
                raise ValueError("metadata and spec must be mappings")
            fields = {**spec, "tenant": metadata["tenant"], "name": metadata["name"]}
            if folder == "registry" and kind == REGISTRATION_KIND:
                entry = registry.registration_from_json(fields)
                if registration_path(entry.tenant, entry.name) != path:
                    raise ValueError("its names do not match its path")
                result.registrations.append(entry)
            elif folder == "pending" and kind == PENDING_KIND:
                waiting = registry.pending_from_json(fields)
                if pending_path(waiting.tenant, waiting.name) != path:
                    raise ValueError("its names do not match its path")
                result.pending.append(waiting)
            else:
                raise ValueError(f"unexpected kind {kind!r}")
        except (KeyError, ValueError, yamlsafe.YamlError) as exc:
            result.problems.append(f"{path}: {exc}")
    return result


def _read(content: bytes) -> Mapping[str, object]:
    documents = yamlsafe.parse(content)
    if len(documents) != 1:
        raise ValueError("expected one YAML document")
    data, _ = yamlsafe.to_python(documents[0])
    if not isinstance(data, Mapping):
        raise ValueError("not a mapping")
    return data
