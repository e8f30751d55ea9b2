"""The controller's Git source against real Git servers on loopback (git daemon, smart HTTP,
HTTPS with basic auth and a private CA): fetching into the mirror, incremental snapshots, and
every fault the source must survive."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pygit2
import pytest

from rciots.controller import gitsource, snapshots
from tests import gitserver

EXAMPLE = Path(__file__).resolve().parent.parent / "fleet-repo-example"
BERLIN = "tenants/acme-sensors/devices/berlin-gw-01"


def mirror_for(url: str, tmp_path: Path, **options: Any) -> gitsource.GitMirror:
    config = gitsource.SourceConfig(url=url, mirror=tmp_path / "mirror", **options)
    return gitsource.GitMirror(config)


def assert_same_as_git(snapshot: snapshots.Snapshot, remote: gitserver.Remote) -> None:
    """The snapshot holds what `rciots validate --rev` reads from the same commit."""
    files, problems, commit = snapshots.read_git_revision(remote.work, snapshot.revision)
    assert commit == snapshot.revision
    assert dict(snapshot.files) == files
    assert snapshot.problems == tuple(sorted(problems))


# --- URLs and configuration ----------------------------------------------------------------


def test_config_repr_hides_credentials() -> None:
    config = gitsource.SourceConfig(
        url="https://bot:hunter2@git.example.com/f.git",
        mirror=Path("/m"),
        credentials=gitsource.Credentials(username="bot", password="hunter3"),
    )
    assert "hunter" not in repr(config)
    assert "https://git.example.com/f.git" in repr(config)


def test_config_refuses_a_bad_branch_name() -> None:
    with pytest.raises(ValueError, match=r"^source branch 'a..b' is not a valid Git branch name$"):
        gitsource.SourceConfig(url="/srv/fleet", mirror=Path("/m"), branch="a..b")


# --- clone and fetch over each transport ----------------------------------------------------


def test_git_daemon_clone_then_fetch(tmp_path: Path, git_daemon: gitserver.GitDaemon) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", source=EXAMPLE)
    mirror = mirror_for(git_daemon.url("fleet.git"), tmp_path)

    first = mirror.fetch()
    assert first == gitsource.Fetched(revision=remote.head(), previous=None, forced=False)
    full = mirror.snapshot(first.revision, None)
    assert full.changed is None
    assert_same_as_git(full, remote)

    second = remote.commit({f"{BERLIN}/mosquitto.conf": "listener 1884\n"}, "berlin port")
    fetched = mirror.fetch()
    assert fetched == gitsource.Fetched(revision=second, previous=first.revision, forced=False)
    incremental = mirror.snapshot(second, full)
    assert incremental.changed == frozenset({f"{BERLIN}/mosquitto.conf"})
    assert_same_as_git(incremental, remote)


def test_fetch_with_nothing_new_keeps_the_revision(
    tmp_path: Path, git_daemon: gitserver.GitDaemon
) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    mirror = mirror_for(git_daemon.url("fleet.git"), tmp_path)
    mirror.fetch()
    again = mirror.fetch()
    assert again == gitsource.Fetched(revision=remote.head(), previous=remote.head(), forced=False)


def test_http_clone_then_fetch(tmp_path: Path, git_http: gitserver.GitHttpServer) -> None:
    remote = gitserver.make_remote(git_http.root / "fleet.git", source=EXAMPLE)
    mirror = mirror_for(git_http.url("fleet.git"), tmp_path)
    assert mirror.fetch().revision == remote.head()
    second = remote.commit({f"{BERLIN}/device.yaml": None}, "remove berlin's device file")
    assert mirror.fetch().revision == second
    assert_same_as_git(mirror.snapshot(second, None), remote)


def test_https_with_basic_auth_and_a_ca_bundle(
    tmp_path: Path, git_https: gitserver.GitHttpServer, tls_files: gitserver.TlsFiles
) -> None:
    remote = gitserver.make_remote(git_https.root / "fleet.git", source=EXAMPLE)
    credentials = gitsource.Credentials(
        username=gitserver.HTTP_USER, password=gitserver.HTTP_PASSWORD
    )
    mirror = mirror_for(
        git_https.url("fleet.git"), tmp_path, credentials=credentials, ca_bundle=tls_files.ca_cert
    )
    assert mirror.fetch().revision == remote.head()
    second = remote.commit({"tenants/acme-sensors/new.yaml": "x: 1\n"})
    assert mirror.fetch().revision == second
    assert {r.status for r in git_https.requests} >= {401, 200}  # it did ask for credentials


def test_https_credentials_in_the_url(
    tmp_path: Path, git_https: gitserver.GitHttpServer, tls_files: gitserver.TlsFiles
) -> None:
    remote = gitserver.make_remote(git_https.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    url = git_https.url("fleet.git", user=gitserver.HTTP_USER, password=gitserver.HTTP_PASSWORD)
    mirror = mirror_for(url, tmp_path, ca_bundle=tls_files.ca_cert)
    assert mirror.fetch().revision == remote.head()
    # libgit2 never saw the credentials, and the mirror keeps no URL at all
    config = (mirror.repository_path / "config").read_text()
    assert gitserver.HTTP_PASSWORD not in config
    assert "127.0.0.1" not in config


@pytest.mark.parametrize("form", ["path", "file-url"])
def test_local_remote(tmp_path: Path, form: str) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", files={"tenants/a/t.yaml": "a"})
    url = str(remote.bare) if form == "path" else remote.bare.as_uri()
    mirror = mirror_for(url, tmp_path)
    assert mirror.fetch().revision == remote.head()


def test_fetch_writes_only_the_tracking_ref(
    tmp_path: Path, git_daemon: gitserver.GitDaemon
) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    gitserver.run_git(remote.work, "push", "-q", "origin", "HEAD:refs/heads/other")
    mirror = mirror_for(git_daemon.url("fleet.git"), tmp_path)
    first = mirror.fetch()
    # the status writer's branch, and an older tracking ref, in the same mirror
    repo = pygit2.Repository(str(mirror.repository_path))
    status_commit = repo.create_commit(
        "refs/heads/rciots/status",
        pygit2.Signature("s", "s@example.invalid"),
        pygit2.Signature("s", "s@example.invalid"),
        "status",
        repo.TreeBuilder().write(),
        [],
    )
    repo.references.create("refs/remotes/origin/gone", first.revision)
    remote.commit({"tenants/a/t.yaml": "b"})
    mirror.fetch()
    refs = {name: str(repo.references[name].target) for name in repo.references}
    assert refs == {
        "refs/heads/rciots/status": str(status_commit),
        "refs/remotes/origin/gone": first.revision,
        "refs/remotes/origin/main": remote.head(),
    }


# --- snapshots ------------------------------------------------------------------------------


def test_incremental_snapshots_equal_full_ones_commit_after_commit(tmp_path: Path) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", source=EXAMPLE)
    mirror = mirror_for(str(remote.bare), tmp_path)
    previous = mirror.snapshot(mirror.fetch().revision, None)
    big = b"x" * (snapshots.MAX_FILE_BYTES + 1)
    conf, link = f"{BERLIN}/mosquitto.conf", f"{BERLIN}/link.yaml"
    gone, large = f"{BERLIN}/collector-resources.yaml", "tenants/acme-sensors/big.bin"
    fleets = "tenants/acme-sensors/fleets"
    fleet_files = {f"{fleets}/new.yaml", f"{fleets}/warehouse-gateways.yaml"}
    steps: list[tuple[str, dict[str, str | bytes | None], dict[str, str], set[str]]] = [
        ("modify", {conf: "listener 1\n"}, {}, {conf}),
        ("add", {f"{fleets}/new.yaml": "a: 1\n"}, {}, {f"{fleets}/new.yaml"}),
        ("delete", {gone: None}, {}, {gone}),
        ("add a symlink", {}, {link: "device.yaml"}, {link}),
        ("file to symlink", {}, {conf: "device.yaml"}, {conf}),
        ("too large", {large: big}, {}, {large}),
        ("links to files", {conf: "ok\n", link: "file\n", large: None}, {}, {conf, link, large}),
        ("folder to file", {fleets: "a file\n"}, {}, {fleets} | fleet_files),
        ("nothing", {}, {}, set()),
    ]  # fmt: skip
    for name, files, links, expected in steps:
        revision = remote.commit(files, name, symlinks=links)
        assert mirror.fetch().revision == revision
        incremental = mirror.snapshot(revision, previous)
        full = mirror.snapshot(revision, None)
        assert incremental.changed == frozenset(expected), name
        assert dict(incremental.files) == dict(full.files), name
        assert incremental.problems == full.problems, name
        assert_same_as_git(incremental, remote)
        previous = incremental

    template = "tenants/northwind-retail/templates/edge-cache"
    moved = {
        f"{template}/{name}" for name in ("deployment.yaml", "kustomization.yaml", "service.yaml")
    } | {f"{template}/edge-cache.conf.template"}
    revision = remote.rename(template, "tenants/northwind-retail/templates/edge-cache-v2")
    mirror.fetch()
    renamed = mirror.snapshot(revision, previous)
    assert renamed.changed == frozenset(
        moved | {p.replace("edge-cache/", "edge-cache-v2/") for p in moved}
    )
    assert_same_as_git(renamed, remote)


def test_snapshot_reports_symlinks_submodules_and_large_files(tmp_path: Path) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", files={"tenants/a/t.yaml": "a"})
    mirror = mirror_for(str(remote.bare), tmp_path)
    before = mirror.snapshot(mirror.fetch().revision, None)
    revision = remote.commit(
        {"tenants/a/big": b"y" * (snapshots.MAX_FILE_BYTES + 1)},
        symlinks={"tenants/a/l": "../../etc/passwd"},
        gitlinks={"tenants/a/sub": remote.head()},
    )
    mirror.fetch()
    after = mirror.snapshot(revision, before)
    assert after.changed == frozenset({"tenants/a/sub", "tenants/a/big", "tenants/a/l"})
    assert dict(after.files) == {"tenants/a/t.yaml": b"a"}
    assert [(p.path, p.message.split(" ")[0]) for p in after.problems] == [
        ("tenants/a/big", "file"),
        ("tenants/a/l", "symbolic"),
        ("tenants/a/sub", "submodules"),
    ]
    assert after.problems == mirror.snapshot(revision, None).problems
    assert_same_as_git(after, remote)


def test_tenants_folder_added_removed_and_made_a_link(tmp_path: Path) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", files={"README": "no tenants yet"})
    mirror = mirror_for(str(remote.bare), tmp_path)
    empty = mirror.snapshot(mirror.fetch().revision, None)
    assert dict(empty.files) == {}
    remote.commit({"tenants/a/t.yaml": "a"})
    added = mirror.snapshot(mirror.fetch().revision, empty)
    assert added.changed == frozenset({"tenants/a/t.yaml"})
    linked = remote.commit({"tenants": None}, symlinks={"tenants": "elsewhere"})
    mirror.fetch()
    as_link = mirror.snapshot(linked, added)
    assert as_link.changed == frozenset({"tenants/a/t.yaml", "tenants"})
    assert [p.path for p in as_link.problems] == ["tenants"]


def test_snapshot_files_are_read_only(tmp_path: Path) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", files={"tenants/a/t.yaml": "a"})
    mirror = mirror_for(str(remote.bare), tmp_path)
    snapshot = mirror.snapshot(mirror.fetch().revision, None)
    with pytest.raises(TypeError):
        snapshot.files["tenants/a/t.yaml"] = b"changed"  # type: ignore[index]


def test_snapshot_of_an_unknown_revision(tmp_path: Path) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", files={"tenants/a/t.yaml": "a"})
    mirror = mirror_for(str(remote.bare), tmp_path)
    mirror.fetch()
    with pytest.raises(gitsource.SourceError) as raised:
        mirror.snapshot("0" * 40, None)
    assert raised.value.reason == "RevisionNotFound"


# --- faults ---------------------------------------------------------------------------------


def test_force_push_is_reported_and_followed(
    tmp_path: Path, git_daemon: gitserver.GitDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", source=EXAMPLE)
    mirror = mirror_for(git_daemon.url("fleet.git"), tmp_path)
    first = mirror.fetch()
    before = mirror.snapshot(first.revision, None)
    rewritten = remote.force_push({"tenants/other/tenant.yaml": "kind: Tenant\n"})
    with caplog.at_level(logging.WARNING, logger="rciots.controller.gitsource"):
        fetched = mirror.fetch()
    assert fetched == gitsource.Fetched(revision=rewritten, previous=first.revision, forced=True)
    assert "was force-pushed" in caplog.text
    after = mirror.snapshot(rewritten, before)
    assert dict(after.files) == {"tenants/other/tenant.yaml": b"kind: Tenant\n"}
    assert after.changed == frozenset(set(before.files) | {"tenants/other/tenant.yaml"})
    # a later ordinary commit is no longer "forced"
    remote.commit({"tenants/other/x.yaml": "x"})
    assert not mirror.fetch().forced


def test_deleted_branch_is_a_clear_error(tmp_path: Path, git_daemon: gitserver.GitDaemon) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    mirror = mirror_for(git_daemon.url("fleet.git"), tmp_path)
    kept = mirror.fetch().revision
    remote.delete_branch()
    with pytest.raises(gitsource.SourceError) as raised:
        mirror.fetch()
    assert raised.value.reason == "BranchNotFound"
    assert not raised.value.retryable
    assert str(raised.value).startswith(
        f"branch 'main' not found on {git_daemon.url('fleet.git')}; check the branch name"
    )
    repo = pygit2.Repository(str(mirror.repository_path))
    assert str(repo.references[mirror.tracking_ref].target) == kept


def test_wrong_password_fails_without_showing_it(
    tmp_path: Path, git_https: gitserver.GitHttpServer, tls_files: gitserver.TlsFiles
) -> None:
    gitserver.make_remote(git_https.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    wrong = "not-the-Password-42"
    url = git_https.url("fleet.git", user=gitserver.HTTP_USER, password=wrong)
    mirror = mirror_for(url, tmp_path, ca_bundle=tls_files.ca_cert)
    with pytest.raises(gitsource.SourceError) as raised:
        mirror.fetch()
    assert raised.value.reason == "AuthenticationFailed"
    assert not raised.value.retryable
    assert wrong not in str(raised.value)
    assert wrong not in repr(raised.value)
    assert git_https.url("fleet.git") in str(raised.value)


def test_missing_credentials(
    tmp_path: Path, git_https: gitserver.GitHttpServer, tls_files: gitserver.TlsFiles
) -> None:
    gitserver.make_remote(git_https.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    mirror = mirror_for(git_https.url("fleet.git"), tmp_path, ca_bundle=tls_files.ca_cert)
    with pytest.raises(gitsource.SourceError, match="none is configured") as raised:
        mirror.fetch()
    assert raised.value.reason == "AuthenticationFailed"


def test_untrusted_certificate(tmp_path: Path) -> None:
    # a CA of its own, never given to pygit2 (CA bundles are trusted process-wide)
    untrusted = gitserver.make_tls_files(tmp_path / "untrusted")
    with gitserver.GitHttpServer(tmp_path / "served", tls=untrusted) as server:
        gitserver.make_remote(server.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
        with pytest.raises(gitsource.SourceError, match="set ca_bundle") as raised:
            mirror_for(server.url("fleet.git"), tmp_path).fetch()
    assert raised.value.reason == "CertificateInvalid"


def test_unreadable_ca_bundle(tmp_path: Path) -> None:
    remote = gitserver.make_remote(tmp_path / "fleet.git", files={"tenants/a/t.yaml": "a"})
    mirror = mirror_for(str(remote.bare), tmp_path, ca_bundle=tmp_path / "missing.pem")
    with pytest.raises(gitsource.SourceError, match=r"missing\.pem cannot be read") as raised:
        mirror.fetch()
    assert (raised.value.reason, raised.value.retryable) == ("CertificateInvalid", False)


def test_remote_down(tmp_path: Path, git_daemon: gitserver.GitDaemon) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    mirror = mirror_for(git_daemon.url("fleet.git"), tmp_path)
    mirror.fetch()
    git_daemon.stop()
    newer = remote.commit({"tenants/a/t.yaml": "b"})
    with pytest.raises(gitsource.SourceError) as raised:
        mirror.fetch()
    assert (raised.value.reason, raised.value.retryable) == ("Unreachable", True)
    git_daemon.start()
    assert mirror.fetch().revision == newer


@pytest.mark.parametrize("kind", ["daemon", "http"])
def test_missing_repository(
    tmp_path: Path,
    kind: str,
    git_daemon: gitserver.GitDaemon,
    git_http: gitserver.GitHttpServer,
) -> None:
    url = git_daemon.url("nope.git") if kind == "daemon" else git_http.url("nope.git")
    with pytest.raises(gitsource.SourceError) as raised:
        mirror_for(url, tmp_path).fetch()
    assert (raised.value.reason, raised.value.retryable) == ("RepositoryNotFound", False)


def test_stale_locks_and_leftover_packs_do_not_wedge_the_fetch(
    tmp_path: Path, git_daemon: gitserver.GitDaemon
) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    mirror = mirror_for(git_daemon.url("fleet.git"), tmp_path)
    mirror.fetch()
    git_dir = mirror.repository_path
    fresh = [git_dir / "refs/remotes/origin/main.lock"]  # libgit2 refuses to update the ref
    old = [
        git_dir / "packed-refs.lock",
        git_dir / "config.lock",
        git_dir / "refs/heads/x.lock",
        git_dir / "logs/refs/heads/x.lock",
    ]
    leftovers = [
        git_dir / "objects/pack/tmp_pack_Ab12Cd",
        git_dir / "objects/pack/pack_git2_7fQx2a",
        git_dir / f"objects/pack/pack-{'e' * 40}.pack",  # no .idx: an interrupted fetch
    ]
    for path in fresh + old + leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PACK\x00\x00\x00\x02partial")
    for path in old:
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    newer = remote.commit({"tenants/a/t.yaml": "b"})
    assert mirror.fetch().revision == newer
    assert [path for path in fresh + old + leftovers if path.exists()] == []


def test_a_fresh_lock_of_another_writer_is_left_alone(
    tmp_path: Path, git_daemon: gitserver.GitDaemon
) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    mirror = mirror_for(git_daemon.url("fleet.git"), tmp_path)
    mirror.fetch()
    writing = mirror.repository_path / "refs/heads/rciots/status.lock"
    writing.parent.mkdir(parents=True)
    writing.write_text("")
    newer = remote.commit({"tenants/a/t.yaml": "b"})
    assert mirror.fetch().revision == newer
    assert writing.exists()


def test_size_cap(tmp_path: Path, git_daemon: gitserver.GitDaemon) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    mirror = mirror_for(git_daemon.url("fleet.git"), tmp_path, max_fetch_bytes=128 * 1024)
    kept = mirror.fetch().revision
    remote.commit({"tenants/a/noise.bin": os.urandom(1024 * 1024)})  # incompressible
    started = time.monotonic()
    with pytest.raises(gitsource.SourceError, match="over max_fetch_bytes") as raised:
        mirror.fetch()
    assert time.monotonic() - started < 2
    assert (raised.value.reason, raised.value.retryable) == ("TooLarge", False)
    repo = pygit2.Repository(str(mirror.repository_path))
    assert str(repo.references[mirror.tracking_ref].target) == kept
    assert [p.name for p in (mirror.repository_path / "objects/pack").iterdir()
            if "_git2_" in p.name or p.name.startswith("tmp_")] == []  # fmt: skip
    # with a larger cap the same mirror fetches it
    roomy = gitsource.GitMirror(
        gitsource.SourceConfig(url=git_daemon.url("fleet.git"), mirror=tmp_path / "mirror")
    )
    assert roomy.fetch().revision == remote.head()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP server on loopback that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        server.close()


@pytest.mark.parametrize("scheme", ["git", "http"])
def test_time_cap_on_a_server_that_never_answers(
    tmp_path: Path, silent_port: int, scheme: str
) -> None:
    mirror = mirror_for(
        f"{scheme}://127.0.0.1:{silent_port}/fleet.git", tmp_path, fetch_timeout=0.5
    )
    # libgit2's process-global socket timeouts are the mirror's from its making on (the
    # status writer's pushes need them as much as fetches do)
    assert (pygit2.settings.server_connect_timeout, pygit2.settings.server_timeout) == (500, 500)
    started = time.monotonic()
    with pytest.raises(gitsource.SourceError) as raised:
        mirror.fetch()
    elapsed = time.monotonic() - started
    assert (raised.value.reason, raised.value.retryable) == ("Timeout", True)
    assert 0.4 < elapsed < 1.5


def test_time_cap_on_a_slow_transfer(tmp_path: Path) -> None:
    with gitserver.GitHttpServer(tmp_path / "served", delay=0.3) as slow:
        gitserver.make_remote(slow.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
        mirror = mirror_for(slow.url("fleet.git"), tmp_path, fetch_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(gitsource.SourceError) as raised:
            mirror.fetch()
    assert raised.value.reason == "Timeout"
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("damage", ["HEAD", "config", "objects", "tracking-ref", "not-a-repo"])
def test_corrupt_mirror_is_fetched_afresh(
    tmp_path: Path, git_daemon: gitserver.GitDaemon, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    mirror = mirror_for(git_daemon.url("fleet.git"), tmp_path)
    mirror.fetch()
    git_dir = mirror.repository_path
    if damage == "HEAD":
        (git_dir / "HEAD").unlink()
    elif damage == "config":
        (git_dir / "config").write_text("[core\n\tbare = maybe\n")
    elif damage == "objects":
        for pack in (git_dir / "objects/pack").iterdir():
            pack.unlink()
    elif damage == "tracking-ref":
        (git_dir / "refs/remotes/origin/main").write_text("not a commit id\n")
    else:
        for entry in git_dir.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        (git_dir / "junk").write_text("")
    newer = remote.commit({"tenants/a/t.yaml": "b"})
    with caplog.at_level(logging.WARNING, logger="rciots.controller.gitsource"):
        fetched = mirror.fetch()
    assert fetched.revision == newer
    assert "cannot be used" in caplog.text
    assert (git_dir.parent / "repo.git.corrupt").is_dir()
    assert dict(mirror.snapshot(newer, None).files) == {"tenants/a/t.yaml": b"b"}


def test_a_second_process_on_the_same_mirror_waits_then_fails(
    tmp_path: Path, git_daemon: gitserver.GitDaemon
) -> None:
    gitserver.make_remote(git_daemon.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    mirror = mirror_for(git_daemon.url("fleet.git"), tmp_path, fetch_timeout=0.2)
    other = mirror_for(git_daemon.url("fleet.git"), tmp_path)
    with other.lock(timeout=1), pytest.raises(gitsource.SourceError) as raised:
        mirror.fetch()
    assert (raised.value.reason, raised.value.retryable) == ("MirrorBusy", True)
    assert mirror.fetch().previous is None  # free again


def test_a_missing_blob_is_found_by_the_snapshot_and_repaired_by_the_next_fetch(
    tmp_path: Path, git_daemon: gitserver.GitDaemon
) -> None:
    remote = gitserver.make_remote(git_daemon.root / "fleet.git", files={"tenants/a/t.yaml": "a"})
    mirror = mirror_for(git_daemon.url("fleet.git"), tmp_path)
    revision = mirror.fetch().revision
    # turn the fetched pack into loose objects, then lose the one blob
    git_dir = mirror.repository_path
    for pack in (git_dir / "objects/pack").glob("*.pack"):
        data = pack.read_bytes()
        pack.unlink()
        pack.with_suffix(".idx").unlink()
        subprocess.run(["git", "-C", str(git_dir), "unpack-objects", "-q"], input=data, check=True)
    blob = gitserver.run_git(git_dir, "rev-parse", f"{revision}:tenants/a/t.yaml").strip()
    (git_dir / "objects" / blob[:2] / blob[2:]).unlink()
    restarted = mirror_for(git_daemon.url("fleet.git"), tmp_path)  # nothing cached
    with pytest.raises(gitsource.SourceError) as raised:
        restarted.snapshot(revision, None)
    assert (raised.value.reason, raised.value.retryable) == ("MirrorCorrupt", True)
    assert restarted.fetch().revision == revision == remote.head()
    assert dict(restarted.snapshot(revision, None).files) == {"tenants/a/t.yaml": b"a"}
    assert (git_dir.parent / "repo.git.corrupt").is_dir()
