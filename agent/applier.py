"""The appliers' common interface, the factory that makes one by name, and the inventory.

Position in the flow: protocol delivers a ``Bundle`` -> **applier** -> ``ApplyResult`` ->
``applied`` message. The agent makes one applier at start (``create("podman", ...)``) and,
for each desired bundle, calls ``apply(bundle, previous)`` where ``previous`` is the inventory
the last apply left (the agent keeps it in its state directory). The new inventory is
``inventory_after(previous, result)``: the agent stores it once the result is reported.

Appliers block (they run tools to their end): call them from a worker thread
(``asyncio.to_thread``), one apply at a time.

=============  ================================================================================
``directory``  writes the bundle into a folder, atomically (``applier_directory``)
``podman``     ``podman kube play --replace`` per workload, ``kube down`` (``applier_podman``)
``kubectl``    server-side apply, label, prune by inventory (``applier_kubectl``)
``oc``         the same with the ``oc`` binary
=============  ================================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from rciots.agent import applier_directory, applier_kubectl, applier_podman
from rciots.agent.bundle import ApplyResult, Bundle, ResourceId

__all__ = ["KINDS", "Applier", "create", "inventory_after"]

KINDS = ("directory", "podman", "kubectl", "oc")


class Applier(Protocol):
    """Applies a bundle and prunes what left it; never raises for a failure of the tool or of
    a resource (those are in the result), only for a bug."""

    @property
    def kind(self) -> str: ...

    def apply(self, bundle: Bundle, previous: Sequence[ResourceId]) -> ApplyResult:
        """Apply ``bundle``; prune the resources of ``previous`` that are no longer in it."""
        ...


def create(
    kind: str,
    *,
    root: Path | None = None,
    executable: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> Applier:
    """The applier called ``kind`` (one of ``KINDS``).

    ``root`` is the folder the ``directory`` applier writes and where the ``podman`` applier
    keeps what it needs to take workloads down again (required for both). ``executable`` is
    the tool's name or path (default: ``podman``, ``kubectl``, ``oc``), looked up on the PATH
    of ``env`` (default: the agent's own environment). ``timeout`` bounds every tool run, in
    seconds (default: the applier's own).
    """
    if kind == "directory":
        if root is None:
            raise ValueError("the directory applier needs a root folder")
        return applier_directory.DirectoryApplier(root)
    if kind == "podman":
        if root is None:
            raise ValueError("the podman applier needs a state folder (root)")
        return applier_podman.PodmanApplier(
            root,
            executable=executable or "podman",
            env=env,
            timeout=timeout or applier_podman.DEFAULT_TIMEOUT,
        )
    if kind in ("kubectl", "oc"):
        return applier_kubectl.KubectlApplier(
            executable=executable or kind,
            env=env,
            kind=kind,
            timeout=timeout or applier_kubectl.DEFAULT_TIMEOUT,
        )
    raise ValueError(f"unknown applier {kind!r} (expected one of: {', '.join(KINDS)})")


def inventory_after(previous: Sequence[ResourceId], result: ApplyResult) -> tuple[ResourceId, ...]:
    """What the device holds after ``result``, for the next apply's ``previous``.

    Every resource the result names except the pruned ones: the bundle's resources (a failed
    one may exist in part, so it stays ours to prune later) and the prunes that failed (tried
    again next time). A result without resources (the tool is missing, the bundle is
    inconsistent) changed nothing: ``previous`` stays.
    """
    if not result.resources:
        return tuple(previous)
    kept = (outcome.resource for outcome in result.resources if outcome.action != "pruned")
    return tuple(dict.fromkeys(kept))  # in order, each once
