"""The policy file: the controller operator's ``--policy FILE``, read into a ``policy.Policy``.

Position in the flow: configuration, read once at start-up (and by ``rciots validate`` and
``rciots diff`` when given ``--policy``); the policy it yields runs after every device's
render. The file belongs to the operator, never to the fleet repo, so that a tenant cannot
lift its own restrictions by pull request.

``parse_policy`` is pure (bytes in); ``read_policy`` reads the file. The file is read with the
bounded YAML reader and checked against ``schemas/policy.schema.json``, then rule ids are
checked against the rules the policy knows. Every problem is reported with the file's path,
line and column, all at once, in a ``PolicyFileError``. The format is documented in
docs/policy.md.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rciots.controller import policy, schemas, yamlsafe
from rciots.controller.diagnostics import Diagnostic

__all__ = ["PolicyFileError", "parse_policy", "read_policy"]

log = logging.getLogger(__name__)

_KIND = "Policy"
# a policy file is a few dozen lines; this is far beyond any real one
_LIMITS = yamlsafe.Limits(max_bytes=256 * 1024, max_depth=16, max_nodes=20_000, max_documents=2)


class PolicyFileError(ValueError):
    """A policy file that cannot be used: ``diagnostics`` say where and why, one per problem;
    the text is one ``path:line:col: message`` line per problem."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__("\n".join(str(d) for d in diagnostics))
        self.diagnostics = diagnostics


def _ids(data: Mapping[str, Any], *path: str) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(path, id) of each rule id listed at ``path`` in a schema-valid document."""
    value: Any = data
    for key in path:
        value = value.get(key, {}) if isinstance(value, Mapping) else {}
    for index, rule_id in enumerate(value if isinstance(value, list) else []):
        yield (*path, index), rule_id


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.diagnostics: list[Diagnostic] = []

    def report(self, position: tuple[int, int], message: str) -> None:
        self.diagnostics.append(Diagnostic(self.path, position[0], position[1], message))

    def fail(self) -> PolicyFileError:
        return PolicyFileError(sorted(self.diagnostics))

    def document(self, data: bytes) -> tuple[dict[str, Any], yamlsafe.Positions]:
        try:
            documents = yamlsafe.parse(data, _LIMITS)
            if len(documents) != 1:
                where = (documents[1].line, 1) if documents else (1, 1)
                found = f"{len(documents)} documents" if documents else "nothing"
                self.report(where, f"found {found}: a policy file declares one kind: {_KIND}")
                raise self.fail()
            loaded, positions = yamlsafe.to_python(documents[0])
        except yamlsafe.YamlError as exc:
            self.report((exc.line, exc.column), exc.message)
            raise self.fail() from None
        if not isinstance(loaded, dict) or loaded.get("kind") != _KIND:
            declared = loaded.get("kind") if isinstance(loaded, dict) else None
            shown = f"kind {declared!r}" if declared is not None else "no kind"
            self.report(
                positions.of_value(("kind",)),
                f"this file declares {shown}; a policy file declares apiVersion: rciots.io/v1 "
                f"and kind: {_KIND} (see {policy.DOCS})",
            )
            raise self.fail()
        return loaded, positions

    def build(self, data: dict[str, Any], positions: yamlsafe.Positions) -> policy.Policy:
        problems = schemas.validate(_KIND, data)
        for problem in problems:
            locate = positions.of_key if problem.at_key else positions.of_value
            self.report(locate(problem.path), problem.message)
        if problems:
            raise self.fail()
        spec: dict[str, Any] = data.get("spec") or {}
        custom = [
            policy.kind_rule(
                item["id"],
                item["reason"],
                [(kind["group"], kind.get("kind")) for kind in item["kinds"]],
            )
            for item in spec.get("rules", [])
        ]
        known = [rule.id for rule in policy.BUILTIN_RULES]
        for index, rule in enumerate(custom):
            if rule.id in known:
                at = ("spec", "rules", index, "id")
                builtin = rule.id in policy.DEFAULT_POLICY.catalogue
                taken = "a built-in rule" if builtin else "an earlier rule in spec.rules"
                self.report(
                    positions.of_value(at),
                    f"rule id {rule.id!r} is taken by {taken}: choose another",
                )
            known.append(rule.id)
        levels = [("spec",)] + [("spec", "tenants", name) for name in spec.get("tenants", {})]
        for level in levels:
            self.check_level(data, positions, level, known)
        if self.diagnostics:
            raise self.fail()
        everyone = _override(spec)
        return policy.Policy(
            allow=everyone.allow,
            deny=everyone.deny,
            tenants={name: _override(entry) for name, entry in spec.get("tenants", {}).items()},
            rules=tuple(custom),
        )

    def check_level(
        self,
        data: dict[str, Any],
        positions: yamlsafe.Positions,
        level: tuple[str, ...],
        known: list[str],
    ) -> None:
        """Every id in ``level``'s allow and deny lists is known, and none is in both."""
        allowed = {rule_id for _, rule_id in _ids(data, *level, "allow")}
        for field in ("allow", "deny"):
            for at, rule_id in _ids(data, *level, field):
                if rule_id not in known:
                    close = difflib.get_close_matches(rule_id, known, n=1)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    self.report(
                        positions.of_value(at),
                        f"unknown rule {rule_id!r} in {schemas.dotted(at[:-1])}; {hint}the rules "
                        f"are listed in {policy.DOCS}#rules, or define it in spec.rules",
                    )
                elif field == "deny" and rule_id in allowed:
                    self.report(
                        positions.of_value(at),
                        f"rule {rule_id!r} is both allowed and denied in {schemas.dotted(level)}: "
                        "keep it in one of the two lists",
                    )


def _override(entry: Mapping[str, Any]) -> policy.Override:
    return policy.Override(frozenset(entry.get("allow", [])), frozenset(entry.get("deny", [])))


def parse_policy(data: bytes, path: str = "policy.yaml") -> policy.Policy:
    """The policy in ``data``, the content of the file at ``path`` (used in messages only).
    PolicyFileError with every problem for a file that is not a valid policy."""
    reader = _Reader(path)
    document, positions = reader.document(data)
    return reader.build(document, positions)


def read_policy(path: Path | str) -> policy.Policy:
    """Read the policy file at ``path``. PolicyFileError for a file that cannot be read or is
    not a valid policy; its message says where (path:line:col) and what to do."""
    shown = str(path)
    try:
        with open(path, "rb") as stream:
            data = stream.read(_LIMITS.max_bytes + 1)  # the YAML reader refuses more
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        message = f"cannot read the policy file: {reason}; check the path given to --policy"
        raise PolicyFileError([Diagnostic(shown, 1, 1, message)]) from None
    result = parse_policy(data, shown)
    log.debug("policy %s: %d tenants with their own rules", shown, len(result.tenants))
    return result
