"""The status branch against real repositories and real Git servers on loopback."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pygit2
import pytest

from rciots.controller import gitsource, statusbranch, statusdocs
from tests import gitserver

BRANCH = "rciots/status"
REF = f"refs/heads/{BRANCH}"


def show(repo: Path, rev: str, path: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"{rev}:{path}"], capture_output=True, check=True
    ).stdout


def tree_id(repo: Path, rev: str, path: str) -> str:
    return gitserver.git(repo, "rev-parse", f"{rev}:{path}")


def cli_commit(repo: Path, path: str, content: bytes, message: str = "by another writer") -> str:
    """Commit ``path`` on the status branch of the bare ``repo`` with the git command line
    (a temporary index, commit-tree, update-ref from the old head): another process."""
    index = repo / "other-writer.index"
    env = {**os.environ, **gitserver.GIT_IDENTITY, "GIT_INDEX_FILE": str(index)}

    def run(*args: str, data: bytes | None = None) -> str:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], input=data, capture_output=True, check=True, env=env
        )
        return done.stdout.decode().strip()

    old = run("rev-parse", REF)
    run("read-tree", REF)
    blob = run("hash-object", "-w", "--stdin", data=content)
    run("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
    new = run("commit-tree", run("write-tree"), "-p", old, "-m", message)
    run("update-ref", REF, new, old)
    index.unlink()
    return new


@dataclass
class Served:
    """A bare fleet repo on a server, the controller's bare mirror of it, and its URL."""

    remote: gitserver.Remote
    mirror: Path
    url: str
    root: Path

    def branch(self, **options: object) -> statusbranch.StatusBranch:
        return statusbranch.StatusBranch(self.mirror, remote_url=self.url, **options)  # type: ignore[arg-type]


def serve(root: Path, url: str, tmp_path: Path) -> Served:
    remote = gitserver.make_remote(root / "fleet.git", files={"tenants/acme/tenant.yaml": "x\n"})
    mirror = tmp_path / "mirror.git"
    gitserver.run_git(None, "clone", "-q", "--bare", str(remote.bare), str(mirror))
    return Served(remote, mirror, url, root)


