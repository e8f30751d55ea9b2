"""The command lines of ``rciots controller`` and ``rciots-agent`` as the end-to-end tests run
them (with ``tests.processes.Process``): this installation's scripts, loopback addresses and
short intervals, so that a device is enrolled, connected and in sync within seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["BIN", "agent_argv", "controller_argv"]

BIN = Path(sys.executable).parent  # where this installation's scripts are


def controller_argv(repo: Path, state: Path, enroll_port: int, *options: str) -> list[str]:
    """``rciots controller`` on ``repo`` with its files in ``state`` and enrollment at
    ``enroll_port``; ``options`` add the rest (where the connector and the status page
    listen, the poll interval)."""
    return [
        str(BIN / "rciots"),
        "controller",
        str(repo),
        "--state-dir",
        str(state),
        "--status-window",
        "0.2",
        "--enroll-listen",
        f"127.0.0.1:{enroll_port}",
        "--server-name",
        "127.0.0.1",
        "--agent-status-interval",
        "1",
        *options,
    ]


def agent_argv(
    name: str, home: Path, controller_state: Path, enroll_port: int, applier: str, *options: str
) -> list[str]:
    """``rciots-agent`` named ``name`` with its files in ``home``, enrolling at
    ``enroll_port`` and trusting the CA in ``controller_state``; its token comes from the
    environment (RCIOTS_TOKEN)."""
    return [
        str(BIN / "rciots-agent"),
        "--enroll-url",
        f"https://127.0.0.1:{enroll_port}",
        "--ca-file",
        str(controller_state / "ca" / "root.pem"),
        "--state-dir",
        str(home),
        "--device-name",
        name,
        "--applier",
        applier,
        "--max-reconnect-delay",
        "1",
        *options,
    ]
