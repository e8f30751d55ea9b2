"""Shared test fixtures."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# Test modules share helpers as ``from tests import fleetfiles`` (what mypy sees too), so the
# repo root must be importable; pytest itself only puts tests/ on the path.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# loopback Git servers (git daemon, smart HTTP/HTTPS) as fixtures for every module
pytest_plugins = ["tests.gitserver"]

GitRunner = Callable[..., str]  # the type of the git fixture


@pytest.fixture
def git() -> GitRunner:
    """Run the git command line in a repository with a fixed identity; return its stdout
    (``gitserver.run_git``: CalledProcessError when git fails)."""
    # imported here: pytest_plugins above must load it first, to rewrite its assertions
    from tests import gitserver

    return gitserver.run_git
