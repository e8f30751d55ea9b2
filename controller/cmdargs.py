"""Command-line pieces shared by the commands.

``cmd_token`` and ``cmd_device`` declare ``--repo`` and check names and labels the same way,
and report errors in one format, so that users see one set of messages; ``validate``,
``render`` and ``diff`` take the controller's ``--policy`` the same way.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rciots.controller import names

__all__ = [
    "ENV_PREFIX",
    "add_policy_argument",
    "add_repo_argument",
    "environment_name",
    "fail",
    "options_from_environment",
    "parse_labels",
    "policy_check",
    "reference_markdown",
    "require_dns_label",
]


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


def add_policy_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="the tenant policy file the controller runs with (see docs/policy.md); "
        "default: the built-in policy",
    )


def policy_check(path: Path | None) -> Callable[[str, Sequence[Mapping[str, Any]]], list[Any]]:
    """The post-render check for ``--policy``: the file's policy, or the built-in one.
    Raises policyfile.PolicyFileError (a ValueError) for a bad file."""
    from rciots.controller import policy, policyfile

    chosen = policyfile.read_policy(path) if path is not None else policy.DEFAULT_POLICY
    return functools.partial(policy.check, chosen)


ENV_PREFIX = "RCIOTS_"


def environment_name(action: argparse.Action) -> str:
    return ENV_PREFIX + action.dest.upper()


def options_from_environment(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Every option of ``parser`` may also come from ``RCIOTS_<OPTION>`` (``--poll-interval``:
    ``RCIOTS_POLL_INTERVAL``), which a container's environment sets more easily than its
    arguments; the command line wins. Flags take 1/true/yes/on; repeatable options take a
    comma-separated list. Each option's help names its variable."""
    for action in _options(parser):
        variable = environment_name(action)
        action.help = f"{action.help or ''} [${variable}]".strip()
        value = environ.get(variable)
        if value is None or value == "":
            continue
        if isinstance(action, argparse._StoreTrueAction):
            action.default = value.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(action, argparse._AppendAction):
            action.default = [item.strip() for item in value.split(",") if item.strip()]
        else:
            action.default = value  # a string default goes through the option's type


def reference_markdown(parser: argparse.ArgumentParser) -> str:
    """The options of ``parser`` as a Markdown table: option, variable, default, meaning."""
    rows = ["| option | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for action in _options(parser):
        option = ", ".join(f"`{o}`" for o in action.option_strings)
        if action.metavar:
            option += f" {action.metavar}"
        default = action.default
        shown = "" if default in (None, False, [], "") else f"`{default}`"
        meaning = (action.help or "").replace("%%", "%").replace("|", "\\|").replace("\n", " ")
        meaning = meaning.split(" [$")[0]  # the variable has a column of its own
        rows.append(f"| {option} | `{environment_name(action)}` | {shown} | {meaning} |")
    return "\n".join(rows) + "\n"


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        action
        for action in parser._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction)
    ]
