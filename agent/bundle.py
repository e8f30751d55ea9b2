"""The desired-state bundle a device applies, and what applying it gave.

Position in the flow: connector -> protocol (``desired`` message) -> **bundle** -> applier ->
``applied`` message. Both sides import these types: the controller builds a ``Bundle`` from a
device's render, the agent's protocol session rebuilds it (from the full text or a delta), and
an applier turns it into ``ResourceResult``s. Pure data and string work; no YAML library (the
agent has none): the manifests stay the exact text the renderer printed, and the resource ids
travel beside it, one per document, in the same order.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ApplyResult",
    "Bundle",
    "BundleError",
    "ResourceAction",
    "ResourceId",
    "ResourceResult",
    "digest_of",
    "split_documents",
]

# what an applier did to one resource
ResourceAction = Literal["applied", "unchanged", "pruned", "failed", "skipped"]


class BundleError(ValueError):
    """A bundle whose parts do not agree (digest, document count)."""


@dataclass(frozen=True, order=True)
class ResourceId:
    """Which object a document is: enough to name it in results and to prune it later."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def label(self) -> str:
        """``Kind/name`` or ``Kind/namespace/name``: how results and errors name it."""
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"

    def to_json(self) -> dict[str, str]:
        data = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            data["namespace"] = self.namespace
        return data

    @classmethod
    def from_json(cls, data: dict[str, str]) -> ResourceId:
        return cls(data["apiVersion"], data["kind"], data["name"], data.get("namespace"))


def digest_of(manifests: str) -> str:
    """The ``sha256:`` digest of rendered manifests, as the renderer computes it."""
    return "sha256:" + hashlib.sha256(manifests.encode()).hexdigest()


_SEPARATOR = re.compile(r"^---\r?(?:\n|\Z)", re.MULTILINE)


def split_documents(manifests: str) -> list[str]:
    """The documents of a multi-document YAML text as kustomize prints it (``---`` lines
    between documents), each with its trailing newline; [] for an empty text. Lines end at
    ``\n`` only, as everywhere in the protocol.

    A ``---`` line at column 0 is always a separator in such output: text inside a block
    scalar is indented, and a plain or quoted scalar never starts a line with it. One regular
    expression split: the connector checks every bundle it pushes, and a line-by-line loop
    cost more than the diff itself for a 50 KB bundle.
    """
    if not manifests:
        return []
    return _SEPARATOR.split(manifests)


@dataclass(frozen=True)
class Bundle:
    """What one device should run: a revision's rendered manifests and their ids."""

    revision: str
    digest: str
    # out of repr: it is long, and it may hold Secrets that must not reach a log
    manifests: str = field(repr=False)
    resources: tuple[ResourceId, ...] = ()

    def check(self) -> None:
        """BundleError unless the digest is the manifests' and each document has an id."""
        if digest_of(self.manifests) != self.digest:
            raise BundleError(f"manifests do not match digest {self.digest}")
        count = len(split_documents(self.manifests))
        if count != len(self.resources):
            raise BundleError(
                f"{count} document(s) in the manifests but {len(self.resources)} resource id(s)"
            )

    def documents(self) -> list[tuple[ResourceId, str]]:
        """Each resource with its own document's text."""
        return list(zip(self.resources, split_documents(self.manifests), strict=True))


@dataclass(frozen=True)
class ResourceResult:
    resource: ResourceId
    action: ResourceAction
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.action != "failed"


@dataclass(frozen=True)
class ApplyResult:
    """The outcome of applying one bundle: ok only when every resource is."""

    digest: str
    resources: tuple[ResourceResult, ...] = ()
    error: str | None = None  # a failure of the apply as a whole (the tool is missing, ...)

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.ok for r in self.resources)
