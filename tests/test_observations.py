"""The controller's record of what it observed of each device, and when a device's status
document is rendered again: every observation, a heartbeat only when the lastSeen it shows
moves, and after a pass the devices observed while it ran; with a clock the test moves."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from rciots.agent.bundle import ApplyResult, Bundle
from rciots.controller import changes, observations, observed, reconcile, statusdocs

KEY = ("acme", "d1")
PATH = "status/acme/d1.yaml"
DIGEST = "sha256:" + "0" * 64


def state(device: str, error: str | None = None) -> reconcile.DesiredState:
    return reconcile.DesiredState(
        tenant="acme",
        device=device,
        revision="a" * 40,
        digest=DIGEST,
        manifests="",
        attempted_revision="b" * 40 if error else "a" * 40,
        error=error,
    )


def status_of(state: reconcile.DesiredState, seen: observed.Observed | None = None) -> bytes:
    return statusdocs.render_status(observed.device_status(state, seen))


class Recorder:
    """Observations of a one-device table, with a clock to move and what they published."""

    def __init__(self) -> None:
        self.now = datetime(2027, 3, 1, 12, 0, 5, tzinfo=UTC)
        self.table: Mapping[tuple[str, str], reconcile.DesiredState] = {KEY: state("d1")}
        self.published: list[Mapping[str, bytes | None]] = []
        self.changes = changes.Changes()
        self.observations = observations.Observations(
            lambda: self.table, self.changes, self.published.append, lambda: self.now
        )


def test_each_observation_publishes_the_devices_document_and_counts_a_change() -> None:
    seen = Recorder()
    seen.observations.connected(KEY, None)
    bundle = Bundle("a" * 40, DIGEST, "", ())
    seen.observations.applied(KEY, bundle, ApplyResult(DIGEST))
    seen.observations.disconnected(KEY)
    latest = seen.observations.latest[KEY]
    assert (latest.connected, latest.applied_digest, latest.last_seen) == (False, DIGEST, seen.now)
    assert len(seen.published) == 3
    assert seen.published[-1] == {PATH: status_of(seen.table[KEY], latest)}
    assert seen.changes.value == 3


def test_a_heartbeat_publishes_only_when_the_last_seen_it_shows_moves() -> None:
    seen = Recorder()
    seen.observations.connected(KEY, None)
    for _ in range(119):  # heartbeats every 30 s: until 12:59:35, the same hour
        seen.now += timedelta(seconds=30)
        seen.observations.seen(KEY)
    assert len(seen.published) == 1
    assert seen.observations.latest[KEY].last_seen == seen.now  # recorded all the same
    seen.now += timedelta(seconds=30)  # 13:00:05
    seen.observations.seen(KEY)
    assert len(seen.published) == 2
    assert seen.published[-1] == {PATH: status_of(seen.table[KEY], seen.observations.latest[KEY])}
    assert seen.changes.value == 1  # a heartbeat changes nothing the status page shows


def test_a_device_without_a_desired_state_or_without_status_writing_publishes_nothing() -> None:
    seen = Recorder()
    seen.observations.connected(("acme", "unknown"), None)
    assert seen.published == []
    quiet = observations.Observations(lambda: seen.table, changes.Changes(), None)
    quiet.connected(KEY, None)
    assert quiet.latest[KEY].connected


def test_after_a_pass_the_devices_observed_while_it_ran_are_rendered_from_both() -> None:
    seen = Recorder()
    seen.observations.connected(KEY, None)
    seen.observations.connected(("acme", "d2"), None)
    before = dict(seen.observations.latest)  # the pass's copy
    seen.observations.disconnected(KEY)  # while the pass ran
    seen.table = {KEY: state("d1", error="boom"), ("acme", "d2"): state("d2")}  # its result
    documents = seen.observations.observed_during(before, [KEY, ("acme", "d2"), KEY])
    assert documents == {PATH: status_of(seen.table[KEY], seen.observations.latest[KEY])}


def test_status_documents_of_a_pass() -> None:
    table = {("acme", "d1"): state("d1"), ("acme", "d2"): state("d2", error="boom")}
    outcome = reconcile.Outcome(
        revision="b" * 40,
        rendered=(("acme", "d1"), ("acme", "d2")),
        changed=(("acme", "d1"),),
        removed=(("acme", "gone"),),
        failed=(("acme", "d2"),),  # rendered and failed: one document
        diagnostics=(),
        seconds=0.0,
    )
    documents = observations.status_documents(table, outcome, {})
    assert documents == {
        "status/acme/d1.yaml": status_of(table[("acme", "d1")]),
        "status/acme/d2.yaml": status_of(table[("acme", "d2")]),
        "status/acme/gone.yaml": None,
    }
    failing = documents["status/acme/d2.yaml"]
    assert failing is not None
    assert f"result: {statusdocs.RENDER_FAILED}".encode() in failing
