"""Shared test fixtures."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
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


@pytest.fixture(autouse=True)
def _libgit2_socket_timeouts() -> Iterator[None]:
    """libgit2's defaults (no socket timeouts) again after each test: a GitMirror sets them for
    the whole process (see gitsource), and one test's short fetch_timeout must not reach the
    next test's connections."""
    yield
    pygit2 = sys.modules.get("pygit2")  # nothing to undo in a test that never loaded it
    if pygit2 is not None:
        pygit2.settings.server_connect_timeout = 0
        pygit2.settings.server_timeout = 0


@pytest.fixture
def git() -> GitRunner:
    """Run the git command line in a repository with a fixed identity; return its stdout
    (``gitserver.run_git``: CalledProcessError when git fails)."""
    # imported here: pytest_plugins above must load it first, to rewrite its assertions
    from tests import gitserver

    return gitserver.run_git
