"""Name references: once prefixes, suffixes, namespaces and hashes have changed names, every
field that named an object by its old name is pointed at its new one.

kustomize does this once, after the whole build, using the earlier ids each object carries.
The choice of the referral among several look-alikes (same old name in different bases)
follows kustomize: same namespace as the referrer, then the same prefixes and suffixes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from rciots.controller.render import fieldspecs
from rciots.controller.render.api import RenderError
from rciots.controller.render.resource import Gvk, Resource, is_cluster_scoped

__all__ = ["fix_references"]


def _ends_with(longer: list[str], shorter: list[str]) -> bool:
    if len(longer) < len(shorter):
        longer, shorter = shorter, longer
    return not shorter or longer[-len(shorter) :] == shorter


def _affixes_equal(a: Resource, b: Resource, allow_empty: bool) -> bool:
    if allow_empty:
        prefixes = not a.prefixes or not b.prefixes or _ends_with(a.prefixes, b.prefixes)
        suffixes = not a.suffixes or not b.suffixes or _ends_with(a.suffixes, b.suffixes)
        return prefixes and suffixes
    return _ends_with(a.prefixes, b.prefixes) and _ends_with(a.suffixes, b.suffixes)


class _Scope:
    """The resources grouped by effective namespace, to find what a referrer can see, and
    what each one is (names, namespaces and kinds do not change while references are fixed)."""

    def __init__(self, resources: list[Resource]) -> None:
        self.resources = resources
        self.cluster: list[Resource] = []
        self.by_namespace: dict[str, list[Resource]] = {}
        self.by_literal_namespace: dict[str, list[Resource]] = {}
        self.order = {id(r): i for i, r in enumerate(resources)}
        # per object: its kind and effective namespace, the names it had, and the kinds (with
        # and without group) it had
        self.current: dict[int, tuple[str, str]] = {}
        self.names: dict[int, set[str]] = {}
        self.kinds: dict[int, set[tuple[str, str | None]]] = {}
        self._visible: dict[str, list[Resource]] = {}  # by namespace, for most referrers
        for resource in resources:
            names: set[str] = set()
            kinds: set[tuple[str, str | None]] = set()
            for earlier in resource.previous:
                names.add(earlier.name)
                kinds.add((earlier.gvk.kind, None))
                kinds.add((earlier.gvk.kind, earlier.gvk.group))
            self.names[id(resource)], self.kinds[id(resource)] = names, kinds
            kind, literal = resource.kind, resource.namespace
            if is_cluster_scoped(kind):
                self.cluster.append(resource)
                self.current[id(resource)] = (kind, "")
            else:
                namespace = literal or "default"  # the effective namespace
                self.by_namespace.setdefault(namespace, []).append(resource)
                self.current[id(resource)] = (kind, namespace)
            self.by_literal_namespace.setdefault(literal, []).append(resource)

    def visible_to(self, referrer: Resource) -> list[Resource]:
        kind, namespace = self.current[id(referrer)]
        if is_cluster_scoped(kind):
            return self.resources
        binding_namespaces = set()
        if kind in ("RoleBinding", "ClusterRoleBinding"):
            for subject in referrer.data.get("subjects") or []:
                if isinstance(subject, dict) and subject.get("kind") == "ServiceAccount":
                    binding_namespaces.add(subject.get("namespace") or "")
        if not binding_namespaces and namespace in self._visible:
            return self._visible[namespace]
        chosen = {id(r): r for r in self.cluster}
        for r in self.by_namespace.get(namespace, []):
            chosen[id(r)] = r
        for literal in binding_namespaces:
            for r in self.by_literal_namespace.get(literal, []):
                chosen[id(r)] = r
        # keep the build's order, as kustomize walks its list
        visible = sorted(chosen.values(), key=lambda r: self.order[id(r)])
        if not binding_namespaces:
            self._visible[namespace] = visible
        return visible


class _Referrer:
    def __init__(
        self,
        resource: Resource,
        target: tuple[str, str],
        candidates: list[Resource],
        scope: _Scope,
    ) -> None:
        self.resource = resource
        kind, group = target
        # what an earlier id of a referral has: the kind, and the group when one is given
        self.target = (kind, group or None)
        self.candidates = candidates
        self.scope = scope

    def select(
        self,
        old_name: str,
        candidates: list[Resource],
        identical: Callable[[list[Resource]], bool],
        role_ref: tuple[str, str] | None,
    ) -> Resource | None:
        names, kinds, target = self.scope.names, self.scope.kinds, self.target
        found = [c for c in candidates if old_name in names[id(c)] and target in kinds[id(c)]]
        if role_ref is not None:
            group, kind = role_ref
            found = [
                c for c in found if any(p.gvk.selected_by(group, "", kind) for p in c.previous)
            ]
        current = self.scope.current
        kind, namespace = current[id(self.resource)]
        if not is_cluster_scoped(kind):
            found = [
                c
                for c in found
                if is_cluster_scoped(current[id(c)][0])
                or current[id(c)][0] == "ServiceAccount"
                or current[id(c)][1] == namespace
            ]
        if len(found) == 1:
            return found[0]
        found = [c for c in found if _affixes_equal(c, self.resource, True)]
        if len(found) > 1:
            found = [c for c in found if _affixes_equal(c, self.resource, False)]
        if len(found) == 1:
            return found[0]
        if not found:
            return None
        if identical(found):
            return found[0]
        ids = ", ".join(str(c.id) for c in found)
        raise RenderError(
            self.resource.source,
            f"found multiple possible referrals for {old_name!r} in {self.resource.id}: {ids}",
        )

    def set_scalar(self, holder: dict[str, Any] | list[Any], key: Any, role_ref: Any) -> None:
        value = holder[key]
        referral = self.select(
            value, self.candidates, lambda rs: len({r.name for r in rs}) == 1, role_ref
        )
        if referral is not None:
            holder[key] = referral.name

    def set_mapping(self, node: dict[str, Any]) -> None:
        if "name" not in node:
            raise RenderError(self.resource.source, "path config error; no 'name' field in node")
        candidates = self.candidates
        if "namespace" in node:
            wanted = node["namespace"]
            by_original = [
                c
                for c in candidates
                if c.original_id().effective_namespace == wanted
                or c.original_id().namespace == wanted
            ]
            candidates = by_original or [c for c in candidates if c.namespace == wanted]
        old_name = node["name"]
        referral = self.select(
            old_name,
            candidates,
            lambda rs: len({(r.name, r.namespace) for r in rs}) == 1,
            None,
        )
        if referral is None:
            return
        if referral.name == old_name and not referral.namespace:
            return
        node["name"] = referral.name
        if referral.namespace:
            node["namespace"] = referral.namespace

    def update(self, holder: dict[str, Any], key: str, role_ref: Any) -> None:
        value = holder.get(key)
        if value is None:
            return
        if isinstance(value, str):
            self.set_scalar(holder, key, role_ref)
        elif isinstance(value, dict):
            self.set_mapping(value)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, str):
                    self.set_scalar(value, index, role_ref)
                elif isinstance(item, dict):
                    self.set_mapping(item)


def _role_ref(resource: Resource, spec: fieldspecs.FieldSpec) -> tuple[str, str] | None:
    if not spec.path.endswith("roleRef/name"):
        return None
    role_ref = resource.data.get("roleRef")
    if not isinstance(role_ref, dict):
        return None
    group, kind = role_ref.get("apiGroup"), role_ref.get("kind")
    if not isinstance(group, str) or not isinstance(kind, str):
        return None
    return group, kind


# referrer kind -> [(referenced kind and group, field spec)]; a spec without kind applies to all
_BY_REFERRER: dict[str, list[tuple[tuple[str, str], fieldspecs.FieldSpec]]] = {}
for _target, _specs in fieldspecs.NAME_REFERENCES.items():
    for _spec in _specs:
        _BY_REFERRER.setdefault(_spec.kind, []).append((_target, _spec))


_Leaf = tuple[tuple[str, str], fieldspecs.FieldSpec]
# a tree of reference paths: per key (``name[]`` written ``name``), the subtree below it and
# the specs that end there
_Trie = tuple[tuple[str, "_Trie", list[_Leaf]], ...]


@functools.cache
def _trie_for(gvk: Gvk) -> _Trie:
    """All reference paths of a referrer kind merged into one tree, walked once per object."""
    tree: dict[str | None, Any] = {}
    for target, spec in _BY_REFERRER.get(gvk.kind, []) + _BY_REFERRER.get("", []):
        if spec.applies_to(gvk):
            node = tree
            for part in spec.parts():
                node = node.setdefault(part, {})
            node.setdefault(None, []).append((target, spec))
    return _frozen(tree)


def _frozen(tree: dict[str | None, Any]) -> _Trie:
    return tuple(
        (part.removesuffix("[]"), _frozen(child), child.get(None) or [])
        for part, child in tree.items()
        if part is not None
    )


def _walk(obj: Any, trie: _Trie, found: Callable[[dict[str, Any], str, list[_Leaf]], None]) -> None:
    if isinstance(obj, list):
        for item in obj:
            _walk(item, trie, found)
        return
    if not isinstance(obj, dict):
        return
    for key, below, leaves in trie:
        value = obj.get(key)
        if value is None:
            continue
        if leaves:
            found(obj, key, leaves)
        if below:
            _walk(value, below, found)


def fix_references(resources: list[Resource]) -> None:
    if not any(r.previous for r in resources):
        return  # no name or namespace changed: nothing to point anywhere new
    scope = _Scope(resources)
    for resource in resources:
        trie = _trie_for(resource.original_id().gvk)
        if not trie:
            continue
        visible: list[Resource] | None = None

        def found(
            holder: dict[str, Any], key: str, leaves: list[_Leaf], resource: Resource = resource
        ) -> None:
            nonlocal visible
            if visible is None:
                visible = scope.visible_to(resource)
            for target, spec in leaves:
                _Referrer(resource, target, visible, scope).update(
                    holder, key, _role_ref(resource, spec)
                )

        _walk(resource.data, trie, found)
