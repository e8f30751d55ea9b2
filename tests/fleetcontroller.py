"""A controller on a fleet repo made from fleet-repo-example, and agents of the test's own
process connected to it: what the connector, enrollment, status page and agent tests share.

``settings(remote, state)`` serves enrollment and the connector on loopback ports, with rate
limits out of the way and short intervals; ``controller(settings)`` runs a ``service.Controller``
in the test's event loop and stops it on the way out; ``agent_config`` and ``RunningAgent`` run
an ``rciots.agent`` Agent (directory applier) in a task of that loop; ``in_sync`` waits until
the controller heard a device applied its desired state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from rciots.agent import config, run
from rciots.controller import connector, ratelimit, service
from tests import aio, gitserver

__all__ = [
    "EXAMPLE",
    "OPEN",
    "PLANT",
    "WAREHOUSE",
    "RunningAgent",
    "agent_config",
    "controller",
    "desired",
    "in_sync",
    "reported",
    "settings",
]

EXAMPLE = Path(__file__).resolve().parent.parent / "fleet-repo-example"
# the example's provisioning tokens (fleet-repo-example/README.md), both of acme-sensors
WAREHOUSE = "rciots-pt-OaGmPNNo7h0cVwjIvurOdVdIHBCZRVnJKMlguG3KB3U"  # automatic approval
PLANT = "rciots-pt-3dzFbyrIHcOEA9kNYdNbW047Cv6LcrudEarkV1iTZlc"  # manual approval
OPEN = ratelimit.ClientLimits(rate=1000, burst=1000, failure_rate=1000, failure_burst=1000)


def settings(
    remote: gitserver.Remote, state: Path, *, connector_on: bool = True, **agents: Any
) -> service.Settings:
    """The controller of ``remote`` with its files in ``state``: enrollment on a loopback
    port, and (``connector_on``) the connector too, with ``agents`` changing its settings."""
    return service.Settings(
        source=remote.bare.as_uri(),
        state_dir=state,
        poll_interval=0.2,
        status_window=0.1,
        enrollment=service.EnrollmentSettings(listen=("127.0.0.1", 0), limits=OPEN),
        agents=dataclasses.replace(
            connector.ConnectorSettings(
                listen=("127.0.0.1", 0) if connector_on else None, status_interval=1
            ),
            **agents,
        ),
    )


@contextlib.asynccontextmanager
async def controller(wanted: service.Settings) -> AsyncIterator[service.Controller]:
    running = service.Controller(wanted)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def agent_config(
    home: Path, running: service.Controller, name: str, **changes: Any
) -> config.AgentConfig:
    """An agent named ``name`` with its files in ``home``, enrolling at ``running`` with
    the example's automatic token; ``changes`` to any of its settings."""
    made = config.AgentConfig(
        enroll_url=f"https://127.0.0.1:{running.enrollment_port}",
        token=WAREHOUSE,
        device_name=name,
        ca_file=running.ca_dir / "root.pem",
        state_dir=home,
        applier="directory",
        max_reconnect_delay=0.3,
    )
    return dataclasses.replace(made, **changes)


class RunningAgent:
    """An Agent in a task of the test's loop: ``start()`` (again after ``halt()``: a restart
    of the agent process, with the files it left)."""

    def __init__(self, made: config.AgentConfig) -> None:
        self.config = made
        self.agent = run.Agent(made)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.config.device_name

    @property
    def manifests(self) -> Path:
        return self.config.manifests_dir

    def start(self) -> None:
        """Run it; its ``agent`` is new, and may be changed until the caller next waits."""
        self.stop = asyncio.Event()
        self.agent = run.Agent(self.config)
        self.task = asyncio.create_task(self.agent.run(self.stop))

    @property
    def running(self) -> bool:
        """Started, and neither halted nor ended by an error."""
        return self.task is not None and not self.task.done()

    async def halt(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)

    def applied_digest(self) -> str | None:
        """The digest of the bundle in the directory applier's ``current`` folder."""
        try:
            index = json.loads((self.manifests / "current" / "index.json").read_text())
        except FileNotFoundError:
            return None
        digest: str = index["digest"]
        return digest


def reported(running: service.Controller, key: tuple[str, str]) -> str | None:
    """The digest the controller last heard the device applied."""
    seen = running.observed.get(key)
    return seen.applied_digest if seen else None


def desired(running: service.Controller, key: tuple[str, str]) -> str:
    """The device's desired digest ("" while it has none, or runs nothing)."""
    state = running.reconciler.table.get(key)
    return state.digest if state else ""


async def in_sync(running: service.Controller, key: tuple[str, str], within: float = 10.0) -> None:
    def check() -> bool:
        """the controller heard the device applied its desired digest"""
        wanted = desired(running, key)
        return wanted != "" and reported(running, key) == wanted

    await aio.eventually(check, within=within)
