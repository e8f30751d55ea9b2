"""``rciots``: the controller-side command line.

Each command lives in its own module (``cmd_*``) that registers a subparser and sets
``func(args) -> int`` on it. Exit codes: 0 success, 1 the input is invalid or the action
failed, 2 usage errors (argparse's own convention).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

_SIGPIPE_STATUS = 128 + 13  # what a shell reports for a process ended by SIGPIPE

# command -> its module; only the module of the command being run is imported, so that
# `rciots kustomize build` does not pay for the schemas or the round-trip YAML editor
COMMANDS = {
    "validate": "cmd_validate",
    "token": "cmd_token",
    "device": "cmd_device",
    "kustomize": "cmd_kustomize",
    "render": "cmd_render",
    "diff": "cmd_render",
    "controller": "cmd_controller",
    "demo": "cmd_demo",
}


def build_parser(only: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rciots",
        description=(
            "RCIoTs controller tools. A fleet repo holds tenants, provisioning tokens, devices, "
            "fleets and Kustomize templates; these commands check it, edit it, render it and run "
            "the controller on it. Those that edit it change the working tree only: you commit "
            "and open the pull request."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in dict.fromkeys(COMMANDS[name] for name in only or COMMANDS):
        importlib.import_module(f"rciots.controller.{module}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    chosen = arguments[:1] if arguments and arguments[0] in COMMANDS else None
    parser = build_parser(chosen)
    args = parser.parse_args(arguments)
    try:
        result: int = args.func(args)
    except BrokenPipeError:
        # the reader went away (`rciots diff ... | head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return _SIGPIPE_STATUS
    return result


if __name__ == "__main__":
    sys.exit(main())
