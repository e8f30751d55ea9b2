"""configMapGenerator and secretGenerator: objects made from literals, files and env files.

Pure apart from reading inputs through the ``read`` callable the engine passes (which enforces
the load restrictor). Also the content hash kustomize appends to generated names, and the
create / merge / replace behaviors that let an overlay change a base's generated object.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

from rciots.controller.render.api import RenderError
from rciots.controller.render.resource import Resource

__all__ = ["absorb", "generate", "name_hash"]

Reader = Callable[[str], bytes]
# kustomize (as built into kubectl) checks neither keys nor env variable names
_BEHAVIORS = ("merge", "replace")


def _options(args: dict[str, Any], global_options: dict[str, Any]) -> dict[str, Any]:
    """Generator options with the kustomization's generatorOptions merged in (local wins)."""
    local = dict(args.get("options") or {})
    for key in ("labels", "annotations"):
        merged = dict(global_options.get(key) or {})
        merged.update(local.get(key) or {})
        if merged or key in local:
            local[key] = merged
    for flag in ("disableNameSuffixHash", "immutable"):
        if global_options.get(flag):
            local[flag] = True
    return local


def _remove_quotes(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _pairs(kustomization: str, args: dict[str, Any], read: Reader) -> list[tuple[str, bytes]]:
    """Key/value pairs in kustomize's order: env files, then literals, then files."""
    pairs: list[tuple[str, bytes]] = []
    envs = list(args.get("envs") or [])
    if args.get("env"):
        envs.append(args["env"])
    for env_path in envs:
        for number, line in enumerate(read(env_path).decode("utf-8", "replace").split("\n")):
            text = line.removesuffix("\r")
            if number == 0:
                text = text.removeprefix("\ufeff")
            text = text.lstrip()
            if not text or text.startswith("#"):
                continue
            key, _, value = text.partition("=")
            pairs.append((key, value.encode()))
    for literal in args.get("literals") or []:
        key, equals, value = str(literal).partition("=")
        if not equals or not key:
            raise RenderError(kustomization, f"invalid literal {literal!r}: expected key=value")
        pairs.append((key, _remove_quotes(value).encode()))
    for source in args.get("files") or []:
        source = str(source)
        if source.count("=") > 1 or source.startswith("=") or source.endswith("="):
            raise RenderError(kustomization, f"invalid file source {source!r}")
        key, equals, file_path = source.partition("=")
        if not equals:
            key, file_path = source.rpartition("/")[2], source
        pairs.append((key, read(file_path)))
    return pairs


def _base64(value: bytes) -> str:
    """Secret data as kustomize encodes it: past 70 characters, 70-character lines."""
    encoded = base64.b64encode(value).decode()
    if len(encoded) <= 70:
        return encoded
    return "".join(encoded[i : i + 70] + "\n" for i in range(0, len(encoded), 70))


def generate(
    kind: str,
    args: dict[str, Any],
    global_options: dict[str, Any],
    kustomization: str,
    read: Reader,
) -> Resource:
    """One ConfigMap or Secret from its generator arguments."""
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise RenderError(kustomization, f"a {kind.lower()} generator must have a name")
    # like kustomize, any behavior other than merge or replace means create
    behavior = args.get("behavior") if args.get("behavior") in _BEHAVIORS else "create"
    metadata: dict[str, Any] = {"name": name}
    if args.get("namespace"):
        metadata["namespace"] = args["namespace"]
    data: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": metadata}
    if kind == "Secret":
        data["type"] = args.get("type") or "Opaque"
    text_data: dict[str, str] = {}
    binary_data: dict[str, str] = {}
    for key, value in _pairs(kustomization, args, read):
        if key in text_data or key in binary_data:
            raise RenderError(
                kustomization, f"{kind.lower()} {name} illegally repeats the key `{key}`"
            )
        if kind == "Secret":
            text_data[key] = _base64(value)
            continue
        try:
            text_data[key] = value.decode("utf-8")
        except UnicodeDecodeError:
            binary_data[key] = base64.b64encode(value).decode()
    if text_data:
        data["data"] = text_data
    if binary_data:
        data["binaryData"] = binary_data
    options = _options(args, global_options)
    if options.get("labels"):
        metadata["labels"] = {k: str(v) for k, v in options["labels"].items()}
    if options.get("annotations"):
        metadata["annotations"] = {k: str(v) for k, v in options["annotations"].items()}
    if options.get("immutable"):
        data["immutable"] = True
    return Resource(
        data,
        kustomization,
        needs_hash=not options.get("disableNameSuffixHash"),
        behavior=str(behavior),
    )


def absorb(resources: list[Resource], generated: Resource) -> None:
    """Add a generated object, or merge it into / replace the one it names (behavior)."""
    new_id = generated.id
    matches = [r for r in resources if r.known_as(new_id)]
    if not matches:
        if generated.behavior in ("merge", "replace"):
            raise RenderError(
                generated.source,
                f"{new_id} does not exist; cannot {generated.behavior} it "
                "(behavior merge and replace change an object from a base)",
            )
        resources.append(generated)
        return
    if len(matches) > 1:
        raise RenderError(generated.source, f"several objects could accept {new_id}")
    old = matches[0]
    if generated.behavior == "create":
        raise RenderError(
            generated.source,
            f"{new_id} already exists; set behavior: merge or replace to change it",
        )
    meta = generated.metadata
    old_meta = old.metadata
    for key in ("labels", "annotations"):
        merged = {**(old_meta.get(key) or {}), **(meta.get(key) or {})}
        if merged:
            meta[key] = merged
    meta["name"] = old.name
    if old.namespace:
        meta["namespace"] = old.namespace
    else:
        meta.pop("namespace", None)
    if generated.behavior == "merge":
        for key in ("data", "binaryData"):
            merged = {**(old.data.get(key) or {}), **(generated.data.get(key) or {})}
            if merged:
                generated.data[key] = merged
    # the name hash stays only when both the old and the new object asked for it
    generated.needs_hash = generated.needs_hash and old.needs_hash
    if old.origin is not None:
        generated.origin = old.origin
    generated.previous = list(old.previous)
    generated.prefixes = list(old.prefixes)
    generated.suffixes = list(old.suffixes)
    resources[resources.index(old)] = generated


def _go_json(value: Any) -> str:
    """Go's encoding/json text: sorted keys, no spaces, and <, >, & escaped as it does."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def name_hash(resource: Resource) -> str:
    """The suffix kustomize appends to a generated object's name."""
    data = resource.data
    kind = resource.kind
    # kustomize hashes a generated object before it has its final name: name is empty
    encoded: dict[str, Any] = {"kind": kind, "name": ""}
    if kind == "ConfigMap":
        encoded["data"] = data.get("data") or ""
        if isinstance(data.get("binaryData"), dict):
            encoded["binaryData"] = data["binaryData"]
    elif kind == "Secret":
        encoded["type"] = data.get("type") or ""
        encoded["data"] = data.get("data") or ""
        if isinstance(data.get("stringData"), dict):
            encoded["stringData"] = data["stringData"]
    else:
        encoded = data
    digest = hashlib.sha256(_go_json(encoded).encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))
