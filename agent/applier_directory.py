"""The ``directory`` applier: writes each bundle into a folder, for other automation and tests.

Position in the flow: protocol delivers a ``Bundle`` -> **directory applier** -> ``ApplyResult``
-> ``applied`` message.

Layout under the root folder::

    current -> bundles/<digest>-<random>      a symbolic link, replaced in one rename
    bundles/<digest>-<random>/
        bundle.yaml                           the whole bundle, exactly as rendered
        index.json                            revision, digest, and each resource with its file
        resources/<group>_<Kind>_<namespace>_<name>.yaml   one document per file

A new bundle is written into a new folder (every file and folder fsynced), and only then does
``current`` move to it, by renaming a new link over the old one. A crash at any point leaves
``current`` on the old bundle or on the new one, never on half of one; folders a crash left
behind are removed by the next apply. Resources that left the bundle simply are not in the
new folder, so their files are gone from ``current`` when it moves ("pruned").

Files are readable by the owner only: a bundle may hold Secrets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rciots.agent import applier_support
from rciots.agent.atomicfile import fsync_folder
from rciots.agent.bundle import ApplyResult, Bundle, BundleError, ResourceId, ResourceResult

__all__ = ["DirectoryApplier", "file_name"]

log = logging.getLogger(__name__)

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
# well under the 255 bytes most file systems allow for one name
_NAME_LIMIT = 200


def file_name(resource: ResourceId) -> str:
    """The file a resource is written to: stable (the same id always gives the same name,
    whatever its apiVersion) and safe (one plain file name whatever the id holds).

    Each part keeps letters, digits, ``-`` and ``.``; any other byte is written ``%XX``, so
    ``/`` can never make a path and ``_`` only ever separates the four parts.
    """
    parts = (resource.group or "core", resource.kind, resource.namespace or "", resource.name)
    name = "_".join(_escape(part) for part in parts) + ".yaml"
    if len(name) > _NAME_LIMIT:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = f"{name[: _NAME_LIMIT - 30]}-{digest}.yaml"
    return name


def _escape(part: str) -> str:
    return "".join(
        char if char in _SAFE else "".join(f"%{byte:02X}" for byte in char.encode())
        for char in part
    )


def _identity(resource: ResourceId) -> tuple[str, str, str, str]:
    return (resource.group, resource.kind, resource.namespace or "", resource.name)


@dataclass
class DirectoryApplier:
    """Writes bundles under ``root`` (created when missing)."""

    root: Path
    kind: str = field(default="directory", init=False)

    def apply(self, bundle: Bundle, previous: Sequence[ResourceId]) -> ApplyResult:
        try:
            bundle.check()
        except BundleError as error:
            return ApplyResult(bundle.digest, error=str(error))
        redactor = applier_support.Redactor.for_documents(bundle.documents())
        try:
            results = self._write(bundle)
        except OSError as error:
            # nothing moved: current still names the previous bundle
            message = f"cannot write the bundle under {self.root}: {error.strerror or error}"
            return ApplyResult(bundle.digest, error=redactor.clean(message))
        for resource in applier_support.pick_prunes(previous, bundle.resources, _identity):
            results.append(ResourceResult(resource, "pruned", "file removed from current"))
        result = ApplyResult(bundle.digest, tuple(results))
        log.info(
            "directory: %s in %s (%s)", bundle.digest, self.root, applier_support.summary(result)
        )
        return result

    def _write(self, bundle: Bundle) -> list[ResourceResult]:
        bundles = self.root / "bundles"
        bundles.mkdir(mode=0o700, parents=True, exist_ok=True)
        current = self._current()
        documents = bundle.documents()
        if current is not None and _holds(current, bundle):
            self._remove_others(bundles, current)
            return [ResourceResult(resource, "unchanged") for resource, _ in documents]

        target = bundles / f"{bundle.digest.partition(':')[2][:16]}-{secrets.token_hex(4)}"
        target.mkdir(mode=0o700)
        (target / "resources").mkdir(mode=0o700)
        results: list[ResourceResult] = []
        index: list[dict[str, str]] = []
        written: set[str] = set()
        for resource, text in documents:
            name = file_name(resource)
            if name in written:
                results.append(
                    ResourceResult(resource, "failed", "the same resource twice in the bundle")
                )
                continue
            written.add(name)
            _write_file(target / "resources" / name, text.encode())
            index.append({**resource.to_json(), "file": f"resources/{name}"})
            old = None if current is None else current / "resources" / name
            same = old is not None and _read(old) == text.encode()
            results.append(ResourceResult(resource, "unchanged" if same else "applied"))
        _write_file(target / "bundle.yaml", bundle.manifests.encode())
        summary = {"revision": bundle.revision, "digest": bundle.digest, "resources": index}
        _write_file(target / "index.json", (json.dumps(summary, indent=2) + "\n").encode())
        fsync_folder(target / "resources")
        fsync_folder(target)
        fsync_folder(bundles)

        # the commit point: one rename moves current from the old folder to the new one
        link = self.root / f".current.{secrets.token_hex(4)}.tmp"
        os.symlink(f"bundles/{target.name}", link)
        try:
            os.replace(link, self.root / "current")
        finally:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
        fsync_folder(self.root)
        self._remove_others(bundles, target)
        return results

    def _current(self) -> Path | None:
        try:
            target = os.readlink(self.root / "current")
        except OSError:  # no link yet, or something else in its place
            return None
        path = self.root / target
        return path if path.parent == self.root / "bundles" and path.is_dir() else None

    def _remove_others(self, bundles: Path, keep: Path) -> None:
        """Folders of earlier bundles, and of writes a crash interrupted."""
        for entry in bundles.iterdir():
            if entry.name != keep.name:
                shutil.rmtree(entry, ignore_errors=True)
        for entry in self.root.glob(".current.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


def _holds(folder: Path, bundle: Bundle) -> bool:
    """Whether ``folder`` is a complete copy of ``bundle`` already (a re-apply writes nothing)."""
    try:
        index = json.loads((folder / "index.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(index, dict)
        and index.get("digest") == bundle.digest
        and index.get("revision") == bundle.revision
        and _read(folder / "bundle.yaml") == bundle.manifests.encode()
    )


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
