"""Kubernetes label selectors as patch and replacement targets write them
(``app=web,tier!=db,env in (prod,stage),!legacy``), parsed with the Kubernetes grammar so a
malformed one is an error, as in kustomize, rather than a selector that matches nothing."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Requirement", "matches", "object_matches", "parse"]

_TOKEN = re.compile(r"\s*(==|!=|=|!|\(|\)|,|[A-Za-z0-9][-A-Za-z0-9_./]*|\S)")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def holds(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values


def _tokens(text: str) -> list[str]:
    return [match.group(1) for match in _TOKEN.finditer(text) if match.group(1)]


def parse(text: str) -> list[Requirement]:
    """The requirements of ``text``; ValueError with kustomize's wording when malformed."""
    tokens = _tokens(text)
    requirements: list[Requirement] = []
    position = 0

    def take() -> str:
        nonlocal position
        token = tokens[position] if position < len(tokens) else ""
        position += 1
        return token

    def expect_word(found: str, context: str) -> str:
        if not found or found in ("==", "!=", "=", "!", "(", ")", ","):
            raise ValueError(f"unable to parse requirement: found '{found}', expected: {context}")
        return found

    while position < len(tokens):
        word = take()
        if word == "!":
            requirements.append(Requirement(expect_word(take(), "identifier"), "!"))
        else:
            key = expect_word(word, "identifier")
            operator = tokens[position] if position < len(tokens) else ","
            if operator == ",":
                requirements.append(Requirement(key, "exists"))
            elif operator in ("=", "==", "!="):
                take()
                following = tokens[position] if position < len(tokens) else ""
                value = "" if following in ("", ",") else expect_word(take(), "identifier")
                requirements.append(
                    Requirement(key, "!=" if operator == "!=" else "=", frozenset({value}))
                )
            elif operator in ("in", "notin"):
                take()
                if take() != "(":
                    found = tokens[position - 1] if position <= len(tokens) else ""
                    raise ValueError(f"unable to parse requirement: found '{found}' expected: '('")
                values: set[str] = set()
                while True:
                    item = take()
                    if item == ")":
                        break
                    if item == ",":
                        continue
                    values.add(expect_word(item, "',', ')' or identifier"))
                requirements.append(Requirement(key, operator, frozenset(values)))
            else:
                raise ValueError(
                    f"unable to parse requirement: found '{operator}', expected: "
                    "'=', '!=', '==', 'in', notin'"
                )
        if position < len(tokens):
            separator = take()
            if separator != ",":
                raise ValueError(f"found '{separator}', expected: ',' or 'end of string'")
    return requirements


def matches(text: str, labels: Mapping[str, str]) -> bool:
    return all(requirement.holds(labels) for requirement in parse(text))


def object_matches(metadata: Mapping[str, object], target: Mapping[str, object]) -> bool:
    """Whether an object's labels and annotations satisfy a target's ``labelSelector`` and
    ``annotationSelector`` (absent ones match everything); ValueError for a malformed one."""
    for key, field in (("labelSelector", "labels"), ("annotationSelector", "annotations")):
        text = target.get(key)
        values = metadata.get(field)
        if not text:
            continue
        try:
            if not matches(str(text), values if isinstance(values, dict) else {}):
                return False
        except ValueError as exc:
            raise ValueError(f"{key} {text!r}: {exc}") from None
    return True
