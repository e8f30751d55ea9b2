"""Printing diagnostics for people and for CI systems.

``text``: one line per problem, ``path:line:col: message`` (editors and terminals jump to it);
``github``: GitHub Actions workflow commands, which annotate the pull request's files;
``json``: a list of objects for other tools.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from rciots.controller.diagnostics import Diagnostic

__all__ = ["FORMATS", "format_diagnostics"]

FORMATS = ("text", "github", "json")


def _github_escape(text: str, *, property_value: bool = False) -> str:
    # the escaping GitHub's workflow command parser undoes
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if property_value:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def format_diagnostics(diagnostics: Iterable[Diagnostic], style: str) -> str:
    """All diagnostics in one of FORMATS; text and github end with a newline when non-empty."""
    items = list(diagnostics)
    if style == "json":
        return (
            json.dumps(
                [
                    {
                        "path": d.path,
                        "line": d.line,
                        "column": d.column,
                        "severity": d.severity,
                        "message": d.message,
                    }
                    for d in items
                ],
                indent=2,
            )
            + "\n"
        )
    if style == "github":
        lines = [
            f"::{d.severity} file={_github_escape(d.path, property_value=True)},"
            f"line={d.line},col={d.column}::{_github_escape(d.message)}"
            for d in items
        ]
    else:
        lines = [str(d) for d in items]
    return "".join(line + "\n" for line in lines)
