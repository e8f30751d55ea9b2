"""The source loop: its timing rules as plain functions, and polling, waking, force-pushes and
a remote that goes down and comes back, against a real git daemon and smart HTTP server."""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import threading
import time
from pathlib import Path

import pytest

from rciots.controller import gitsource, snapshots, sourceloop
from tests import aio, gitserver

T0 = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


class FixedRandom(random.Random):
    """A random source that always draws ``value``: delays become exact."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


class Collector:
    """An on_snapshot that keeps what it is handed."""

    def __init__(self) -> None:
        self.snapshots: list[snapshots.Snapshot] = []

    async def __call__(self, snapshot: snapshots.Snapshot) -> None:
        self.snapshots.append(snapshot)

    def has(self, revision: str) -> bool:
        return any(s.revision == revision for s in self.snapshots)


def mirror_of(url: str, tmp_path: Path) -> gitsource.GitMirror:
    return gitsource.GitMirror(gitsource.SourceConfig(url=url, mirror=tmp_path / "mirror"))


# --- timing rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(("u", "expected"), [(0.0, 9.0), (0.5, 10.0), (0.999, 10.998)])
def test_poll_interval_is_spread_over_the_jitter(u: float, expected: float) -> None:
    assert sourceloop.jittered(10.0, 0.1, u) == pytest.approx(expected)


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    ceilings = [sourceloop.backoff_ceiling(n, 15.0, 300.0) for n in range(1, 7)]
    assert ceilings == [30.0, 60.0, 120.0, 240.0, 300.0, 300.0]
    assert sourceloop.backoff_ceiling(10**6, 15.0, 300.0) == 300.0


def test_next_delay_while_healthy_is_the_jittered_interval() -> None:
    delay = sourceloop.next_delay(
        failures=0, retryable=True, interval=15.0, jitter=0.1, cap=300.0, u=0.0
    )
    assert delay == pytest.approx(13.5)


@pytest.mark.parametrize(
    ("failures", "retryable", "u", "expected"),
    [(1, True, 0.5, 15.0), (3, True, 0.5, 60.0), (3, True, 0.0, 0.0), (1, False, 0.5, 150.0)],
)
def test_next_delay_after_failures_is_full_jitter(
    failures: int, retryable: bool, u: float, expected: float
) -> None:
    delay = sourceloop.next_delay(
        failures=failures, retryable=retryable, interval=15.0, jitter=0.1, cap=300.0, u=u
    )
    assert delay == pytest.approx(expected)


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    mirror = mirror_of(str(tmp_path), tmp_path)
    with pytest.raises(ValueError, match="poll interval must be positive"):
        sourceloop.SourceLoop(mirror, Collector(), interval=0)
    with pytest.raises(ValueError, match=r"jitter must be in \[0, 1\)"):
        sourceloop.SourceLoop(mirror, Collector(), jitter=1.0)


# --- one pass -------------------------------------------------------------------------------


def test_run_once_hands_on_a_new_revision_once(tmp_path: Path) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", files={"tenants/a/t.yaml": "a"})
    collector = Collector()
    loop = sourceloop.SourceLoop(
        mirror_of(str(remote.bare), tmp_path),
        collector,
        interval=10.0,
        clock=lambda: T0,
        rng=FixedRandom(0.5),
    )

    first = remote.head()

    async def main() -> None:
        assert await loop.run_once() == pytest.approx(10.0)
        assert await loop.run_once() == pytest.approx(10.0)  # nothing new: nothing handed on
        newer = remote.commit({"tenants/a/t.yaml": "b"})
        await loop.run_once()
        assert [s.revision for s in collector.snapshots] == [first, newer]
        assert collector.snapshots[0].changed is None
        assert collector.snapshots[1].changed == frozenset({"tenants/a/t.yaml"})
        await loop.stop()

    aio.run(main())
    assert loop.status == sourceloop.SourceStatus(
        revision=remote.head(), last_fetch_at=T0, last_success_at=T0, attempts=3
    )


def test_an_error_that_needs_a_person_waits_the_cap(
    tmp_path: Path, git_daemon: gitserver.GitDaemon
) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    loop = sourceloop.SourceLoop(
        mirror_of(git_daemon.url("fleet.git"), tmp_path),
        Collector(),
        backoff_cap=40.0,
        clock=lambda: T0,
        rng=FixedRandom(0.5),
    )

    first = remote.head()

    async def main() -> None:
        await loop.run_once()
        remote.delete_branch()
        assert await loop.run_once() == pytest.approx(20.0)
        await loop.stop()

    aio.run(main())
    status = loop.status
    assert (status.reason, status.failures, status.stale_since) == ("BranchNotFound", 1, T0)
    assert status.last_error is not None
    assert status.last_error.startswith("BranchNotFound: branch 'main' not found on git://")
    assert status.revision == first  # the last good revision stays


def test_a_failing_consumer_is_offered_the_revision_again(tmp_path: Path) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", files={"tenants/a/t.yaml": "a"})
    offered: list[str] = []

    async def flaky(snapshot: snapshots.Snapshot) -> None:
        offered.append(snapshot.revision)
        if len(offered) == 1:
            raise RuntimeError("the renderer is not ready")

    loop = sourceloop.SourceLoop(mirror_of(str(remote.bare), tmp_path), flaky)

    async def main() -> None:
        await loop.run_once()
        assert loop.status.reason == "HandOnFailed"
        assert loop.snapshot is None
        await loop.run_once()
        await loop.stop()

    aio.run(main())
    assert offered == [remote.head(), remote.head()]
    assert loop.status.reason is None
    assert loop.snapshot is not None
    assert loop.snapshot.revision == remote.head()


# --- the running loop -----------------------------------------------------------------------


def test_polling_picks_up_a_pushed_commit(tmp_path: Path, git_daemon: gitserver.GitDaemon) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    collector = Collector()
    loop = sourceloop.SourceLoop(
        mirror_of(git_daemon.url("fleet.git"), tmp_path), collector, interval=0.1
    )

    async def main() -> None:
        loop.start()
        await aio.eventually(lambda: collector.has(remote.head()))
        newer = remote.commit({"tenants/a/new.yaml": "n"})
        await aio.eventually(lambda: collector.has(newer))
        await loop.stop()

    aio.run(main())
    last = collector.snapshots[-1]
    assert last.changed == frozenset({"tenants/a/new.yaml"})
    assert dict(last.files) == {"tenants/a/t.yaml": b"a", "tenants/a/new.yaml": b"n"}


def test_wake_fetches_at_once(tmp_path: Path, git_http: gitserver.GitHttpServer) -> None:
    remote = gitserver.make_remote(git_http.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    collector = Collector()
    loop = sourceloop.SourceLoop(
        mirror_of(git_http.url("fleet.git"), tmp_path), collector, interval=60.0
    )

    async def main() -> None:
        loop.start()
        await aio.eventually(lambda: collector.has(remote.head()))
        newer = remote.commit({"tenants/a/t.yaml": "b"})
        woken = time.monotonic()
        threading.Thread(target=loop.wake).start()  # as the webhook handler would
        await aio.eventually(lambda: collector.has(newer), within=2.0)
        assert time.monotonic() - woken < 1.0
        await loop.stop()

    aio.run(main())


def test_after_a_pass_of_its_own_the_loop_waits_before_fetching_again(tmp_path: Path) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", files={"tenants/a/t.yaml": "a"})
    loop = sourceloop.SourceLoop(
        mirror_of(str(remote.bare), tmp_path), Collector(), interval=0.3, rng=FixedRandom(0.5)
    )

    async def main() -> None:
        assert await loop.run_once() == pytest.approx(0.3)  # as the controller's start does
        passed = time.monotonic()
        loop.start()
        await aio.eventually(lambda: loop.status.attempts == 2)
        assert time.monotonic() - passed >= 0.29  # the pass's delay, not a second fetch at once
        await loop.stop()

    aio.run(main())


def test_a_wake_after_a_pass_of_its_own_still_fetches_at_once(tmp_path: Path) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", files={"tenants/a/t.yaml": "a"})
    collector = Collector()
    loop = sourceloop.SourceLoop(mirror_of(str(remote.bare), tmp_path), collector, interval=60.0)

    async def main() -> None:
        await loop.run_once()
        newer = remote.commit({"tenants/a/t.yaml": "b"})
        loop.wake()  # between the first pass and start()
        loop.start()
        await aio.eventually(lambda: collector.has(newer), within=2.0)
        assert loop.status.attempts == 2
        await loop.stop()

    aio.run(main())


def test_wakes_during_a_fetch_make_one_more_fetch(tmp_path: Path) -> None:
    # every request waits 0.15 s, so a fetch is under way long enough to wake it five times
    with gitserver.GitHttpServer(tmp_path / "served", delay=0.15) as slow:
        gitserver.make_remote(slow.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
        loop = sourceloop.SourceLoop(
            mirror_of(slow.url("fleet.git"), tmp_path), Collector(), interval=60.0
        )

        async def main() -> None:
            loop.start()
            await aio.eventually(lambda: loop.status.attempts == 1)
            arrived = slow.arrivals
            loop.wake()
            await aio.eventually(lambda: slow.arrivals > arrived)  # the second fetch is under way
            for _ in range(5):
                threading.Thread(target=loop.wake).start()
            await aio.eventually(lambda: loop.status.attempts == 3)
            await asyncio.sleep(0.4)  # and no fourth
            assert loop.status.attempts == 3
            await loop.stop()

        aio.run(main())


def test_force_push_is_followed_and_counted(
    tmp_path: Path, git_daemon: gitserver.GitDaemon
) -> None:
    remote = gitserver.make_remote(
        git_daemon.root / "fleet.git", files={"tenants/a/t.yaml": "a", "tenants/a/u.yaml": "u"}
    )
    collector = Collector()
    loop = sourceloop.SourceLoop(
        mirror_of(git_daemon.url("fleet.git"), tmp_path), collector, interval=0.1
    )

    async def main() -> None:
        loop.start()
        await aio.eventually(lambda: collector.has(remote.head()))
        rewritten = remote.force_push({"tenants/b/t.yaml": "b"})
        await aio.eventually(lambda: collector.has(rewritten))
        await loop.stop()

    aio.run(main())
    last = collector.snapshots[-1]
    assert dict(last.files) == {"tenants/b/t.yaml": b"b"}
    assert last.changed == frozenset({"tenants/a/t.yaml", "tenants/a/u.yaml", "tenants/b/t.yaml"})
    assert loop.status.forced_updates == 1


def test_remote_down_then_up(
    tmp_path: Path, git_daemon: gitserver.GitDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    first = remote.head()
    collector = Collector()
    loop = sourceloop.SourceLoop(
        mirror_of(git_daemon.url("fleet.git"), tmp_path),
        collector,
        interval=0.04,
        backoff_cap=0.3,
        rng=FixedRandom(0.99),
    )
    seen: dict[int, float] = {}  # failures in a row -> the delay chosen after them

    def record() -> bool:
        status = loop.status
        if status.failures and status.retry_in is not None:
            seen[status.failures] = status.retry_in
        return status.failures >= 4

    async def main() -> None:
        loop.start()
        await aio.eventually(lambda: collector.has(first))
        git_daemon.stop()
        newer = remote.commit({"tenants/a/t.yaml": "b"})  # pushed while the server is down
        await aio.eventually(record)
        stale = loop.status
        assert stale.reason == "Unreachable"
        assert stale.stale_since is not None
        assert stale.last_success_at is not None
        assert stale.stale_since >= stale.last_success_at
        assert loop.snapshot is not None
        assert loop.snapshot.revision == first  # the last good snapshot is kept
        assert stale.revision == first
        git_daemon.start()  # back on the same port
        await aio.eventually(lambda: collector.has(newer), within=3.0)
        await loop.stop()

    with caplog.at_level(logging.INFO, logger="rciots.controller.sourceloop"):
        aio.run(main())
    # the delays double with each failure, up to the cap
    assert [seen[n] for n in (1, 2, 3, 4)] == pytest.approx([0.0792, 0.1584, 0.297, 0.297])
    healthy = loop.status
    assert (healthy.stale_since, healthy.failures, healthy.reason) == (None, 0, None)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per change of error, not once per attempt
    assert "Unreachable" in warnings[0].getMessage()
    assert any("recovered after" in r.getMessage() for r in caplog.records)


def test_stop_while_waiting_is_prompt(tmp_path: Path) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", files={"tenants/a/t.yaml": "a"})
    collector = Collector()
    loop = sourceloop.SourceLoop(mirror_of(str(remote.bare), tmp_path), collector, interval=60)

    async def main() -> None:
        loop.start()
        await aio.eventually(lambda: collector.has(remote.head()))
        started = time.monotonic()
        await loop.stop()
        assert time.monotonic() - started < 0.5
        loop.wake()  # after stop: does nothing, raises nothing

    aio.run(main())


def test_bad_credentials_never_reach_the_status_or_the_log(
    tmp_path: Path,
    git_https: gitserver.GitHttpServer,
    tls_files: gitserver.TlsFiles,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gitserver.make_remote(git_https.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    wrong = "Wrong-Token-0042"
    config = gitsource.SourceConfig(
        url=git_https.url("fleet.git", user=gitserver.HTTP_USER, password=wrong),
        mirror=tmp_path / "mirror",
        ca_bundle=tls_files.ca_cert,
    )
    loop = sourceloop.SourceLoop(gitsource.GitMirror(config), Collector())

    async def main() -> None:
        await loop.run_once()
        await loop.stop()

    with caplog.at_level(logging.DEBUG):
        aio.run(main())
    assert loop.status.reason == "AuthenticationFailed"
    assert wrong not in repr(loop.status)
    assert "AuthenticationFailed" in caplog.text
    assert wrong not in caplog.text
