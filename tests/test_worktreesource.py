"""A working tree as the source: content-derived snapshots and a watcher that wakes on saves."""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rciots.controller import gitsource, snapshots, worktreesource

QUIET = 0.3  # how long a test waits to be sure that nothing happens (debounce is 0.02 there)


def write(root: Path, relpath: str, text: str) -> None:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def tree_revision(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return "worktree:" + digest.hexdigest()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write(root, "tenants/acme/tenant.yaml", "kind: Tenant\n")
    write(root, "tenants/acme/devices/d1/device.yaml", "kind: Device\n")
    write(root, "tenants/acme/templates/web/kustomization.yaml", "resources: []\n")
    write(root, "README.md", "not read\n")
    return root


# --- snapshots -------------------------------------------------------------------------------


def test_first_snapshot_has_the_tree_and_no_changed_paths(repo: Path) -> None:
    snapshot = worktreesource.snapshot_worktree(repo, None)
    assert dict(snapshot.files) == {
        "tenants/acme/tenant.yaml": b"kind: Tenant\n",
        "tenants/acme/devices/d1/device.yaml": b"kind: Device\n",
        "tenants/acme/templates/web/kustomization.yaml": b"resources: []\n",
    }
    assert snapshot.revision == tree_revision(dict(snapshot.files))
    assert snapshot.changed is None
    assert snapshot.problems == ()


def test_files_are_read_only(repo: Path) -> None:
    snapshot = worktreesource.snapshot_worktree(repo, None)
    with pytest.raises(TypeError):
        snapshot.files["tenants/acme/tenant.yaml"] = b"x"  # type: ignore[index]


def test_identical_trees_have_identical_revisions(repo: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    write(copy, "README.md", "outside tenants/: no part of the revision\n")
    assert (
        worktreesource.snapshot_worktree(repo, None).revision
        == worktreesource.snapshot_worktree(copy, None).revision
    )


@pytest.mark.parametrize(
    ("relpath", "text"),
    [
        ("tenants/acme/tenant.yaml", "kind: Tenant\n# edited\n"),
        ("tenants/acme/new.yaml", ""),
        ("tenants/acme/devices/d1/device.yam", "kind: Device\n"),  # same content, other path
    ],
)
def test_any_difference_changes_the_revision(repo: Path, relpath: str, text: str) -> None:
    before = worktreesource.snapshot_worktree(repo, None).revision
    write(repo, relpath, text)
    assert worktreesource.snapshot_worktree(repo, None).revision != before


def test_missing_tenants_folder_is_an_empty_tree(tmp_path: Path) -> None:
    snapshot = worktreesource.snapshot_worktree(tmp_path, None)
    assert dict(snapshot.files) == {}
    assert snapshot.revision == "worktree:" + hashlib.sha256().hexdigest()


def test_changed_names_edited_added_and_removed_paths(repo: Path) -> None:
    first = worktreesource.snapshot_worktree(repo, None)
    write(repo, "tenants/acme/tenant.yaml", "kind: Tenant\nenabled: false\n")
    write(repo, "tenants/acme/devices/d2/device.yaml", "kind: Device\n")
    (repo / "tenants/acme/templates/web/kustomization.yaml").unlink()
    second = worktreesource.snapshot_worktree(repo, first)
    assert second.changed == frozenset(
        {
            "tenants/acme/tenant.yaml",
            "tenants/acme/devices/d2/device.yaml",
            "tenants/acme/templates/web/kustomization.yaml",
        }
    )
    assert second.revision != first.revision
    # the untouched file is the previous snapshot's very bytes object
    path = "tenants/acme/devices/d1/device.yaml"
    assert second.files[path] is first.files[path]


def test_unchanged_tree_reuses_every_bytes_object(repo: Path) -> None:
    write(repo, "tenants/acme/empty.yaml", "")
    first = worktreesource.snapshot_worktree(repo, None)
    (repo / "tenants/acme/tenant.yaml").write_text("kind: Tenant\n")  # rewritten, same content
    second = worktreesource.snapshot_worktree(repo, first)
    assert second.changed == frozenset()
    assert second.revision == first.revision
    assert all(second.files[path] is first.files[path] for path in first.files)


def test_emptied_file_is_changed(repo: Path) -> None:
    first = worktreesource.snapshot_worktree(repo, None)
    write(repo, "tenants/acme/tenant.yaml", "")
    second = worktreesource.snapshot_worktree(repo, first)
    assert second.changed == frozenset({"tenants/acme/tenant.yaml"})


def test_symlink_is_refused_and_counts_as_a_change(repo: Path) -> None:
    first = worktreesource.snapshot_worktree(repo, None)
    (repo / "tenants/acme/link.yaml").symlink_to(repo / "README.md")
    second = worktreesource.snapshot_worktree(repo, first)
    assert "tenants/acme/link.yaml" not in second.files
    assert [p.path for p in second.problems] == ["tenants/acme/link.yaml"]
    assert "symbolic links are not allowed" in second.problems[0].message
    assert second.changed == frozenset({"tenants/acme/link.yaml"})
    assert second.revision != first.revision  # same readable files, but not the same tree
    (repo / "tenants/acme/link.yaml").unlink()
    third = worktreesource.snapshot_worktree(repo, second)
    assert third.revision == first.revision
    assert third.changed == frozenset({"tenants/acme/link.yaml"})


def test_file_replaced_by_a_symlink_is_changed(repo: Path) -> None:
    first = worktreesource.snapshot_worktree(repo, None)
    (repo / "tenants/acme/tenant.yaml").unlink()
    (repo / "tenants/acme/tenant.yaml").symlink_to(repo / "README.md")
    second = worktreesource.snapshot_worktree(repo, first)
    assert second.changed == frozenset({"tenants/acme/tenant.yaml"})


def test_previous_snapshot_from_elsewhere_shares_equal_contents(repo: Path) -> None:
    """A commit's snapshot as the previous one: equal contents still keep its objects."""
    files, _ = snapshots.read_worktree(repo)
    committed = snapshots.Snapshot(revision="0" * 40, files=files)
    snapshot = worktreesource.snapshot_worktree(repo, committed)
    assert snapshot.changed == frozenset()
    assert all(snapshot.files[path] is files[path] for path in files)


def test_a_refused_path_refused_for_another_reason_is_changed(repo: Path) -> None:
    (repo / "tenants/acme/big.yaml").symlink_to(repo / "README.md")
    first = worktreesource.snapshot_worktree(repo, None)
    (repo / "tenants/acme/big.yaml").unlink()
    write(repo, "tenants/acme/big.yaml", "x" * (snapshots.MAX_FILE_BYTES + 1))
    second = worktreesource.snapshot_worktree(repo, first)
    assert "larger than" in second.problems[0].message
    assert second.changed == frozenset({"tenants/acme/big.yaml"})


# --- the working tree as the source loop's mirror -------------------------------------------


def test_mirror_hands_on_what_the_fetch_read_compared_with_the_last_one(repo: Path) -> None:
    mirror = worktreesource.WorktreeMirror(repo)
    fetched = mirror.fetch()
    assert fetched.previous is None
    first = mirror.snapshot(fetched.revision, None)
    assert first.changed is None
    write(repo, "tenants/acme/tenant.yaml", "kind: Tenant\nenabled: false\n")
    fetched = mirror.fetch()
    assert fetched.previous == first.revision
    second = mirror.snapshot(fetched.revision, first)
    assert second.changed == frozenset({"tenants/acme/tenant.yaml"})
    # the same object a second time: it was compared with ``first`` while the tree was read
    assert mirror.snapshot(fetched.revision, first) is second


def test_mirror_compares_with_the_snapshot_it_is_given(repo: Path) -> None:
    """A snapshot that was not handed on (its consumer failed) is not the one compared with."""
    mirror = worktreesource.WorktreeMirror(repo)
    handed_on = mirror.snapshot(mirror.fetch().revision, None)
    write(repo, "tenants/acme/tenant.yaml", "kind: Tenant\nenabled: false\n")
    mirror.fetch()  # its snapshot is never taken
    write(repo, "tenants/acme/devices/d2/device.yaml", "kind: Device\n")
    fetched = mirror.fetch()
    latest = mirror.snapshot(fetched.revision, handed_on)
    assert latest.changed == frozenset(
        {"tenants/acme/tenant.yaml", "tenants/acme/devices/d2/device.yaml"}
    )
    assert mirror.snapshot(fetched.revision, None).changed is None


def test_mirror_refuses_a_revision_the_tree_no_longer_has(repo: Path) -> None:
    mirror = worktreesource.WorktreeMirror(repo)
    old = mirror.fetch().revision
    write(repo, "tenants/acme/tenant.yaml", "kind: Tenant\nenabled: false\n")
    mirror.fetch()
    with pytest.raises(gitsource.SourceError) as raised:
        mirror.snapshot(old, None)
    assert (raised.value.reason, raised.value.retryable) == ("RevisionNotFound", True)


# --- what the watcher ignores ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("relpath", "ignored"),
    [
        ("tenants/acme/tenant.yaml", False),
        ("tenants/acme/.tenant.yaml.swp", True),
        ("tenants/acme/.tenant.yaml.swx", True),
        ("tenants/acme/tenant.yaml~", True),
        ("tenants/acme/.#tenant.yaml", True),
        ("tenants/acme/#tenant.yaml#", True),
        ("tenants/acme/4913", True),
        ("tenants/acme/.tenant.yaml.0a1b2c3d4e5f.tmp", True),
        ("tenants/acme/tenant.tmp", False),
        ("tenants/.git/config", True),
        (".git/index.lock", True),
        ("tenants/acme/git/config", False),
        ("tenants/acme/49130", False),
    ],
)
def test_is_ignored(tmp_path: Path, relpath: str, ignored: bool) -> None:
    assert worktreesource.is_ignored(tmp_path, str(tmp_path / relpath)) is ignored


# --- the watcher -----------------------------------------------------------------------------


class Calls:
    """Counts on_change calls, which come from the watcher's thread."""

    def __init__(self) -> None:
        self.count = 0
        self.times: list[float] = []
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.count += 1
            self.times.append(time.monotonic())

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.count >= count:
                    return True
            time.sleep(0.005)
        return False


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def watching(repo: Path, calls: Calls) -> Iterator[worktreesource.WorktreeWatcher]:
    """A watcher with short delays, for tests that wait for nothing to happen."""
    with worktreesource.WorktreeWatcher(repo, calls, debounce=0.02, max_wait=0.1) as watcher:
        yield watcher


def test_saved_file_wakes_within_a_second(repo: Path, calls: Calls) -> None:
    with worktreesource.WorktreeWatcher(repo, calls):  # the default debounce, 0.2 s
        saved = time.monotonic()
        write(repo, "tenants/acme/tenant.yaml", "kind: Tenant\nenabled: false\n")
        assert calls.wait_for(1, timeout=1.0)
        assert calls.times[0] - saved < 1.0


def test_burst_of_writes_is_one_call(repo: Path, calls: Calls) -> None:
    with worktreesource.WorktreeWatcher(repo, calls, debounce=0.1):
        for n in range(50):
            write(repo, f"tenants/acme/devices/d{n}/device.yaml", f"n: {n}\n")
        assert calls.wait_for(1, timeout=1.0)
        time.sleep(QUIET)
    assert 1 <= calls.count <= 2


def test_editor_files_git_and_other_folders_do_not_wake(
    repo: Path, calls: Calls, watching: worktreesource.WorktreeWatcher
) -> None:
    for relpath in (
        "tenants/acme/.tenant.yaml.swp",
        "tenants/acme/tenant.yaml~",
        "tenants/acme/4913",
        "tenants/.git/HEAD",
        ".git/HEAD",
        "README.md",
        "docs/notes.md",
    ):
        write(repo, relpath, "x\n")
    time.sleep(QUIET)
    assert calls.count == 0
    write(repo, "tenants/acme/tenant.yaml", "kind: Tenant\n# saved\n")  # still awake
    assert calls.wait_for(1, timeout=1.0)


def test_reading_the_tree_does_not_wake(
    repo: Path, calls: Calls, watching: worktreesource.WorktreeWatcher
) -> None:
    """Each snapshot opens and reads every file: that must not start another round."""
    worktreesource.snapshot_worktree(repo, None)
    time.sleep(QUIET)
    assert calls.count == 0


def test_atomic_rename_onto_a_file_wakes(
    repo: Path, calls: Calls, watching: worktreesource.WorktreeWatcher
) -> None:
    temporary = repo / "tenants/acme/.tenant.yaml.0a1b2c3d4e5f.tmp"
    temporary.write_text("kind: Tenant\n# renamed\n")
    temporary.rename(repo / "tenants/acme/tenant.yaml")
    assert calls.wait_for(1, timeout=1.0)


def test_deleted_file_and_new_folder_wake(
    repo: Path, calls: Calls, watching: worktreesource.WorktreeWatcher
) -> None:
    (repo / "tenants/acme/tenant.yaml").unlink()
    assert calls.wait_for(1, timeout=1.0)
    time.sleep(0.15)  # one burst done (max_wait 0.1)
    (repo / "tenants/acme/devices/d9").mkdir()
    assert calls.wait_for(2, timeout=1.0)
    time.sleep(0.15)
    write(repo, "tenants/acme/devices/d9/device.yaml", "kind: Device\n")  # in the new folder
    assert calls.wait_for(3, timeout=1.0)


def test_tenants_folder_created_after_start(tmp_path: Path, calls: Calls) -> None:
    with worktreesource.WorktreeWatcher(tmp_path, calls, debounce=0.02, max_wait=0.1):
        (tmp_path / "tenants").mkdir()
        assert calls.wait_for(1, timeout=1.0)
        write(tmp_path, "tenants/acme/tenant.yaml", "kind: Tenant\n")
        assert calls.wait_for(2, timeout=1.0)


def test_tenants_folder_replaced(repo: Path, calls: Calls) -> None:
    with worktreesource.WorktreeWatcher(repo, calls, debounce=0.02, max_wait=0.1):
        (repo / "tenants").rename(repo / "tenants.old")
        (repo / "tenants.new").mkdir()
        (repo / "tenants.new").rename(repo / "tenants")
        assert calls.wait_for(1, timeout=1.0)
        time.sleep(0.15)
        count = calls.count
        write(repo, "tenants.old/acme/tenant.yaml", "no longer watched\n")
        time.sleep(QUIET)
        assert calls.count == count
        write(repo, "tenants/acme/tenant.yaml", "kind: Tenant\n")
        assert calls.wait_for(count + 1, timeout=1.0)
        shutil.rmtree(repo / "tenants")
        assert calls.wait_for(count + 2, timeout=1.0)
        time.sleep(0.15)
        write(repo, "tenants/acme/tenant.yaml", "kind: Tenant\n")  # made again, file and all
        assert calls.wait_for(count + 3, timeout=1.0)


def test_failing_callback_is_logged_and_watching_goes_on(
    repo: Path, calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    def failing() -> None:
        calls()
        raise RuntimeError("reconcile queue closed")

    with worktreesource.WorktreeWatcher(repo, failing, debounce=0.02, max_wait=0.1):
        write(repo, "tenants/acme/tenant.yaml", "a: 1\n")
        assert calls.wait_for(1, timeout=1.0)
        time.sleep(0.15)
        write(repo, "tenants/acme/tenant.yaml", "a: 2\n")
        assert calls.wait_for(2, timeout=1.0)
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failures[0].getMessage() == "the worktree change callback failed; watching on"


def test_stop_joins_every_thread_and_ends_the_calls(repo: Path, calls: Calls) -> None:
    before = set(threading.enumerate())
    watcher = worktreesource.WorktreeWatcher(repo, calls, debounce=0.02, max_wait=0.1)
    watcher.start()
    assert set(threading.enumerate()) > before
    write(repo, "tenants/acme/tenant.yaml", "a: 1\n")
    watcher.stop()
    assert set(threading.enumerate()) == before
    count = calls.count
    write(repo, "tenants/acme/tenant.yaml", "a: 2\n")
    time.sleep(QUIET)
    assert calls.count == count
    watcher.stop()  # again: nothing to do


def test_watcher_starts_once(repo: Path, calls: Calls) -> None:
    with (
        worktreesource.WorktreeWatcher(repo, calls) as watcher,
        pytest.raises(RuntimeError, match="already started"),
    ):
        watcher.start()


def test_missing_root_is_refused_at_start(tmp_path: Path, calls: Calls) -> None:
    watcher = worktreesource.WorktreeWatcher(tmp_path / "nowhere", calls)
    with pytest.raises(ValueError, match=r"^cannot watch .*/nowhere: it is not a directory$"):
        watcher.start()


@pytest.mark.parametrize(("debounce", "max_wait"), [(-0.1, 1.0), (2.0, 1.0)])
def test_bad_delays_are_refused(
    tmp_path: Path, calls: Calls, debounce: float, max_wait: float
) -> None:
    with pytest.raises(ValueError, match=r"^need 0 <= debounce <= max_wait"):
        worktreesource.WorktreeWatcher(tmp_path, calls, debounce, max_wait=max_wait)
