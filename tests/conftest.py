"""Shared test fixtures."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Test modules share helpers as ``from tests import fleetfiles`` (what mypy sees too), so the
# repo root must be importable; pytest itself only puts tests/ on the path.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# Variables that point git at a repository (what `git rev-parse --local-env-vars` lists). Run
# from inside a git command (a hook, `git rebase --exec`), the suite inherits GIT_DIR: every
# git process of a test would then work on this checkout instead of the test's own repository.
_GIT_REPOSITORY_VARIABLES = [
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_OBJECT_DIRECTORY",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
    "GIT_PREFIX",
    "GIT_INTERNAL_SUPER_PREFIX",
    "GIT_SHALLOW_FILE",
    "GIT_COMMON_DIR",
]
for _name in _GIT_REPOSITORY_VARIABLES:
    os.environ.pop(_name, None)

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
