"""``rciots-agent``: the device-side command line.

Position in the flow: the entry point of the device's process. Reads the configuration
(``config``: file, environment, options), sets up logging, and runs ``run.Agent`` until SIGINT
or SIGTERM. ``rciots-agent show`` prints what the agent knows of itself (never a secret).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rciots.agent import __version__, config, enroll, state

if TYPE_CHECKING:  # the command line stays quick: websockets loads only to run
    from rciots.agent import run

__all__ = ["main"]

log = logging.getLogger("rciots.agent")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rciots-agent",
        description=(
            "RCIoTs device agent. It needs only outbound HTTPS to the controller: it enrolls "
            "once with a provisioning token, then receives its desired state over a mutual-TLS "
            "WebSocket, applies it (a folder, podman, or kubectl/oc) and reports back. "
            "Options also come from a TOML file (--config) and RCIOTS_* environment variables; "
            "see docs/agent.md."
        ),
        epilog="The provisioning token comes from --token-file or $RCIOTS_TOKEN, never from "
        "the command line.",
    )
    parser.add_argument("--version", action="version", version=f"rciots-agent {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"TOML configuration file (default {config.DEFAULT_CONFIG_FILE}, if it exists)",
    )
    for option in config.OPTIONS:
        if option.secret or option.name == "labels":
            continue
        default = f" (default {option.default})" if option.default not in (None, "") else ""
        parser.add_argument(
            f"--{option.name.replace('_', '-')}",
            dest=option.name,
            metavar=option.metavar or option.name.split("_")[-1].upper(),
            help=f"{option.help}{default}; ${option.env}",
        )
    # not an option: caught so that argparse cannot take it for an abbreviation of
    # --token-file, and so that the refusal does not repeat the token
    parser.add_argument("--token", dest="token_given", help=argparse.SUPPRESS)
    parser.add_argument(
        "--label",
        action="append",
        metavar="KEY=VALUE",
        help="a label to ask for at enrollment (repeat); $RCIOTS_LABELS",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=["run", "show"],
        default="run",
        help="run (default): enroll if needed, then connect and apply; show: print the "
        "identity and the last applied state",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.token_given is not None:
        print(
            "rciots-agent: error: the token is never taken from the command line, where other "
            "users can read it: name a file holding it with --token-file, or set $RCIOTS_TOKEN",
            file=sys.stderr,
        )
        return 2
    options = {o.name: getattr(args, o.name, None) for o in config.OPTIONS if not o.secret}
    if args.label:
        options["labels"] = ",".join(args.label)
    try:
        settings = config.load(args.config, os.environ, options)
    except config.ConfigError as exc:
        print(f"rciots-agent: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "show":
        try:
            return _show(settings)
        except (state.StateError, ValueError) as exc:
            print(f"rciots-agent: error: {exc}", file=sys.stderr)
            return 1
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from rciots.agent import run

    try:
        agent = run.Agent(settings)
        asyncio.run(_run(agent))
    except (enroll.EnrollError, state.StateError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    return 0


async def _run(agent: run.Agent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await agent.run(stop)
    log.info("stopped")


def _show(settings: config.AgentConfig) -> int:
    from rciots.agent import run

    store = run.identity_store(settings)
    identity = store.load()
    applied = state.StateDir(settings.state_dir).load_applied()
    shown = {
        "enrolled": identity is not None,
        "deviceId": identity.device_id if identity else None,
        "tenant": identity.tenant if identity else None,
        "name": identity.name if identity else settings.device_name,
        "connectorUrl": identity.connector_url if identity else None,
        "appliedRevision": applied[0].revision if applied else None,
        "appliedDigest": applied[0].digest if applied else None,
        "appliedOk": applied[1].ok if applied else None,
        "applier": settings.applier,
    }
    print(json.dumps(shown, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
