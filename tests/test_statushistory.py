"""A device's history from the status branch's log of its status file, on a real repository."""

from __future__ import annotations

from pathlib import Path

from rciots.controller import statusbranch, statusdocs, statushistory
from tests import gitserver

PATH = "status/acme/gw-01.yaml"


def document(result: str, connected: bool, applied: str | None) -> bytes:
    return statusdocs.render_status(
        statusdocs.DeviceStatus(
            tenant="acme",
            device="gw-01",
            result=result,
            desired_revision="a" * 40,
            desired_digest="sha256:" + "1" * 64,
            attempted_revision="a" * 40,
            applied_revision=applied,
            connected=connected,
        )
    )


def branch_with_history(tmp_path: Path) -> statusbranch.StatusBranch:
    repo = tmp_path / "fleet"
    gitserver.run_git(None, "init", "-q", "-b", "main", str(repo))
    branch = statusbranch.StatusBranch(repo)
    branch.commit({PATH: document("Pending", True, None)}, "first")
    branch.commit({"status/acme/other.yaml": b"x: 1\n"}, "another device")
    branch.commit({PATH: document("Applied", True, "a" * 40)}, "applied")
    branch.commit({PATH: document("Applied", False, "a" * 40)}, "went away")
    branch.commit({PATH: None}, "removed")
    return branch


def test_the_newest_changes_of_one_file_first(tmp_path: Path) -> None:
    branch = branch_with_history(tmp_path)
    history = statushistory.read_history(branch.repository_path, branch.branch, PATH)
    assert [(h.subject, h.result, h.connected, h.applied_revision, h.deleted) for h in history] == [
        ("removed", None, None, None, True),
        ("went away", "Applied", False, "a" * 40, False),
        ("applied", "Applied", True, "a" * 40, False),
        ("first", "Pending", True, None, False),
    ]
    assert all(len(h.commit) == 40 for h in history)
    assert history[0].at >= history[-1].at


def test_bounded_by_entries_and_by_commits_scanned(tmp_path: Path) -> None:
    branch = branch_with_history(tmp_path)
    repository = branch.repository_path
    limited = statushistory.read_history(repository, branch.branch, PATH, limit=2)
    assert [h.subject for h in limited] == ["removed", "went away"]
    # four commits scanned (of six): "first" is not reached
    scanned = statushistory.read_history(repository, branch.branch, PATH, scan=4)
    assert [h.subject for h in scanned] == ["removed", "went away", "applied"]


def test_no_branch_no_history(tmp_path: Path) -> None:
    repo = tmp_path / "fleet"
    gitserver.run_git(None, "init", "-q", "-b", "main", str(repo))
    assert statushistory.read_history(repo / ".git", "rciots/status", PATH) == []
