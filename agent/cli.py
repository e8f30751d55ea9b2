"""``rciots-agent``: the device-side command line.

At this stage of the project it reports its version; enrollment and the connection to the
controller are added by the agent work (see README, roadmap).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rciots.agent import __version__

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rciots-agent",
        description=(
            "RCIoTs device agent. It needs only outbound HTTPS to the controller: it enrolls "
            "with a provisioning token, then receives its desired state over a mutual-TLS "
            "WebSocket and applies it."
        ),
    )
    parser.add_argument("--version", action="version", version=f"rciots-agent {__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
