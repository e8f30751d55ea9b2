"""``rciots``: the controller-side command line.

Each command lives in its own module (``cmd_*``) that registers a subparser and sets
``func(args) -> int`` on it. Exit codes: 0 success, 1 the input is invalid or the action
failed, 2 usage errors (argparse's own convention).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rciots.controller import cmd_device, cmd_kustomize, cmd_token, cmd_validate

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rciots",
        description=(
            "RCIoTs controller tools. A fleet repo holds tenants, provisioning tokens, devices, "
            "fleets and Kustomize templates; these commands check and edit it. They change the "
            "working tree only: you commit and open the pull request."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (cmd_validate, cmd_token, cmd_device, cmd_kustomize):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
