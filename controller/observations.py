"""What the controller observed of each device, and the status documents that follow from it.

Position in the flow: connector (sessions: connect, applied, status, disconnect; through
``service.Controller``, its ``connector.Devices``) -> **observations** -> status writer (each
device's status document, rendered again when what it shows changes) and the status page
(``latest``). What one observation changes is ``observed``'s (pure); this module keeps the
latest of each device and decides when its document is rendered again:

- on a connect, an applied and a disconnect, always;
- on a heartbeat (``seen``), only when the lastSeen the document shows moves (once per its
  granularity, an hour): the document would otherwise come out the same as the one queued
  last, and rendering it for every status message of every agent was most of an idle
  connector's CPU;
- after a reconcile pass, for the devices the pass rendered that were observed while it ran in
  its thread (``observed_during``): the pass's documents of them hold what was seen before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

from rciots.agent.bundle import ApplyResult, Bundle
from rciots.controller import changes, observed, reconcile, statusdocs

__all__ = ["Observations", "Publish", "status_documents"]

DeviceKey = tuple[str, str]
# status branch files by path: the content, or None for a file to remove
Publish = Callable[[Mapping[str, bytes | None]], None]


class Observations:
    """The latest observation of each device. ``table`` gives the current desired table,
    ``changes`` is bumped on each change the status page shows, and ``publish`` (None when
    status is not written) takes the status documents that changed."""

    def __init__(
        self,
        table: Callable[[], Mapping[DeviceKey, reconcile.DesiredState]],
        changes: changes.Changes,
        publish: Publish | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.latest: dict[DeviceKey, observed.Observed] = {}
        self._table = table
        self._changes = changes
        self._publish = publish
        self._clock = clock

    def connected(self, key: DeviceKey, applied_digest: str | None) -> None:
        self._changes.bump()
        self._record(key, observed.connected(self.latest.get(key), self._clock(), applied_digest))

    def disconnected(self, key: DeviceKey) -> None:
        self._changes.bump()
        self._record(key, observed.disconnected(self.latest.get(key), self._clock()))

    def applied(self, key: DeviceKey, bundle: Bundle, result: ApplyResult) -> None:
        self._changes.bump()
        self._record(key, observed.applied(self.latest.get(key), bundle, result, self._clock()))

    def seen(self, key: DeviceKey) -> None:
        before = self.latest.get(key)
        now_seen = observed.seen(before, self._clock())
        if before is not None and _written_last_seen(before) == _written_last_seen(now_seen):
            self.latest[key] = now_seen  # the document would not change (module docstring)
            return
        self._record(key, now_seen)

    def observed_during(
        self, before: Mapping[DeviceKey, observed.Observed], keys: Iterable[DeviceKey]
    ) -> dict[str, bytes | None]:
        """The status documents of the devices among ``keys`` observed since ``before`` (a
        copy of ``latest``), from the current table and what is observed now."""
        table = self._table()
        documents: dict[str, bytes | None] = {}
        for key in dict.fromkeys(keys):
            now_seen = self.latest.get(key)
            state = table.get(key)
            if now_seen is not before.get(key) and state is not None and now_seen is not None:
                documents[statusdocs.status_path(*key)] = _document(state, now_seen)
        return documents

    def _record(self, key: DeviceKey, now_seen: observed.Observed) -> None:
        self.latest[key] = now_seen
        state = self._table().get(key)
        if state is not None and self._publish is not None:
            self._publish({statusdocs.status_path(*key): _document(state, now_seen)})


def status_documents(
    table: Mapping[DeviceKey, reconcile.DesiredState],
    outcome: reconcile.Outcome,
    seen: Mapping[DeviceKey, observed.Observed],
) -> dict[str, bytes | None]:
    """The status files a reconcile pass changes, by path: the document of each device
    rendered or failed in it (once, though it may be both), from its entry in the new
    ``table`` and what was ``seen`` of it; None for each device removed."""
    documents: dict[str, bytes | None] = {}
    for key in dict.fromkeys(outcome.rendered + outcome.failed):
        state = table.get(key)
        if state is not None:
            documents[statusdocs.status_path(*key)] = _document(state, seen.get(key))
    for key in outcome.removed:
        documents[statusdocs.status_path(*key)] = None
    return documents


def _document(state: reconcile.DesiredState, seen: observed.Observed | None) -> bytes:
    return statusdocs.render_status(observed.device_status(state, seen))


def _written_last_seen(seen: observed.Observed) -> datetime | None:
    """The lastSeen that a status document of ``seen`` shows."""
    return statusdocs.written_last_seen(seen.last_seen, seen.connected)
