"""JSON Schema checks of fleet repo objects (format v1) and of the controller's configuration
files (the policy file), with messages that say what to do.

The schemas in ``schemas/`` (Draft 2020-12, one per kind plus shared definitions) are the
contract of the format. This module loads them once, validates a parsed object against the one
for its kind, and turns each jsonschema error into a message with the field's dotted path and a
hint. Hints come from the schemas themselves (an ``x-hint`` next to the rule), so the rule and
its explanation are written down together. Positions are attached by the caller, which knows
where each field came from.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, cast

import jsonschema
import referencing
from referencing.jsonschema import DRAFT202012

from rciots.controller import timestamps

__all__ = ["CONFIG_KINDS", "KINDS", "SchemaProblem", "dotted", "validate"]

# kind -> schema file, for every kind a fleet repo file can declare
KINDS = {
    "Tenant": "tenant.schema.json",
    "ProvisioningToken": "provisioningtoken.schema.json",
    "Device": "device.schema.json",
    "Fleet": "fleet.schema.json",
}
# kind -> schema file, for the controller's own configuration files (never in the fleet repo)
CONFIG_KINDS = {"Policy": "policy.schema.json"}

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class SchemaProblem:
    """One violation: ``path`` leads to the offending value; ``at_key`` says to point at the
    key that leads there (for unknown fields) rather than at the value."""

    path: PathKey
    message: str
    at_key: bool = False


def _is_timestamp(instance: object) -> bool:
    if not isinstance(instance, str):
        return True  # the type keyword reports non-strings
    try:
        timestamps.parse_timestamp(instance)
    except ValueError:
        return False
    return True


@cache
def _validators() -> dict[str, jsonschema.protocols.Validator]:
    folder = resources.files("rciots.controller.schemafiles")
    kinds = {**KINDS, **CONFIG_KINDS}
    loaded = {
        name: json.loads((folder / name).read_text(encoding="utf-8"))
        for name in ["common.schema.json", *kinds.values()]
    }
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        (schema["$id"], DRAFT202012.create_resource(schema)) for schema in loaded.values()
    )
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("rciots-timestamp")(_is_timestamp)
    validators: dict[str, jsonschema.protocols.Validator] = {}
    for kind, name in kinds.items():
        cls = jsonschema.validators.validator_for(loaded[name])
        cls.check_schema(loaded[name])
        validators[kind] = cls(loaded[name], registry=registry, format_checker=checker)
    return validators


def validate(kind: str, instance: Any) -> list[SchemaProblem]:
    """Every schema violation of ``instance`` as a ``kind`` object, in document order."""
    validator = _validators()[kind]
    problems: list[SchemaProblem] = []
    for error in validator.iter_errors(instance):
        problems.extend(_explain(error))
    return sorted(problems, key=lambda p: [str(part) for part in p.path])


def dotted(path: PathKey) -> str:
    """``spec.rules[2].id``: a field's path as messages show it."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the document"


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if value is None:
        return "null (an empty value)"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, int | float):
        return f"the number {value}"
    return "a list" if isinstance(value, list) else "a mapping"


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "a whole number",
    "boolean": "a boolean (true or false)",
    "number": "a number",
}


def _explain(error: jsonschema.ValidationError) -> Iterator[SchemaProblem]:
    path: PathKey = tuple(error.absolute_path)
    where = dotted(path)
    schema: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    hint = schema.get("x-hint")
    suffix = f"; {hint}" if hint else ""
    keyword = error.validator
    if keyword == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        assert isinstance(error.instance, dict)
        for key in error.instance:
            if key not in allowed:
                yield SchemaProblem(
                    (*path, key),
                    f"unknown field '{key}' in {where}; allowed fields: {', '.join(allowed)}",
                    at_key=True,
                )
        return
    if keyword == "required":
        assert isinstance(error.instance, dict)
        for missing in cast(list[str], error.validator_value):
            if missing not in error.instance:
                yield SchemaProblem(
                    path, f"{where} is missing the required field '{missing}'{suffix}"
                )
        return
    if "propertyNames" in error.relative_schema_path:
        key = str(error.instance)  # the key itself is the instance here
        yield SchemaProblem((*path, key), f"key {key!r} in {where} is not valid{suffix}", True)
        return
    if keyword in ("if", "then", "else"):
        return  # the failing branch's own keywords report the problem
    described = _describe(error.instance)
    if keyword == "type":
        wanted = _TYPE_NAMES.get(str(error.validator_value), str(error.validator_value))
        message = f"{where} must be {wanted}, not {described}"
    elif keyword == "const":
        message = f"{where} must be {error.validator_value!r}, not {described}"
    elif keyword == "enum":
        choices = ", ".join(repr(v) for v in cast(list[object], error.validator_value))
        message = f"{where} must be one of {choices}, not {described}"
    elif keyword in ("pattern", "maxLength", "format"):
        message = f"{where} is not valid: {described}"
    elif keyword in ("minimum", "maximum"):
        message = f"{where} must be at least {error.validator_value}, not {described}"
    elif keyword in ("minItems", "maxItems", "minProperties"):
        message = f"{where} is not valid"
    else:
        message = f"{where}: {error.message}"
    yield SchemaProblem(path, message + suffix)