@pytest.fixture(params=["file", "git-daemon", "http"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Served:
    """The fleet repo behind each transport the controller pushes over."""
    if request.param == "file":
        root = tmp_path / "served-file"
        root.mkdir()
        return serve(root, f"file://{root}/fleet.git", tmp_path)
    server = request.getfixturevalue("git_daemon" if request.param == "git-daemon" else "git_http")
    return serve(server.root, server.url("fleet.git"), tmp_path)


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    """A bare repo with a main branch, as a local fleet repo without remote."""
    remote = gitserver.make_remote(tmp_path / "fleet.git", files={"tenants/a/tenant.yaml": "a\n"})
    return remote.bare


def test_commit_and_read_round_trip(bare: Path) -> None:
    branch = statusbranch.StatusBranch(bare)
    assert branch.read() == {}
    assert branch.head() is None
    files = {
        "status/acme/gw-1.yaml": b"one\n",
        "status/acme/gw-2.yaml": b"two\n",
        "registry/acme/gw-1.yaml": b"identity\n",
    }
    commit = branch.commit(files, "first")
    assert commit is not None
    assert gitserver.git(bare, "rev-parse", REF) == commit == branch.head()
    assert branch.read() == {**files, "README.md": statusdocs.README}
    assert show(bare, BRANCH, "status/acme/gw-2.yaml") == b"two\n"
    # a fresh object on the same repository (a restart) reads the same
    assert statusbranch.StatusBranch(bare).read() == branch.read()


def test_the_branch_starts_with_a_root_commit_holding_the_readme(bare: Path) -> None:
    branch = statusbranch.StatusBranch(bare)
    branch.commit({"status/acme/gw-1.yaml": b"x\n"}, "first")
    assert gitserver.git(bare, "log", "--format=%s", BRANCH).splitlines() == [
        "first",
        "Start the status branch",
    ]
    # an orphan: no history shared with main
    root = gitserver.git(bare, "rev-list", "--max-parents=0", BRANCH)
    assert root == gitserver.git(bare, "rev-parse", f"{BRANCH}~1")
    assert gitserver.git(bare, "ls-tree", "--name-only", f"{BRANCH}~1") == "README.md"
    assert show(bare, BRANCH, "README.md") == statusdocs.README


def test_only_the_changed_subtrees_are_rebuilt(bare: Path) -> None:
    branch = statusbranch.StatusBranch(bare)
    branch.commit(
        {
            "status/acme/gw-1.yaml": b"1\n",
            "status/acme/gw-2.yaml": b"2\n",
            "status/globex/pos-1.yaml": b"3\n",
            "registry/acme/gw-1.yaml": b"4\n",
        },
        "first",
    )
    before = {path: tree_id(bare, BRANCH, path) for path in ("status/globex", "registry", "")}
    before_acme = tree_id(bare, BRANCH, "status/acme")
    branch.commit({"status/acme/gw-2.yaml": b"2 changed\n"}, "second")
    after = {path: tree_id(bare, BRANCH, path) for path in ("status/globex", "registry", "")}
    assert after["status/globex"] == before["status/globex"]
    assert after["registry"] == before["registry"]
    assert after[""] != before[""]
    assert tree_id(bare, BRANCH, "status/acme") != before_acme
    assert show(bare, BRANCH, "status/acme/gw-1.yaml") == b"1\n"


def test_identical_content_makes_no_commit(bare: Path) -> None:
    branch = statusbranch.StatusBranch(bare)
    first = branch.commit({"status/acme/gw-1.yaml": b"x\n", "pending/acme/p.yaml": b"p\n"}, "m")
    assert branch.commit({"status/acme/gw-1.yaml": b"x\n"}, "again") is None
    assert branch.commit({"status/acme/gone.yaml": None}, "delete nothing") is None
    assert branch.commit({}, "nothing") is None
    assert gitserver.git(bare, "rev-parse", REF) == first
    # nothing on a missing branch: the branch is not even created
    other = statusbranch.StatusBranch(bare, branch="rciots/other")
    assert other.commit({"x.yaml": None}, "delete nothing") is None
    assert other.head() is None


def test_deletion_removes_the_file_and_empty_folders(bare: Path) -> None:
    branch = statusbranch.StatusBranch(bare)
    branch.commit({"status/acme/gw-1.yaml": b"1\n", "status/globex/pos-1.yaml": b"2\n"}, "m")
    assert branch.commit({"status/globex/pos-1.yaml": None}, "remove") is not None
    assert branch.read() == {"README.md": statusdocs.README, "status/acme/gw-1.yaml": b"1\n"}
    assert gitserver.git(bare, "ls-tree", "--name-only", f"{BRANCH}:status") == "acme"


def test_a_file_replaced_by_a_folder(bare: Path) -> None:
    branch = statusbranch.StatusBranch(bare)
    branch.commit({"notes": b"a file\n"}, "m")
    branch.commit({"notes": None, "other/x": b"x\n"}, "m")
    branch.commit({"notes/inside.yaml": b"now a folder\n"}, "m")
    assert branch.read()["notes/inside.yaml"] == b"now a folder\n"
    assert gitserver.git(bare, "cat-file", "-t", f"{BRANCH}:notes") == "tree"


@pytest.mark.parametrize(
    "path", ["", "/abs.yaml", "a//b", "../x", "a/./b", "status/../x", ".git/config", "a\\b"]
)
def test_bad_paths_are_refused(bare: Path, path: str) -> None:
    with pytest.raises(ValueError, match="not valid"):
        statusbranch.StatusBranch(bare).commit({path: b"x"}, "m")


def test_a_file_and_a_folder_of_one_name_in_one_commit_are_refused(bare: Path) -> None:
    with pytest.raises(ValueError, match="both a file and a folder"):
        statusbranch.StatusBranch(bare).commit({"a/b": b"1", "a/b/c": b"2"}, "m")


def test_an_invalid_branch_name_is_refused(bare: Path) -> None:
    with pytest.raises(statusbranch.StatusBranchError, match="not a valid Git branch name"):
        statusbranch.StatusBranch(bare, branch="bad..name")


def test_a_path_that_is_no_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(statusbranch.StatusBranchError, match="not a Git repository"):
        statusbranch.StatusBranch(tmp_path)


def test_main_head_worktree_and_index_stay_untouched(tmp_path: Path) -> None:
    work = tmp_path / "fleet"
    gitserver.run_git(None, "init", "-q", "-b", "main", str(work))
    (work / "tenants").mkdir()
    (work / "tenants" / "t.yaml").write_text("tracked\n")
    gitserver.git(work, "add", "-A")
    gitserver.git(work, "commit", "-q", "-m", "fleet")
    (work / "tenants" / "t.yaml").write_text("edited, not committed\n")
    gitserver.git(work, "add", "tenants/t.yaml")  # staged, so the index differs from HEAD
    (work / "untracked.txt").write_text("u\n")
    refs_before = gitserver.git(work, "for-each-ref", "--format=%(refname) %(objectname)")
    head_before = gitserver.git(work, "symbolic-ref", "HEAD")
    index_before = (work / ".git" / "index").read_bytes()
    status_before = gitserver.git(work, "status", "--porcelain")

    branch = statusbranch.StatusBranch(work)
    branch.commit({"status/a/d.yaml": b"1\n"}, "one")
    branch.commit({"status/a/d.yaml": b"2\n", "tenants/t.yaml": b"not the fleet's\n"}, "two")

    assert gitserver.git(work, "symbolic-ref", "HEAD") == head_before
    assert (work / ".git" / "index").read_bytes() == index_before
    assert gitserver.git(work, "status", "--porcelain") == status_before
    assert (work / "tenants" / "t.yaml").read_text() == "edited, not committed\n"
    assert not (work / "status").exists()
    refs_after = gitserver.git(work, "for-each-ref", "--format=%(refname) %(objectname)")
    assert set(refs_after.splitlines()) == {*refs_before.splitlines(), f"{REF} {branch.head()}"}


def test_a_checked_out_status_branch_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "fleet"
    gitserver.run_git(None, "init", "-q", "-b", BRANCH, str(work))
    with pytest.raises(statusbranch.StatusBranchError, match="checked out"):
        statusbranch.StatusBranch(work).commit({"status/a/d.yaml": b"1\n"}, "m")


class MovedBeforeUpdate(statusbranch.StatusBranch):
    """Lets another writer move the branch after the commit is built, before the ref moves."""

    intruder: Callable[[], str] | None = None
    intruded: str | None = None

    def _move_branch(self, expected: pygit2.Oid | None, new: pygit2.Oid) -> bool:
        if self.intruder is not None:
            self.intruded, self.intruder = self.intruder(), None
        return super()._move_branch(expected, new)


def test_a_branch_moved_meanwhile_is_built_on_again(bare: Path) -> None:
    branch = MovedBeforeUpdate(bare)
    branch.commit({"status/acme/gw-1.yaml": b"1\n"}, "first")
    branch.intruder = lambda: cli_commit(bare, "registry/acme/gw-9.yaml", b"theirs\n")
    ours = branch.commit({"status/acme/gw-1.yaml": b"ours\n"}, "second")
    assert branch.intruded is not None
    assert ours is not None
    assert gitserver.git(bare, "rev-parse", f"{ours}^") == branch.intruded
    assert show(bare, BRANCH, "registry/acme/gw-9.yaml") == b"theirs\n"
    assert show(bare, BRANCH, "status/acme/gw-1.yaml") == b"ours\n"


def test_two_writers_on_one_repository_lose_no_update(bare: Path) -> None:
    statusbranch.StatusBranch(bare).commit({"README.md": statusdocs.README}, "start")

    def write(name: str) -> None:
        branch = statusbranch.StatusBranch(bare)  # its own Repository object, as a replica
        for i in range(25):
            branch.commit({f"status/{name}/d{i}.yaml": f"{i}\n".encode()}, f"{name} {i}")

    threads = [threading.Thread(target=write, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    files = statusbranch.StatusBranch(bare).read()
    assert sum(path.startswith("status/") for path in files) == 50
    # linear: one commit per write
    assert gitserver.git(bare, "rev-list", "--count", BRANCH) == "51"
    assert gitserver.git(bare, "rev-list", "--merges", BRANCH) == ""


def test_writes_wait_for_the_repository_lock(bare: Path) -> None:
    mirror_lock = threading.Lock()  # stands for the Git source's lock on the mirror

    @contextlib.contextmanager
    def hold() -> Iterator[None]:
        with mirror_lock:
            yield

    branch = statusbranch.StatusBranch(bare, lock=hold)
    done = threading.Event()

    def commit() -> None:
        branch.commit({"status/a/d.yaml": b"1\n"}, "m")
        done.set()

    with mirror_lock:  # the source is fetching
        writer = threading.Thread(target=commit)
        writer.start()
        assert not done.wait(0.1)
        assert gitserver.git(bare, "for-each-ref", REF) == ""
    writer.join(timeout=5)
    assert done.is_set()
    assert show(bare, BRANCH, "status/a/d.yaml") == b"1\n"


def test_many_new_files_are_written_as_one_valid_pack(bare: Path) -> None:
    branch = statusbranch.StatusBranch(bare)
    files = {f"status/t{i % 3}/d{i:04d}.yaml": f"device {i}\n".encode() for i in range(600)}
    files["status/t0/same-content.yaml"] = b"device 7\n"  # a duplicate blob in the batch
    files["status/t0/big.yaml"] = os.urandom(70_000)  # a size that needs several header bytes
    branch.commit(files, "many")
    packs = list((bare / "objects" / "pack").glob("pack-*.pack"))
    assert len(packs) == 1
    subprocess.run(["git", "-C", str(bare), "fsck", "--strict", "--full"], check=True)
    subprocess.run(["git", "-C", str(bare), "verify-pack", str(packs[0])], check=True)
    assert show(bare, BRANCH, "status/t1/d0001.yaml") == b"device 1\n"
    assert statusbranch.StatusBranch(bare).read() == {**files, "README.md": statusdocs.README}


# -- pushing ---------------------------------------------------------------------------------


# push and rejection run over every transport; the rest over git daemon alone, to stay fast
ONE_SERVER = pytest.mark.parametrize("served", ["git-daemon"], indirect=True)


def other_clone_commits(served: Served, tmp_path: Path, files: dict[str, str]) -> str:
    """A person (or another replica) commits to the remote's status branch from their own
    clone; the new commit id."""
    work = tmp_path / "other-clone"
    if not work.exists():
        gitserver.run_git(None, "clone", "-q", "-b", BRANCH, served.url, str(work))
    else:
        gitserver.git(work, "pull", "-q", "--ff-only")
    for path, content in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(content)
    gitserver.git(work, "add", "-A")
    gitserver.git(work, "commit", "-q", "-m", "edited by someone else")
    gitserver.git(work, "push", "-q", "origin", BRANCH)
    return gitserver.git(work, "rev-parse", "HEAD")


def test_push_lands_on_the_remote_status_branch_and_main_is_untouched(served: Served) -> None:
    main_before = served.remote.head()
    mirror_main = gitserver.git(served.mirror, "rev-parse", "refs/heads/main")
    branch = served.branch()
    commit = branch.commit({"status/acme/gw-1.yaml": b"1\n"}, "first")
    branch.push()
    assert gitserver.git(served.remote.bare, "rev-parse", REF) == commit
    assert show(served.remote.bare, BRANCH, "status/acme/gw-1.yaml") == b"1\n"
    assert served.remote.head() == main_before
    assert gitserver.git(served.mirror, "rev-parse", "refs/heads/main") == mirror_main
    assert gitserver.git(served.mirror, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert gitserver.git(served.mirror, "rev-parse", f"refs/remotes/origin/{BRANCH}") == commit
    branch.push()  # nothing new: no error, nothing changes
    assert gitserver.git(served.remote.bare, "rev-parse", REF) == commit


def test_a_rejected_push_is_applied_again_on_the_remote_head(
    served: Served, tmp_path: Path
) -> None:
    branch = served.branch(retry_delay=0.01)
    first = branch.commit({"status/acme/gw-1.yaml": b"1\n", "status/acme/gw-2.yaml": b"2\n"}, "a")
    assert first is not None
    branch.push()
    theirs = other_clone_commits(
        served,
        tmp_path,
        {"registry/acme/gw-3.yaml": "theirs\n", "status/acme/gw-2.yaml": "theirs too\n"},
    )
    branch.commit({"status/acme/gw-1.yaml": b"ours\n"}, "b")
    branch.commit({"status/acme/gw-4.yaml": b"new\n"}, "c")
    branch.push()

    remote = served.remote.bare
    head = gitserver.git(remote, "rev-parse", REF)
    assert head == branch.head()
    assert show(remote, BRANCH, "status/acme/gw-1.yaml") == b"ours\n"
    assert show(remote, BRANCH, "status/acme/gw-4.yaml") == b"new\n"
    assert show(remote, BRANCH, "registry/acme/gw-3.yaml") == b"theirs\n"
    assert show(remote, BRANCH, "status/acme/gw-2.yaml") == b"theirs too\n"  # we did not touch it
    # never forced: their commit and our first are ancestors; the history is one line
    subprocess.run(
        ["git", "-C", str(remote), "merge-base", "--is-ancestor", theirs, head], check=True
    )
    subprocess.run(
        ["git", "-C", str(remote), "merge-base", "--is-ancestor", first, head], check=True
    )
    assert gitserver.git(remote, "rev-list", "--merges", BRANCH) == ""
    assert gitserver.git(remote, "rev-parse", f"{head}^") == theirs
    assert "- c\n- b" in gitserver.git(remote, "log", "-1", "--format=%B", BRANCH)


@ONE_SERVER
def test_our_newer_content_wins_over_theirs_on_the_same_path(
    served: Served, tmp_path: Path
) -> None:
    branch = served.branch()
    branch.commit({"status/acme/gw-1.yaml": b"1\n"}, "a")
    branch.push()
    other_clone_commits(served, tmp_path, {"status/acme/gw-1.yaml": "theirs\n"})
    branch.commit({"status/acme/gw-1.yaml": b"ours\n"}, "b")
    branch.push()
    assert show(served.remote.bare, BRANCH, "status/acme/gw-1.yaml") == b"ours\n"


@ONE_SERVER
def test_a_restart_reads_what_the_remote_gained_and_pushes_what_it_had_not(
    served: Served, tmp_path: Path
) -> None:
    branch = served.branch()
    branch.commit({"status/acme/gw-1.yaml": b"1\n"}, "a")
    branch.push()
    branch.commit({"status/acme/gw-2.yaml": b"unpushed\n"}, "b")  # then the controller stops
    other_clone_commits(served, tmp_path, {"registry/acme/gw-3.yaml": "theirs\n"})

    restarted = served.branch()
    files = restarted.read()
    assert files["registry/acme/gw-3.yaml"] == b"theirs\n"
    assert files["status/acme/gw-2.yaml"] == b"unpushed\n"
    restarted.push()
    assert show(served.remote.bare, BRANCH, "status/acme/gw-2.yaml") == b"unpushed\n"
    assert show(served.remote.bare, BRANCH, "registry/acme/gw-3.yaml") == b"theirs\n"


@ONE_SERVER
def test_a_status_branch_that_exists_only_on_the_remote_is_built_on(
    served: Served, tmp_path: Path
) -> None:
    first = served.branch()
    first.commit({"status/acme/gw-1.yaml": b"1\n"}, "a")
    first.push()
    # a second mirror that never saw the branch commits before reading: unrelated histories
    mirror = tmp_path / "second-mirror.git"
    gitserver.run_git(
        None, "clone", "-q", "--bare", "-b", "main", str(served.remote.bare), str(mirror)
    )
    gitserver.git(mirror, "update-ref", "-d", REF)
    second = statusbranch.StatusBranch(mirror, remote_url=served.url)
    second.commit({"status/acme/gw-2.yaml": b"2\n"}, "b")
    second.push()
    remote = served.remote.bare
    assert show(remote, BRANCH, "status/acme/gw-1.yaml") == b"1\n"
    assert show(remote, BRANCH, "status/acme/gw-2.yaml") == b"2\n"
    assert gitserver.git(remote, "rev-list", "--merges", BRANCH) == ""


@ONE_SERVER
def test_pushing_many_files_through_the_pack_path(served: Served) -> None:
    branch = served.branch()
    files = {f"status/t/d{i:04d}.yaml": f"{i}\n".encode() for i in range(400)}
    branch.commit(files, "many")
    branch.push()
    subprocess.run(["git", "-C", str(served.remote.bare), "fsck", "--strict"], check=True)
    assert show(served.remote.bare, BRANCH, "status/t/d0399.yaml") == b"399\n"


def test_a_remote_that_is_down_raises_and_read_falls_back(
    git_daemon: gitserver.GitDaemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    served = serve(git_daemon.root, git_daemon.url("fleet.git"), tmp_path)
    branch = served.branch()
    branch.commit({"status/acme/gw-1.yaml": b"1\n"}, "a")
    git_daemon.stop()
    with pytest.raises(
        statusbranch.StatusRemoteError,
        match=f"pushing {BRANCH} to git://127.0.0.1:.*Connection refused",
    ):
        branch.push()
    assert branch.read()["status/acme/gw-1.yaml"] == b"1\n"
    assert "without the remote's changes" in caplog.text
    git_daemon.start()
    branch.push()
    assert show(served.remote.bare, BRANCH, "status/acme/gw-1.yaml") == b"1\n"


def test_auth_failures_raise_without_the_credentials(tmp_path: Path) -> None:
    user, password = "fleet-bot", "pa55-w0rd-secret"
    with gitserver.GitHttpServer(tmp_path / "served", auth=(user, password)) as server:
        served = serve(
            server.root, server.url("fleet.git", user=user, password="wrong-secret"), tmp_path
        )
        branch = served.branch(push_attempts=2, retry_delay=0.01)
        branch.commit({"status/acme/gw-1.yaml": b"1\n"}, "a")
        with pytest.raises(statusbranch.StatusRemoteError) as caught:
            branch.push()
        text = "".join(traceback.format_exception(caught.value))
        assert "wrong-secret" not in text
        assert f"http://127.0.0.1:{server.port}/fleet.git" in str(caught.value)

        # credentials from the callbacks, not the URL
        good = statusbranch.StatusBranch(
            served.mirror,
            remote_url=server.url("fleet.git"),
            callbacks=lambda: pygit2.RemoteCallbacks(credentials=pygit2.UserPass(user, password)),
        )
        good.push()
        assert show(served.remote.bare, BRANCH, "status/acme/gw-1.yaml") == b"1\n"


def test_credentials_refused_by_the_mirrors_callbacks_are_a_remote_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Git source's credentials callback raises its own error when the server asks again
    (a wrong password); pygit2 re-raises it from fetch and push. It must come out of the
    status branch as StatusRemoteError (read() then falls back), never as the source's."""
    wrong = "Wrong-Password-0042"
    auth = (gitserver.HTTP_USER, gitserver.HTTP_PASSWORD)
    with gitserver.GitHttpServer(tmp_path / "served", auth=auth) as server:
        served = serve(server.root, server.url("fleet.git"), tmp_path)
        mirror = gitsource.GitMirror(
            gitsource.SourceConfig(
                url=server.url("fleet.git"),
                mirror=tmp_path / "source-mirror",
                credentials=gitsource.Credentials(username=gitserver.HTTP_USER, password=wrong),
            )
        )
        branch = statusbranch.StatusBranch(
            served.mirror,
            remote_url=mirror.remote_url,
            callbacks=mirror.remote_callbacks,
            push_attempts=2,
            retry_delay=0.01,
        )
        branch.commit({"status/acme/gw-1.yaml": b"1\n"}, "a")
        assert branch.read() == {
            statusdocs.README_PATH: statusdocs.README,
            "status/acme/gw-1.yaml": b"1\n",
        }
        assert "refused the credentials" in caplog.text
        with pytest.raises(statusbranch.StatusRemoteError) as caught:
            branch.push()
    assert "refused the credentials" in str(caught.value)
    assert wrong not in "".join(traceback.format_exception(caught.value))
    assert wrong not in caplog.text


def test_a_push_to_a_server_that_stops_answering_ends_within_the_time_limit(
    tmp_path: Path,
) -> None:
    """libgit2 waits on a silent server for ever unless its socket timeouts are set; the Git
    source sets them for the whole process, pushes through its callbacks included."""
    with gitserver.GitHttpServer(tmp_path / "served", delay=2.0) as slow:
        served = serve(slow.root, slow.url("fleet.git"), tmp_path)
        mirror = gitsource.GitMirror(
            gitsource.SourceConfig(
                url=slow.url("fleet.git"), mirror=tmp_path / "source-mirror", fetch_timeout=0.5
            )
        )
        branch = statusbranch.StatusBranch(
            served.mirror,
            remote_url=mirror.remote_url,
            callbacks=mirror.remote_callbacks,
            push_attempts=2,
            retry_delay=0.01,
        )
        branch.commit({"status/acme/gw-1.yaml": b"1\n"}, "a")
        started = time.monotonic()
        with pytest.raises(statusbranch.StatusRemoteError, match="timed out"):
            branch.push()  # the push, then the fetch that looks why it failed: 0.5 s each
        assert time.monotonic() - started < 1.9  # less than one answer of the server
