"""Command-line pieces shared by the commands that edit a fleet repo working tree.

``cmd_token`` and ``cmd_device`` declare ``--repo`` and check names and labels the same way,
and report errors in one format, so that users see one set of messages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rciots.controller import names

__all__ = ["add_repo_argument", "fail", "parse_labels", "require_dns_label"]


def add_repo_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo",
        type=Path,
        default=Path(),
        metavar="PATH",
        help="the fleet repo working tree (holding tenants/); default: current directory",
    )


def require_dns_label(what: str, value: str) -> None:
    """Raise ValueError "bad WHAT 'value': <hint>" unless ``value`` is a DNS-1123 label."""
    if not names.is_dns_label(value):
        raise ValueError(f"bad {what} {value!r}: {names.DNS_LABEL_HINT}")


def parse_labels(texts: Sequence[str]) -> dict[str, str]:
    """``--label key=value`` options as a mapping; a later key wins."""
    labels = {}
    for text in texts:
        try:
            key, value = names.parse_label(text)
        except ValueError as error:
            raise ValueError(f"bad --label {text!r}: {error}") from None
        labels[key] = value
    return labels


def fail(error: Exception) -> int:
    """Report an error the way every rciots command does; the exit status for invalid input."""
    print(f"rciots: error: {error}", file=sys.stderr)
    return 1
