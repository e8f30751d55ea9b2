"""The build: kustomizations read from the snapshot, resources accumulated, generators and
transformers run in kustomize's order, then hashes, name references, sorting and printing.

Pure. All reading goes through ``_Build.read``, which enforces the load restrictor and records
every path read (``Rendered.inputs``), so the controller can re-render only the devices whose
inputs a commit changed.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from rciots.controller import goscalar, layout, yamlsafe
from rciots.controller.render import (
    documents,
    emit,
    generators,
    kustomization,
    nameref,
    ordering,
    patches,
    provenance,
    replacements,
    transformers,
)
from rciots.controller.render.api import Rendered, RenderError
from rciots.controller.render.resource import Resource, copy_data, scalar_text

__all__ = ["Cache", "MappingSource", "Source", "build", "build_from", "gc_paused"]

_REMOTE = ("http://", "https://", "git@", "ssh://", "git::", "github.com/", "gitlab.com/")


class Source(Protocol):
    """What the build reads: files by '/'-joined relative path, and which paths are folders."""

    def get(self, path: str) -> bytes | None: ...

    def is_directory(self, path: str) -> bool: ...


class MappingSource:
    """A snapshot (path -> bytes) as a build source.

    Folders are known by counting the files below each one. Made from the previous
    snapshot's source and the paths changed since, the count is updated rather than rebuilt,
    which matters when a commit changes one file among tens of thousands.
    """

    def __init__(
        self,
        snapshot: Mapping[str, bytes],
        previous: MappingSource | None = None,
        changed: Iterable[str] | None = None,
    ) -> None:
        self.snapshot = snapshot
        self._files_below: dict[str, int] | None = None
        # only a counted predecessor is kept: never a chain of old snapshots
        counted = previous is not None and previous._files_below is not None
        self._previous = previous if counted and changed is not None else None
        self._changed = changed

    def get(self, path: str) -> bytes | None:
        return self.snapshot.get(path)

    def is_directory(self, path: str) -> bool:
        return self._count().get(path, 0) > 0

    def _count(self) -> dict[str, int]:
        if self._files_below is not None:
            return self._files_below
        previous, self._previous = self._previous, None
        if previous is not None and previous._files_below is not None:
            counts = dict(previous._files_below)
            for path in self._changed or ():
                step = (path in self.snapshot) - (path in previous.snapshot)
                if step:
                    _add_folders(counts, path, step)
        else:
            counts = {}
            for path in self.snapshot:
                _add_folders(counts, path, 1)
        counts[""] = 1  # the top always exists
        self._files_below = counts
        return counts


def _add_folders(counts: dict[str, int], path: str, step: int) -> None:
    end = path.find("/")
    while end != -1:
        folder = path[:end]
        counts[folder] = counts.get(folder, 0) + step
        end = path.find("/", end + 1)


class Cache:
    """Built bases, shared between builds: many device overlays on one template build the
    template once. An entry is reused only while every file it read is unchanged."""

    def __init__(self) -> None:
        # directory -> (the files read and their contents, the resources without their data,
        # and the data of all of them as one JSON text)
        self.bases: dict[str, tuple[dict[str, bytes | None], list[Resource], str]] = {}
        self._source: MappingSource | None = None
        self.seen: set[str] = set()

    def source_for(
        self, snapshot: Mapping[str, bytes], changed: Iterable[str] | None = None
    ) -> MappingSource:
        """One source per snapshot, so its folder index is built once (or, given the paths
        changed since the previous snapshot, updated from that one's)."""
        if self._source is None or self._source.snapshot is not snapshot:
            self._source = MappingSource(snapshot, self._source, changed)
        return self._source

    def lookup(self, directory: str, source: Source) -> tuple[list[Resource], Iterable[str]] | None:
        """Fresh copies of the base built in ``directory`` and the paths it read, if every
        one of those files is unchanged in ``source``."""
        entry = self.bases.get(directory)
        if entry is None:
            return None
        inputs, templates, text = entry
        for path, data in inputs.items():
            current = source.get(path)
            if current is not data and current != data:
                return None
        copies = []
        for template, data in zip(templates, json.loads(text), strict=True):
            copy = template.copy_without_data()
            copy.data = data
            copies.append(copy)
        return copies, inputs.keys()

    def store(
        self, directory: str, reads: Iterable[str], source: Source, built: list[Resource]
    ) -> None:
        """Keep the base built in ``directory`` with the contents of the paths it read."""
        # a base is kept from its second build on: templates are shared by many devices,
        # while a device's own overlay is built once
        if directory not in self.seen:
            self.seen.add(directory)
            return
        # kept as JSON text: json.loads makes a fresh copy several times faster than a
        # Python-level deep copy, and the data is JSON-like by construction
        self.bases[directory] = (
            {path: source.get(path) for path in reads},
            [r.copy_without_data() for r in built],
            json.dumps([r.data for r in built], allow_nan=True),
        )


class _Build:
    def __init__(
        self, source: Source, root: str, limits: yamlsafe.Limits, cache: Cache | None
    ) -> None:
        self.source = source
        self.root = _clean(root)
        self.limits = limits
        self.cache = cache
        self.inputs: set[str] = set()
        self.visiting: list[str] = []
        self.parsed: dict[str, kustomization.Kustomization] = {}  # read once per build
        self.top = ""  # the top kustomization's directory, for buildMetadata paths
        self.tracking = False  # buildMetadata asked for: record origins and transformers
        # one set per base being built, to know what a cached base depends on
        self.reading: list[set[str]] = []

    def note_input(self, path: str) -> None:
        self.inputs.add(path)
        for reads in self.reading:
            reads.add(path)

    # -- the source, behind the load restrictor -------------------------------------------

    def is_directory(self, path: str) -> bool:
        return self.source.is_directory(path)

    def resolve(self, base: str, relative: str, referrer: str) -> str:
        if relative.startswith("/"):
            raise RenderError(referrer, f"absolute path {relative!r} is not allowed")
        path = _clean(posixpath.join(base, relative))
        if path == ".." or path.startswith("../") or not _within(path, self.root):
            raise RenderError(
                referrer, f"{relative!r} is outside the allowed root {self.root or '.'}/"
            )
        return path

    def read(self, directory: str, relative: str, referrer: str) -> bytes:
        """A file named by the kustomization in ``directory``: kustomize lets it read only
        at or below its own directory."""
        path = self.resolve(directory, relative, referrer)
        return self.read_at(directory, path, relative, referrer)

    def read_at(self, directory: str, path: str, relative: str, referrer: str) -> bytes:
        """``read``, given ``relative`` already resolved to ``path``."""
        if not _within(path, directory):
            raise RenderError(
                referrer,
                f"security: file {relative!r} is not in or below {directory or '.'}/ "
                "(a kustomization reads files only from its own directory)",
            )
        data = self.source.get(path)
        if data is None:
            what = "a directory" if self.is_directory(path) else "not found"
            raise RenderError(referrer, f"file {relative!r} is {what}")
        self.note_input(path)
        return data

    def reader(self, k: kustomization.Kustomization) -> Callable[[str], bytes]:
        """``read`` for the files ``k`` names."""

        def read(relative: str) -> bytes:
            return self.read(k.directory, relative, k.path)

        return read

    def kustomization_in(self, directory: str, referrer: str) -> kustomization.Kustomization:
        candidates = [f"{directory}/{n}" if directory else n for n in layout.KUSTOMIZATION_NAMES]
        contents = {path: self.source.get(path) for path in candidates}
        found = [path for path in candidates if contents[path] is not None]
        if not found:
            raise RenderError(
                referrer or directory,
                f"no kustomization.yaml, kustomization.yml or Kustomization in {directory or '.'}/",
            )
        if len(found) > 1:
            raise RenderError(
                found[0], f"found multiple kustomization files in {directory or '.'}/"
            )
        self.note_input(found[0])
        parsed = self.parsed.get(found[0])
        if parsed is None:
            data = contents[found[0]]
            assert data is not None
            parsed = self.parsed[found[0]] = kustomization.parse(found[0], data, self.limits)
        return parsed

    # -- accumulation ---------------------------------------------------------------------

    def accumulate(
        self,
        directory: str,
        referrer: str,
        into: list[Resource] | None = None,
        *,
        component: bool = False,
    ) -> list[Resource]:
        if directory in self.visiting:
            chain = " -> ".join([*self.visiting, directory])
            raise RenderError(referrer or directory, f"cycle of kustomizations: {chain}")
        self.visiting.append(directory)
        try:
            k = self.kustomization_in(directory, referrer)
            if component and k.kind != "Component":
                raise RenderError(k.path, "a component must have kind: Component")
            if not component and k.kind == "Component" and referrer:
                raise RenderError(k.path, "a Component can only be listed under components:")
            resources = into if into is not None else []
            self.accumulate_resources(k, resources)
            self.run_generators(k, resources)
            for path in k.components:
                target = self.resolve(k.directory, path, k.path)
                if not self.is_directory(target):
                    raise RenderError(k.path, f"component {path!r} is not a directory")
                resources = self.accumulate(target, k.path, resources, component=True)
            self.run_transformers(k, resources)
            return resources
        finally:
            self.visiting.pop()

    def accumulate_resources(
        self, k: kustomization.Kustomization, resources: list[Resource]
    ) -> None:
        index = {_key(r): r for r in resources}
        for entry in k.resources:
            if entry.startswith(_REMOTE) or "://" in entry:
                raise RenderError(k.path, f"remote resource {entry!r} is not supported")
            target = self.resolve(k.directory, entry, k.path)
            if self.is_directory(target):
                if _within(k.directory, target):
                    raise RenderError(
                        k.path, f"cycle detected: {entry!r} is this kustomization or contains it"
                    )
                for resource in self.accumulate_base(target, k.path):
                    _append(resources, index, resource, k.path)
            else:
                for resource in self.load_file(k, entry, target):
                    _append(resources, index, resource, k.path)

    def accumulate_base(self, directory: str, referrer: str) -> list[Resource]:
        # origins are relative to the top, so a tracked build shares no cached base
        if self.cache is not None and not self.tracking:
            cached = self.cache.lookup(directory, self.source)
            if cached is not None:
                copies, paths = cached
                for path in paths:
                    self.note_input(path)
                return copies
        self.reading.append(set())
        try:
            built = self.accumulate(directory, referrer)
        finally:
            reads = self.reading.pop()
        if self.cache is not None and not self.tracking:
            self.cache.store(directory, reads, self.source, built)
        return built

    def load_file(self, k: kustomization.Kustomization, relative: str, path: str) -> list[Resource]:
        """The objects of the file ``relative`` names, resolved to ``path``."""
        data = self.read_at(k.directory, path, relative, k.path)
        loaded = load_resources(path, data, self.limits)
        if self.tracking:
            for resource in loaded:
                resource.origin = provenance.from_file(path, self.top)
        return loaded

    def run_generators(self, k: kustomization.Kustomization, resources: list[Resource]) -> None:
        options = k.get_map("generatorOptions")
        reader = self.reader(k)
        for key, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
            for args in k.get_list(key):
                if not isinstance(args, dict):
                    raise RenderError(k.path, f"each {key} entry must be a mapping")
                generated = generators.generate(kind, args, options, k.path, reader)
                generators.absorb(resources, generated)
                if self.tracking and generated.origin is None:
                    generated.origin = provenance.builtin(k.path, self.top, f"{kind}Generator")

    def run_transformers(self, k: kustomization.Kustomization, resources: list[Resource]) -> None:
        """kustomize's built-in transformers, in its order; with buildMetadata, each one
        configured is noted on every object present after it ran."""
        reader = self.reader(k)

        def ran(kind: str, times: int = 1) -> None:
            if self.tracking:
                for _ in range(times):
                    provenance.note(resources, provenance.builtin(k.path, self.top, kind))

        strategic = k.get_list("patchesStrategicMerge")
        patches.apply_strategic_merge_list(resources, strategic, k.path, reader, self.limits)
        ran("PatchStrategicMergeTransformer", 1 if strategic else 0)
        for entry in k.get_list("patches"):
            patches.apply_patch(resources, entry, k.path, reader, self.limits)
            ran("PatchTransformer")
        if k.get_str("namespace"):
            transformers.set_namespace(resources, k.get_str("namespace"), k.path)
            ran("NamespaceTransformer")
        prefix, suffix = k.get_str("namePrefix"), k.get_str("nameSuffix")
        transformers.set_name_prefix_suffix(resources, prefix, suffix)
        ran("PrefixTransformer", 1 if prefix else 0)
        ran("SuffixTransformer", 1 if suffix else 0)
        labels, common = k.get_list("labels"), k.string_map("commonLabels")
        transformers.set_labels(resources, labels, common, k.path)
        ran("LabelTransformer", len(labels) + 1 if labels or common else 0)
        annotations = k.string_map("commonAnnotations")
        transformers.set_annotations(resources, annotations, k.path)
        ran("AnnotationsTransformer", 1 if annotations else 0)
        for entry in k.get_list("patchesJson6902"):
            patches.apply_json6902(resources, entry, k.path, reader, self.limits)
            ran("PatchJson6902Transformer")
        for entry in k.get_list("replicas"):
            transformers.set_replica_count(resources, entry, k.path)
            ran("ReplicaCountTransformer")
        for entry in k.get_list("images"):
            transformers.set_image(resources, entry, k.path)
            ran("ImageTagTransformer")
        rules = k.get_list("replacements")
        replacements.apply(resources, rules, k.path, reader, self.limits)
        ran("ReplacementTransformer", 1 if rules else 0)


def _clean(path: str) -> str:
    cleaned = posixpath.normpath(path) if path else "."
    return "" if cleaned == "." else cleaned


def _within(path: str, directory: str) -> bool:
    return not directory or path == directory or path.startswith(directory + "/")


def _annotations_as_strings(resource: Resource) -> None:
    """kustomize rewrites an object's annotations at the end of a build as strings (of the
    text written, which the reader kept); keys are rewritten as plain scalars."""
    annotations = resource.metadata.get("annotations")
    if not isinstance(annotations, dict):
        return
    for key in annotations:
        if key and goscalar.resolve(key)[0] != "str":
            raise RenderError(
                resource.source,
                f"{resource.id}: annotation key {key!r} is read back as a "
                f"{goscalar.resolve(key)[0]}, which kustomize cannot print",
            )
    resource.metadata["annotations"] = {
        key: value if isinstance(value, str) else _scalar_text(value)
        for key, value in annotations.items()
    }


def _scalar_text(value: Any) -> str:
    if isinstance(value, dict | list):
        return emit.dump_documents([value]).rstrip("\n")
    return scalar_text(value)


def _key(resource: Resource) -> tuple[Any, ...]:
    rid = resource.id
    return (rid.gvk, rid.name, rid.effective_namespace)


def _append(
    resources: list[Resource],
    index: dict[tuple[Any, ...], Resource],
    resource: Resource,
    source: str,
) -> None:
    key = _key(resource)
    existing = index.get(key)
    if existing is not None:
        raise RenderError(
            source,
            f"may not add resource with an already registered id: {resource.id} "
            f"(from {resource.source} and {existing.source})",
        )
    index[key] = resource
    resources.append(resource)


def load_resources(path: str, data: bytes, limits: yamlsafe.Limits) -> list[Resource]:
    """The objects of one manifest file: documents, with `*List` kinds expanded."""
    loaded = documents.load(data, path, limits)
    pending: list[Any] = [d for d in loaded if d is not None and d != {}]
    result: list[Resource] = []
    while pending:
        document = pending.pop(0)
        if not isinstance(document, dict):
            raise RenderError(path, "each document must be a mapping (a Kubernetes object)")
        kind = document.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and "items" in document:
            items = document["items"]
            if items is None:
                continue
            if not isinstance(items, list):
                raise RenderError(path, f"expected a list in {kind}/items")
            pending.extend(items)
            continue
        metadata = document.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if not isinstance(kind, str) or not kind:
            raise RenderError(path, "missing kind in an object")
        if not isinstance(name, str) or not name:
            raise RenderError(path, f"missing metadata.name in a {kind}")
        # aliased YAML nodes arrive as shared objects: each object gets its own copy
        result.append(Resource(copy_data(document), path))
    return result


_LOCAL_CONFIG = "config.kubernetes.io/local-config"


def _is_local_config(resource: Resource) -> bool:
    """Marked as input for the build only, not for the cluster (any value but "false")."""
    metadata = resource.data.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if not isinstance(annotations, dict) or _LOCAL_CONFIG not in annotations:
        return False
    return annotations[_LOCAL_CONFIG] not in ("false", False)


def build(
    snapshot: Mapping[str, bytes], entry: str, *, root: str = "", cache: Cache | None = None
) -> Rendered:
    """Build the kustomization in directory ``entry`` of ``snapshot``.

    Two load restrictions hold, as in kustomize plus one: a kustomization reads files
    (resources, patches, generator inputs) only at or below its own directory, though it may
    name other kustomization directories as resources; and nothing outside ``root`` is read at
    all (the controller passes the tenant's directory; "" is the whole snapshot). Paths use
    ``/`` and are relative to the snapshot's top; ``entry`` "" or "." is the top itself.
    ``cache`` shares built bases between builds.
    """
    source = cache.source_for(snapshot) if cache is not None else MappingSource(snapshot)
    return build_from(source, entry, root=root, cache=cache)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a block (back on after, if it was on).

    A build makes many short-lived, acyclic objects; pausing the collector for its few
    milliseconds saves a fifth of the time on a large heap (a controller with thousands of
    devices), and reference counting still frees everything at once. The controller pauses it
    for a whole reconcile pass too, for the same reason.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def build_from(
    source: Source, entry: str, *, root: str = "", cache: Cache | None = None
) -> Rendered:
    with gc_paused():
        return _build(source, entry, root, cache)


def _build(source: Source, entry: str, root: str, cache: Cache | None) -> Rendered:
    state = _Build(source, root, yamlsafe.DEFAULT_LIMITS, cache)
    directory = _clean(entry)
    if not _within(directory, state.root):
        raise RenderError(entry, f"{entry} is outside the allowed root {root}")
    top = state.kustomization_in(directory, "")
    build_metadata = top.get_list("buildMetadata")
    state.top, state.tracking = directory, bool(build_metadata)
    resources = state.accumulate(directory, "")
    for resource in resources:
        if resource.needs_hash:
            resource.remember_id()
            resource.set_name(f"{resource.name}-{generators.name_hash(resource)}")
    nameref.fix_references(resources)
    # only the top build drops local configuration: bases keep it, so that it can feed the
    # replacements of any kustomization above them
    resources = [r for r in resources if not _is_local_config(r)]
    ordered = ordering.sort(resources, top.get_map("sortOptions"), top.path)
    provenance.annotate(ordered, [str(o) for o in build_metadata], top.path)
    for resource in ordered:
        _annotations_as_strings(resource)
    data, texts = [], []
    for resource in ordered:
        metadata = resource.data.get("metadata")
        if isinstance(metadata, dict) and metadata.get("annotations") == {}:
            del metadata["annotations"]  # kustomize drops an empty annotations map
        try:
            # the printer applies kustomize's JSON round trip itself
            texts.append(emit.dump_documents([resource.data]))
        except (ValueError, TypeError) as exc:
            raise RenderError(resource.source, f"{resource.id}: {exc}") from None
        data.append(resource.data)
    text = "---\n".join(texts)
    digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return Rendered(data, text, digest, frozenset(state.inputs))
