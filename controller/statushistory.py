"""A device's recent history, from the status branch's log of its status file.

Position in the flow: status writer -> status branch (Git) -> **statushistory** -> the status
page's device view. Reads Git only (pygit2, blocking: run it in a worker thread), through a
``pygit2.Repository`` of its own, so it never shares one with the writer or the Git source.

Bounded twice: at most ``limit`` entries, found among at most ``scan`` commits of the branch
(first parents, newest first). A device that changes rarely on a busy branch shows fewer
entries than ``limit`` rather than making a page wait on a walk of the whole history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pygit2

from rciots.controller import yamlsafe

__all__ = ["DEFAULT_LIMIT", "DEFAULT_SCAN", "HistoryEntry", "read_history"]

DEFAULT_LIMIT = 10
DEFAULT_SCAN = 500


@dataclass(frozen=True)
class HistoryEntry:
    """One commit that changed the file: what the file said from then on (all None when the
    commit deleted it, or it did not read)."""

    commit: str
    at: datetime
    subject: str
    result: str | None
    connected: bool | None
    desired_revision: str | None
    applied_revision: str | None
    deleted: bool = False


def read_history(
    repository: Path,
    branch: str,
    path: str,
    *,
    limit: int = DEFAULT_LIMIT,
    scan: int = DEFAULT_SCAN,
) -> list[HistoryEntry]:
    """The newest changes of ``path`` on ``branch``, newest first; [] when the branch does
    not exist (yet)."""
    repo = pygit2.Repository(str(repository))
    ref = repo.references.get(f"refs/heads/{branch}")
    if ref is None:
        return []
    entries: list[HistoryEntry] = []
    commit = repo[ref.target].peel(pygit2.Commit)
    blob = _blob_id(commit, path)
    for _ in range(scan):
        parent = commit.parents[0] if commit.parents else None
        before = _blob_id(parent, path) if parent is not None else None
        if blob != before:
            entries.append(_entry(repo, commit, blob))
            if len(entries) >= limit:
                break
        if parent is None:
            break
        commit, blob = parent, before
    return entries


def _blob_id(commit: pygit2.Commit, path: str) -> pygit2.Oid | None:
    try:
        return commit.tree[path].id
    except KeyError:
        return None


def _entry(repo: pygit2.Repository, commit: pygit2.Commit, blob: pygit2.Oid | None) -> HistoryEntry:
    at = datetime.fromtimestamp(commit.commit_time, UTC)
    subject = commit.message.split("\n", 1)[0]
    status = _status_of(repo[blob].read_raw()) if blob is not None else None
    if status is None:
        return HistoryEntry(str(commit.id), at, subject, None, None, None, None, blob is None)
    connected = status.get("connected")
    return HistoryEntry(
        str(commit.id),
        at,
        subject,
        _text(status.get("result")),
        connected if isinstance(connected, bool) else None,
        _text(status.get("desiredRevision")),
        _text(status.get("lastAppliedRevision")),
    )


def _status_of(content: bytes) -> Mapping[str, object] | None:
    try:
        documents = yamlsafe.parse(content)
        data, _ = yamlsafe.to_python(documents[0]) if documents else (None, None)
    except (yamlsafe.YamlError, ValueError):
        return None
    status = data.get("status") if isinstance(data, Mapping) else None
    return status if isinstance(status, Mapping) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
