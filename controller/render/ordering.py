"""Output order: kustomize's legacy order by kind (the default), or the order of accumulation
(``sortOptions: {order: fifo}``)."""

from __future__ import annotations

import functools
from typing import Any

from rciots.controller.render.api import RenderError
from rciots.controller.render.resource import Gvk, Resource

__all__ = ["sort"]

ORDER_FIRST = (
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
)
ORDER_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


@functools.lru_cache(maxsize=1024)
def _gvk_key(gvk: Gvk) -> str:
    return "_".join((gvk.group or "~G", gvk.version or "~V", gvk.kind or "~K"))


@functools.lru_cache(maxsize=1024)
def _gvk_text(gvk: Gvk) -> str:
    return "_".join((gvk.kind or "~K", gvk.version or "~V", gvk.group or "~G"))


def _id_key(resource: Resource) -> str:
    return "|".join((_gvk_text(resource.gvk), resource.namespace or "~X", resource.name or "~N"))


def _legacy(resources: list[Resource], first: list[str], last: list[str]) -> list[Resource]:
    rank = {kind: index - len(first) for index, kind in enumerate(first)}
    rank.update({kind: index + 1 for index, kind in enumerate(last)})
    namespace_gvks = {r.gvk for r in resources if r.kind == "Namespace"}
    if len(namespace_gvks) > 1 and any(not g.group for g in namespace_gvks):
        return _legacy_compare(resources, rank)

    def key(resource: Resource) -> tuple[int, str, str]:
        gvk = resource.gvk
        return (rank.get(gvk.kind, 0), _gvk_key(gvk), _id_key(resource))

    # (rank, gvk, id) orders exactly as kustomize's comparison does, but for the one case
    # handled above
    return sorted(resources, key=key)


def _legacy_compare(resources: list[Resource], rank: dict[str, int]) -> list[Resource]:
    def compare(a: Resource, b: Resource) -> int:
        ga, gb = a.gvk, b.gvk
        if ga != gb:
            ra, rb = rank.get(ga.kind, 0), rank.get(gb.kind, 0)
            if ra != rb:
                return -1 if ra < rb else 1
            ka, kb = _gvk_key(ga), _gvk_key(gb)
            if ga.kind == gb.kind == "Namespace" and (not ga.group or not gb.group):
                ka, kb = kb, ka  # kustomize reverses this one case
            return -1 if ka < kb else (1 if ka > kb else 0)
        ia, ib = _id_key(a), _id_key(b)
        return -1 if ia < ib else (1 if ia > ib else 0)

    return sorted(resources, key=functools.cmp_to_key(compare))


def sort(resources: list[Resource], options: dict[str, Any], source: str) -> list[Resource]:
    order = options.get("order") or "legacy"
    legacy_options = options.get("legacySortOptions")
    if order == "fifo":
        if legacy_options is not None:
            raise RenderError(source, "legacySortOptions can only be given with order: legacy")
        return list(resources)
    if order != "legacy":
        raise RenderError(source, f"sortOptions.order {order!r}: use legacy or fifo")
    if legacy_options is None:
        return _legacy(resources, list(ORDER_FIRST), list(ORDER_LAST))
    if not isinstance(legacy_options, dict):
        raise RenderError(source, "sortOptions.legacySortOptions must be a mapping")
    return _legacy(
        resources,
        list(legacy_options.get("orderFirst") or []),
        list(legacy_options.get("orderLast") or []),
    )
