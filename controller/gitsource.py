"""The controller's Git source: a local mirror of the fleet repo, and snapshots of it.

Flow: **source** -> fleet model -> render -> desired -> connector/status. This module is the
only code that reads the fleet repo through Git (pygit2). ``GitMirror.fetch`` brings the
tracked branch of the remote into a bare mirror on disk; ``GitMirror.snapshot`` turns a
commit of that mirror into an immutable ``snapshots.Snapshot`` (the ``tenants/`` tree as
path -> bytes, plus the paths changed since the previous snapshot) that the fleet model and
the renderer take. ``sourceloop.SourceLoop`` decides *when* to fetch (poll, webhook, file
watcher) and hands snapshots on; everything here is blocking and runs in a worker thread.

Remotes: a local path, ``file://``, ``git://``, ``http(s)://`` (user and password or token,
in ``Credentials`` or in the URL; an optional CA bundle) and ``ssh://`` (a key pair, or the
SSH agent). Credentials never reach logs, exception text or the mirror's config: they are
taken out of the URL before libgit2 sees it (the mirror fetches through an anonymous remote,
so no URL is stored at all), and every message passes through ``redaction.redact``.

The mirror (``<mirror>/repo.git``, bare) is shared with the status writer, which commits
``refs/heads/rciots/status`` in it from its own ``pygit2.Repository``. So a fetch writes only
``refs/remotes/origin/<branch>`` (and FETCH_HEAD), never ``refs/heads/*``, and never prunes.
Robustness, in the order a fetch does things:

1. an exclusive ``flock`` on ``<mirror>/fetch.lock`` (one fetch per mirror; a second
   controller on the same mirror waits, then fails with ``MirrorBusy``). The status writer
   may hold the same lock (``GitMirror.lock``) around its own writes;
2. leftovers of a crash are removed: Git ``*.lock`` files (at the top, under ``refs/`` and
   ``logs/``) of the refs written only under that lock (``refs/remotes/origin/*``,
   FETCH_HEAD), any other ``*.lock`` there older than a few seconds (a live writer holds one
   for milliseconds), and temporary or incomplete pack files of an interrupted fetch;
3. a mirror that cannot be opened, or whose tracking ref points at a missing commit, is moved
   aside (``repo.git.corrupt``, the last one kept for inspection) and fetched afresh;
4. the fetch is capped in size (``max_fetch_bytes``, counted as the pack arrives) and time
   (``fetch_timeout``: checked as data arrives, and libgit2's socket timeouts for a server
   that accepts a connection and then never answers; the status writer's pushes through
   ``remote_callbacks`` have the same limits);
5. a new head that does not descend from the previous one (a force-push) is logged as a
   WARNING and reported (``Fetched.forced``); the snapshot then simply follows the new tree.

Every failure is a ``SourceError`` with a CamelCase ``reason``, ``retryable`` and a message
that says what to do, e.g. ``BranchNotFound``: "branch 'main' not found on
git://host/fleet.git; ...".

Snapshots apply the refusal rules of ``snapshots.read_git_entry`` (symlinks, submodules,
oversize files become problems). Made from a previous snapshot, only the subtrees whose ids
differ are read (one changed file among 20,000 takes a few ms; see bench/source.py), and
``files`` is a read-only view of a new dict that shares the unchanged bytes objects. A tree
or blob missing while reading marks the mirror damaged: the next fetch replaces it.

Process-global libgit2 settings (libgit2 offers no per-remote ones): the socket timeouts
(connecting, and a server that stops sending) are set when a ``GitMirror`` is made, to its
``fetch_timeout`` (at most a minute), and stay for every connection libgit2 makes in this
process: the status writer's pushes are held to them too, so a remote that stops answering
cannot hang a push (and the shutdown that waits for it). A controller makes one mirror; were
there several, the last one made would set them. Likewise a CA bundle, once used, stays
trusted by every HTTPS connection libgit2 makes in this process.

``ssh://`` is implemented with ``pygit2.Keypair`` (or the agent), host keys checked against
``~/.ssh/known_hosts`` by libgit2, but is not tested here: no SSH server runs on the test
machines.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import pygit2

from rciots.controller import layout, redaction, snapshots
from rciots.controller.diagnostics import Diagnostic

__all__ = [
    "DEFAULT_BRANCH",
    "DEFAULT_FETCH_TIMEOUT",
    "DEFAULT_MAX_FETCH_BYTES",
    "Credentials",
    "Fetched",
    "GitMirror",
    "SourceConfig",
    "SourceError",
]

log = logging.getLogger(__name__)

DEFAULT_BRANCH = "main"
DEFAULT_MAX_FETCH_BYTES = 512 * 1024 * 1024
DEFAULT_FETCH_TIMEOUT = 120.0
# A server that sends nothing for this long is taken as gone, even when fetch_timeout is longer.
_MAX_SILENCE = 60.0
# A Git lock file this old is left over from a crash: live writers hold theirs for milliseconds.
_STALE_LOCK_AGE = 3.0
_REPOSITORY_DIR = "repo.git"
_LOCK_FILE = "fetch.lock"
_CORRUPT_SUFFIX = ".corrupt"


@dataclass(frozen=True)
class Credentials:
    """How to log in to the remote. HTTP(S): ``username`` and ``password`` (a password or an
    access token; without a username, "git" is sent, which GitHub, GitLab and Gitea accept
    with a token). SSH: ``ssh_private_key`` (and ``ssh_public_key`` when libssh2 cannot derive
    it, ``ssh_passphrase`` for an encrypted key); with no key, the SSH agent is asked."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssh_private_key: Path | None = None
    ssh_public_key: Path | None = None
    ssh_passphrase: str | None = field(default=None, repr=False)

    def secrets(self) -> tuple[str, ...]:
        """The secret values, to scrub from any text before it is shown."""
        return tuple(s for s in (self.password, self.ssh_passphrase) if s)


@dataclass(frozen=True)
class SourceConfig:
    """Where the fleet repo comes from and where its mirror lives.

    ``url``: a local path, ``file://``, ``git://``, ``http(s)://`` (credentials may be
    embedded as ``user:token@``; ``credentials`` given here win over them) or ``ssh://``.
    ``mirror``: a folder the source owns (the bare mirror is ``mirror/repo.git``).
    ``ca_bundle``: PEM file of CAs to trust for HTTPS, in addition to the system's.
    """

    url: str = field(repr=False)
    mirror: Path
    branch: str = DEFAULT_BRANCH
    credentials: Credentials = field(default_factory=Credentials)
    ca_bundle: Path | None = None
    max_fetch_bytes: int = DEFAULT_MAX_FETCH_BYTES
    fetch_timeout: float = DEFAULT_FETCH_TIMEOUT

    def __post_init__(self) -> None:
        if not self.url.strip():
            raise ValueError("source url is empty: give the fleet repo's URL or path")
        if not pygit2.reference_is_valid_name(f"refs/heads/{self.branch}"):
            raise ValueError(f"source branch {self.branch!r} is not a valid Git branch name")
        if self.max_fetch_bytes <= 0:
            raise ValueError(f"max_fetch_bytes must be positive, not {self.max_fetch_bytes}")
        if self.fetch_timeout <= 0:
            raise ValueError(f"fetch_timeout must be positive, not {self.fetch_timeout}")

    def __repr__(self) -> str:
        return (
            f"SourceConfig(url={redaction.redact(self.url)!r}, mirror={self.mirror!r}, "
            f"branch={self.branch!r}, ca_bundle={self.ca_bundle!r})"
        )


@dataclass(frozen=True)
class Fetched:
    """The outcome of a fetch: the branch's commit now, the one the mirror had before (None
    on the first fetch), and whether the new one does not descend from it (a force-push)."""

    revision: str
    previous: str | None
    forced: bool


class SourceError(Exception):
    """A fetch or snapshot that failed. ``reason`` is CamelCase (``Unreachable``,
    ``Timeout``, ``AuthenticationFailed``, ``CertificateInvalid``, ``RepositoryNotFound``,
    ``BranchNotFound``, ``TooLarge``, ``MirrorBusy``, ``MirrorCorrupt``, ``MirrorUnusable``,
    ``RevisionNotFound``, ``FetchFailed``); ``retryable`` says whether trying again soon may
    help (False: a person has to change something first). The message holds no secrets and
    says what to do."""

    def __init__(self, reason: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable

    @property
    def message(self) -> str:
        return str(self.args[0])


class GitMirror:
    """A bare mirror of one branch of the fleet repo, under ``config.mirror``.

    Blocking and not thread-safe: call one method at a time (``SourceLoop`` runs them in one
    worker thread). The exceptions are ``lock()`` and ``remote_callbacks()``: they only read
    immutable state (the configuration, and the credentials taken from it at construction), so
    the status writer calls them from its own thread. The mirror is created on first use.
    """

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        url, url_user, url_password = _split_userinfo(config.url)
        self._url = url  # what libgit2 sees: never with credentials in it
        given = config.credentials
        self._credentials = Credentials(
            username=given.username if given.username is not None else url_user,
            password=given.password if given.password is not None else url_password,
            ssh_private_key=given.ssh_private_key,
            ssh_public_key=given.ssh_public_key,
            ssh_passphrase=given.ssh_passphrase,
        )
        self._shown_url = redaction.redact(config.url)
        _set_socket_timeouts(config.fetch_timeout)
        self._repo: pygit2.Repository | None = None
        self._damage: str | None = None  # found while reading: the next fetch starts afresh
        self._trees: dict[pygit2.Oid, _Entries] = {}  # parsed by the last snapshot comparison

    @property
    def repository_path(self) -> Path:
        """The mirror's git directory (bare), which the status writer opens too."""
        return self.config.mirror / _REPOSITORY_DIR

    @property
    def remote_url(self) -> str:
        """The remote's URL without credentials in it (they go through ``remote_callbacks``)."""
        return self._url

    def remote_callbacks(self) -> pygit2.RemoteCallbacks:
        """Callbacks that log in to the remote as fetches do (credentials, certificate
        checks, the time cap from now on), for the status writer's fetches and pushes to the
        same remote: one set per operation."""
        return _Callbacks(self, time.monotonic() + self.config.fetch_timeout)

    @property
    def tracking_ref(self) -> str:
        """The one ref a fetch writes: ``refs/remotes/origin/<branch>``."""
        return f"refs/remotes/origin/{self.config.branch}"

    @contextlib.contextmanager
    def lock(self, timeout: float) -> Iterator[None]:
        """Hold the mirror's exclusive lock (what every fetch holds), waiting up to
        ``timeout`` seconds; SourceError ``MirrorBusy`` when it stays taken."""
        self.config.mirror.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(
            self.config.mirror / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise SourceError(
                            "MirrorBusy",
                            f"the mirror {self.config.mirror} stayed locked by another "
                            f"fetch or writer for {timeout:g} s; give each controller its own "
                            "mirror folder",
                            retryable=True,
                        ) from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(descriptor)  # closing the descriptor releases the lock

    def fetch(self) -> Fetched:
        """Fetch the tracked branch into ``refs/remotes/origin/<branch>``; SourceError when
        the remote cannot be read, the branch is missing, or a cap is exceeded (the mirror
        then still holds the previous revision)."""
        config = self.config
        started = time.monotonic()
        deadline = started + config.fetch_timeout
        with self.lock(config.fetch_timeout):
            try:
                _clear_leftovers(self.repository_path)
                repo = self._open()
            except (OSError, pygit2.GitError) as error:
                raise SourceError(
                    "MirrorUnusable",
                    f"the mirror {self.repository_path} cannot be prepared "
                    f"({redaction.redact(str(error))}); check the folder's permissions and free "
                    "space",
                    retryable=True,
                ) from None
            self._repo = repo
            previous = _target(repo, self.tracking_ref)
            remote = repo.remotes.create_anonymous(self._url)
            callbacks = _Callbacks(self, deadline)
            branch_ref = f"refs/heads/{config.branch}"
            try:
                _trust_ca_bundle(config.ca_bundle)
                remote.fetch(
                    [f"+{branch_ref}:{self.tracking_ref}"],
                    message=f"rciots: fetch {config.branch}",
                    callbacks=callbacks,
                    prune=pygit2.enums.FetchPrune.NO_PRUNE,
                )
                # what the server advertised on this connection: libgit2 fetches nothing, and
                # says nothing, for a branch that is not there
                heads = {head.name: head.oid for head in remote.list_heads(connect=False)}
            except SourceError:
                raise
            except (pygit2.GitError, OSError) as error:
                raise self._classify(error, time.monotonic() - started) from None
        if branch_ref not in heads:
            raise SourceError(
                "BranchNotFound",
                f"branch {config.branch!r} not found on {self._shown_url}; check the branch "
                "name in the source configuration, or push the branch (the last fetched "
                "revision is kept)",
                retryable=False,
            )
        revision = str(heads[branch_ref])
        forced = (
            previous is not None
            and previous != revision
            and not repo.descendant_of(revision, previous)
        )
        if forced:
            log.warning(
                "branch %r of %s was force-pushed: %s does not descend from %s; following "
                "the new head",
                config.branch,
                self._shown_url,
                revision[:12],
                (previous or "")[:12],
            )
        elif previous != revision:
            log.debug("fetched %s of %s: %s", config.branch, self._shown_url, revision[:12])
        return Fetched(revision=revision, previous=previous, forced=forced)

    def snapshot(self, revision: str, previous: snapshots.Snapshot | None) -> snapshots.Snapshot:
        """The ``tenants/`` tree of commit ``revision`` in the mirror, as a Snapshot.

        With ``previous`` (a snapshot of an earlier commit of this mirror), only what changed
        between the two trees is read, and ``changed`` lists every path added, modified or
        deleted (a rename is both paths). The same files are refused as by
        ``snapshots.read_git_revision`` (symlinks, submodules, oversize files: a problem
        each, the file left out). SourceError ``RevisionNotFound`` when the mirror lacks the
        commit.
        """
        repo = self._repo or self._open_existing()
        commit = _commit(repo, revision)
        if commit is None:
            raise SourceError(
                "RevisionNotFound",
                f"commit {revision} is not in the mirror {self.repository_path}; fetch first",
                retryable=True,
            )
        try:
            if previous is not None:
                made = _incremental(repo, previous, commit, self._trees)
                if made is not None:
                    return made
            files, problems = snapshots.read_git_tenants(repo, commit)
        except (KeyError, pygit2.GitError) as error:
            # a tree or blob of the commit is missing or unreadable: the mirror is damaged
            self._damage = f"reading {revision[:12]} failed: {redaction.redact(str(error))}"
            raise SourceError(
                "MirrorCorrupt",
                f"the mirror {self.repository_path} is damaged ({self._damage}); the next "
                "fetch replaces it",
                retryable=True,
            ) from None
        changed = None if previous is None else snapshots.changed_paths(previous, files, problems)
        return snapshots.Snapshot(
            revision=str(commit.id),
            files=MappingProxyType(files),
            problems=tuple(sorted(problems)),
            changed=changed,
        )

    # --- opening and repairing the mirror ---------------------------------------------

    def _open_existing(self) -> pygit2.Repository:
        try:
            repo = pygit2.Repository(
                str(self.repository_path), pygit2.enums.RepositoryOpenFlag.NO_SEARCH
            )
        except (pygit2.GitError, OSError, ValueError, KeyError):
            raise SourceError(
                "MirrorCorrupt",
                f"the mirror {self.repository_path} cannot be opened; the next fetch replaces it",
                retryable=True,
            ) from None
        self._repo = repo
        return repo

    def _open(self) -> pygit2.Repository:
        """The mirror, created when missing and replaced when it cannot be used."""
        path = self.repository_path
        problem, self._damage = self._damage, None
        if not path.exists():
            return _create(path)
        self._repo = repo = None
        try:
            repo = pygit2.Repository(str(path), pygit2.enums.RepositoryOpenFlag.NO_SEARCH)
            if not repo.is_bare:
                problem = "it is not a bare repository"
            else:
                target = _target(repo, self.tracking_ref)
                if target is not None and _commit(repo, target) is None:
                    problem = f"{self.tracking_ref} points at a missing commit {target[:12]}"
        except (pygit2.GitError, OSError, ValueError, KeyError) as error:
            problem = redaction.redact(str(error)) or type(error).__name__
        if problem is None and repo is not None:
            return repo
        repo = None  # close its files before the folder moves
        aside = path.with_name(path.name + _CORRUPT_SUFFIX)
        log.warning(
            "the mirror %s cannot be used (%s); moving it to %s and fetching %s afresh",
            path,
            problem,
            aside,
            self._shown_url,
        )
        try:
            if aside.exists():
                shutil.rmtree(aside)  # keep only the latest damaged copy
            path.rename(aside)
        except OSError as error:
            raise SourceError(
                "MirrorCorrupt",
                f"the mirror {path} cannot be used ({problem}) and cannot be moved aside "
                f"({error.strerror}); remove it by hand",
                retryable=False,
            ) from None
        return _create(path)

    # --- errors -----------------------------------------------------------------------

    def _classify(self, error: BaseException, elapsed: float) -> SourceError:
        """One SourceError for a libgit2 (or OS) error of a fetch."""
        detail = self._scrub(str(error)) or type(error).__name__
        text = detail.lower()
        url, timeout = self._shown_url, self.config.fetch_timeout
        if elapsed >= min(timeout, _MAX_SILENCE) * 0.95 or "timed out" in text:
            return SourceError(
                "Timeout",
                f"fetch from {url} timed out after {elapsed:.1f} s ({detail}); check that the "
                f"remote answers, or raise fetch_timeout (now {timeout:g} s)",
                retryable=True,
            )
        if re.search(r"\b(401|403)\b|authenticat|unauthori[sz]ed|permission denied", text):
            return SourceError(
                "AuthenticationFailed",
                f"{url} refused the credentials ({detail}); check the configured username and "
                "password or token, or the SSH key",
                retryable=False,
            )
        if "certificate" in text or "ssl" in text or "tls" in text:
            return SourceError(
                "CertificateInvalid",
                f"the TLS certificate of {url} is not trusted ({detail}); set ca_bundle to the "
                "CA that signed it",
                retryable=False,
            )
        if re.search(
            r"\b404\b|not found|not exported|no such repo|does not appear to be a git|"
            r"could not find repo",
            text,
        ):
            return SourceError(
                "RepositoryNotFound",
                f"no Git repository at {url} ({detail}); check the source URL",
                retryable=False,
            )
        if re.search(
            r"failed to connect|connection refused|could not resolve|unreachable|"
            r"connection reset|early eof|unexpected eof|hung up|broken pipe|no route",
            text,
        ):
            return SourceError(
                "Unreachable",
                f"cannot reach {url} ({detail}); the last fetched revision is kept and the "
                "fetch is retried",
                retryable=True,
            )
        return SourceError(
            "FetchFailed",
            f"fetch from {url} failed ({detail}); the last fetched revision is kept and the "
            "fetch is retried",
            retryable=True,
        )

    def _scrub(self, text: str) -> str:
        text = redaction.redact(text).replace(self.config.url, self._shown_url)
        for secret in self._credentials.secrets():
            text = text.replace(secret, "***")
        return text


class _Callbacks(pygit2.RemoteCallbacks):
    """libgit2's callbacks for one fetch or push: credentials (each kind offered once: asked
    again means refused), certificate checks, and the size and time caps (raising here aborts
    the fetch or push; pygit2 re-raises the exception from ``fetch`` or ``push``)."""

    def __init__(self, mirror: GitMirror, deadline: float) -> None:
        super().__init__()
        self._mirror = mirror
        self._deadline = deadline
        self._offered: set[pygit2.enums.CredentialType] = set()

    def credentials(
        self,
        url: str,
        username_from_url: str | None,
        allowed_types: pygit2.enums.CredentialType,
    ) -> pygit2.Username | pygit2.UserPass | pygit2.Keypair:
        given = self._mirror._credentials
        shown = self._mirror._shown_url
        username = given.username or username_from_url or "git"
        kinds = pygit2.enums.CredentialType
        if allowed_types & kinds.SSH_KEY:
            kind = kinds.SSH_KEY
            offer: pygit2.Username | pygit2.UserPass | pygit2.Keypair
            if given.ssh_private_key is not None:
                offer = pygit2.Keypair(
                    username,
                    str(given.ssh_public_key) if given.ssh_public_key else None,
                    str(given.ssh_private_key),
                    given.ssh_passphrase or "",
                )
            else:
                offer = pygit2.KeypairFromAgent(username)
        elif allowed_types & kinds.USERPASS_PLAINTEXT:
            if given.password is None:
                raise SourceError(
                    "AuthenticationFailed",
                    f"{shown} asks for a username and password, and none is configured; set "
                    "the source credentials (a token is given as the password)",
                    retryable=False,
                )
            kind, offer = kinds.USERPASS_PLAINTEXT, pygit2.UserPass(username, given.password)
        elif allowed_types & kinds.USERNAME:
            kind, offer = kinds.USERNAME, pygit2.Username(username)
        else:
            raise SourceError(
                "AuthenticationFailed",
                f"{shown} asks for a kind of credentials RCIoTs does not support "
                f"({allowed_types!r}); use a username and token, or an SSH key",
                retryable=False,
            )
        if kind in self._offered:
            raise SourceError(
                "AuthenticationFailed",
                f"{shown} refused the credentials for user {username!r}; check the configured "
                "password or token (or the SSH key), and that it may read the repository",
                retryable=False,
            )
        self._offered.add(kind)
        return offer

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:
        # The default would wave SSH host keys through; libgit2 has checked ~/.ssh/known_hosts
        # (SSH) or the CA chain (HTTPS) and says so in ``valid``: keep to its verdict.
        if not valid:
            raise SourceError(
                "CertificateInvalid",
                f"the certificate or host key of {host.decode(errors='replace')} is not "
                f"trusted ({self._mirror._shown_url}); for HTTPS set ca_bundle to the CA that "
                "signed it, for SSH add the host key to ~/.ssh/known_hosts",
                retryable=False,
            )
        return True

    def transfer_progress(self, stats: pygit2.remotes.TransferProgress) -> None:
        limit = self._mirror.config.max_fetch_bytes
        if stats.received_bytes > limit:
            raise SourceError(
                "TooLarge",
                f"fetch from {self._mirror._shown_url} stopped after {stats.received_bytes} "
                f"bytes, over max_fetch_bytes ({limit}); raise it if the fleet repo really is "
                "this large, or remove large files from its history",
                retryable=False,
            )
        self._check_deadline()

    def sideband_progress(self, string: str) -> None:
        self._check_deadline()

    def push_transfer_progress(
        self, objects_pushed: int, total_objects: int, bytes_pushed: int
    ) -> None:
        self._check_deadline("push to")

    def _check_deadline(self, what: str = "fetch from") -> None:
        if time.monotonic() > self._deadline:
            timeout = self._mirror.config.fetch_timeout
            raise SourceError(
                "Timeout",
                f"{what} {self._mirror._shown_url} ran past fetch_timeout ({timeout:g} s); "
                "check the remote's speed, or raise fetch_timeout",
                retryable=True,
            )


# --- helpers -------------------------------------------------------------------------------


def _split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without ``user:password@``, and the (percent-decoded) user and password."""
    if "://" not in url:
        return url, None, None  # a path (or scp-like user@host:path, which holds no secret)
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    clean = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return (
        clean,
        urllib.parse.unquote(user) if user else None,
        urllib.parse.unquote(password) if colon else None,
    )


_settings_lock = threading.Lock()
_trusted_bundles: set[tuple[str, int]] = set()


def _set_socket_timeouts(fetch_timeout: float) -> None:
    """libgit2's socket timeouts, for connecting and for a server that stops sending, from a
    mirror's ``fetch_timeout``; process-global, and kept (see the module doc)."""
    silence = int(max(0.05, min(fetch_timeout, _MAX_SILENCE)) * 1000)
    with _settings_lock:
        pygit2.settings.server_connect_timeout = silence
        pygit2.settings.server_timeout = silence


def _trust_ca_bundle(bundle: Path | None) -> None:
    """Have libgit2 trust ``bundle`` (process-global, and kept: see the module doc)."""
    if bundle is None:
        return
    try:
        key = (str(bundle), bundle.stat().st_mtime_ns)
    except OSError as error:
        raise SourceError(
            "CertificateInvalid",
            f"the CA bundle {bundle} cannot be read ({error.strerror}); fix ca_bundle in the "
            "source configuration",
            retryable=False,
        ) from None
    with _settings_lock:
        if key in _trusted_bundles:
            return
        try:
            pygit2.settings.set_ssl_cert_locations(str(bundle), None)
        except pygit2.GitError as error:
            raise SourceError(
                "CertificateInvalid",
                f"the CA bundle {bundle} cannot be loaded ({error}); it must be a file of PEM "
                "certificates",
                retryable=False,
            ) from None
        _trusted_bundles.add(key)


def _create(path: Path) -> pygit2.Repository:
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("creating the source mirror %s", path)
    return pygit2.init_repository(str(path), bare=True)


def _target(repo: pygit2.Repository, ref: str) -> str | None:
    reference = repo.references.get(ref)
    return None if reference is None else str(reference.target)


def _commit(repo: pygit2.Repository, revision: str) -> pygit2.Commit | None:
    try:
        found = repo.get(revision)
    except (ValueError, KeyError, pygit2.GitError):
        return None
    return found if isinstance(found, pygit2.Commit) else None


def _clear_leftovers(repository: Path) -> None:
    """Remove what a crashed writer left behind and would make later fetches fail or grow the
    mirror: Git lock files and temporary or incomplete packs. The caller holds the mirror
    lock, so no fetch is running; another writer (the status writer) may be, so lock files
    it could hold are removed only once they are clearly old."""
    if not repository.is_dir():
        return
    now = time.time()
    # written only under the mirror lock, which the caller holds: by fetches, and by the status
    # writer (refs/remotes/origin/<status branch>); a lock file there is a crash's leftover
    ours = repository / "refs" / "remotes" / "origin"
    for lock in _lock_files(repository):
        with contextlib.suppress(OSError):
            stale = lock.is_relative_to(ours) or lock.name == "FETCH_HEAD.lock"
            if stale or now - lock.lstat().st_mtime > _STALE_LOCK_AGE:
                lock.unlink()
                log.warning("removed the stale lock file %s, left by a crashed writer", lock)
    packs = repository / "objects" / "pack"
    if not packs.is_dir():
        return
    names = {entry.name for entry in packs.iterdir()}
    for name in names:
        stem, dot, extension = name.rpartition(".")
        leftover = (
            name.startswith("tmp_")  # git's temporary packs and indexes
            or "_git2_" in name  # libgit2's temporary files
            or (dot and extension == "pack" and f"{stem}.idx" not in names)
            or (dot and extension == "idx" and f"{stem}.pack" not in names)
        )
        if leftover:
            with contextlib.suppress(OSError):
                (packs / name).unlink()
                log.warning("removed %s, left by an interrupted fetch", packs / name)


def _lock_files(repository: Path) -> Iterator[Path]:
    """The ``*.lock`` files of a repository where Git and libgit2 write them: the top level
    (HEAD, config, packed-refs, FETCH_HEAD), ``refs/`` and ``logs/``. Not ``objects/``, which
    grows with every status commit and would make each fetch walk it."""
    yield from repository.glob("*.lock")
    for folder in ("refs", "logs"):
        yield from (repository / folder).rglob("*.lock")


def _tenants_tree(commit: pygit2.Commit) -> pygit2.Tree | bool | None:
    """The commit's ``tenants`` tree; None when there is none; False when ``tenants`` is not
    a folder (a file or a link: the full reader reports it)."""
    try:
        top = commit.tree / layout.TENANTS_DIR
    except KeyError:
        return None
    return top if isinstance(top, pygit2.Tree) else False


def _incremental(
    repo: pygit2.Repository,
    previous: snapshots.Snapshot,
    commit: pygit2.Commit,
    known: dict[pygit2.Oid, _Entries],
) -> snapshots.Snapshot | None:
    """The snapshot of ``commit`` made from ``previous`` and a tree-to-tree comparison; None
    when that is not possible (the previous commit is unknown here, or either side's
    ``tenants`` is missing or not a folder): the caller then reads the whole tree."""
    old_commit = _commit(repo, previous.revision)
    if old_commit is None:
        return None
    old_top, new_top = _tenants_tree(old_commit), _tenants_tree(commit)
    if not isinstance(old_top, pygit2.Tree) or not isinstance(new_top, pygit2.Tree):
        return None
    if len(new_top.id.raw) != 20:
        return None  # a SHA-256 repository: raw trees are parsed for 20-byte ids only
    changed, arrived = _compare_trees(repo, layout.TENANTS_DIR, old_top, new_top, known)
    # copy() of the proxy copies the dict underneath at C speed (dict(proxy) is ten times
    # slower: it goes through the mapping protocol)
    files = (
        previous.files.copy()
        if isinstance(previous.files, MappingProxyType)
        else dict(previous.files)
    )
    for path in changed:
        files.pop(path, None)
    problems = [problem for problem in previous.problems if problem.path not in changed]
    for path, mode, oid in arrived:
        content = snapshots.read_git_entry(repo, path, mode, oid)
        if isinstance(content, Diagnostic):
            problems.append(content)
        else:
            files[path] = content
    return snapshots.Snapshot(
        revision=str(commit.id),
        files=MappingProxyType(files),
        problems=tuple(sorted(problems)),
        changed=frozenset(changed),
    )


_Leaf = tuple[str, int, pygit2.Oid]  # path, file mode, object id of a non-folder entry
_TREE_MODE = b"40000"
# one entry of a raw tree object: "<octal mode> <name>\0<20-byte id>" (SHA-1 repositories)
_RAW_ENTRY = re.compile(rb"([0-7]+) ([^\0]*)\0(.{20})", re.DOTALL)


_Entries = dict[bytes, tuple[bytes, bytes]]


def _raw_entries(
    repo: pygit2.Repository, tree_id: pygit2.Oid | None, known: dict[pygit2.Oid, _Entries]
) -> _Entries:
    """name -> (mode, id) of a tree, parsed from its raw object: a folder of 10,000 devices
    is read in a few ms, where making a pygit2 object per entry costs ten times more."""
    if tree_id is None:
        return {}
    entries = known.get(tree_id)
    if entries is None:
        raw = repo.odb.read(tree_id)[1]
        entries = {name: (mode, oid) for mode, name, oid in _RAW_ENTRY.findall(raw)}
    return entries


def _compare_trees(
    repo: pygit2.Repository,
    prefix: str,
    old: pygit2.Tree,
    new: pygit2.Tree,
    known: dict[pygit2.Oid, _Entries],
) -> tuple[set[str], list[_Leaf]]:
    """Every non-folder path that differs between two trees (added, deleted, or changed in
    content or mode; a rename is its two paths), and the new side's entries for those that
    exist in ``new``. Subtrees with the same id are skipped unread, which is what makes one
    changed file among 20,000 cost a few ms: libgit2's tree diff parses every subtree of both
    sides (30+ ms there). ``known`` holds trees parsed by the previous comparison (the old
    side now was the new side then); it is left holding this comparison's new side."""
    changed: set[str] = set()
    parsed: dict[pygit2.Oid, _Entries] = {}
    arrived: list[_Leaf] = []
    # an explicit stack rather than recursion: tree depth comes from the repo's author
    stack: list[tuple[str, pygit2.Oid | None, pygit2.Oid | None]] = [(prefix, old.id, new.id)]
    while stack:
        path, before, after = stack.pop()
        old_entries = _raw_entries(repo, before, known)
        new_entries = _raw_entries(repo, after, known)
        if after is not None:
            parsed[after] = new_entries
        for name in old_entries.keys() | new_entries.keys():
            was, now = old_entries.get(name), new_entries.get(name)
            if was == now:
                continue  # the same mode and id: nothing below it changed
            child = f"{path}/{name.decode('utf-8', 'surrogateescape')}"
            was_folder = was is not None and was[0] == _TREE_MODE
            now_folder = now is not None and now[0] == _TREE_MODE
            if was_folder or now_folder:
                stack.append(
                    (
                        child,
                        pygit2.Oid(raw=was[1]) if was is not None and was_folder else None,
                        pygit2.Oid(raw=now[1]) if now is not None and now_folder else None,
                    )
                )
            if was is not None and not was_folder:
                changed.add(child)
            if now is not None and not now_folder:
                changed.add(child)
                arrived.append((child, int(now[0], 8), pygit2.Oid(raw=now[1])))
    known.clear()
    known.update(parsed)
    return changed, arrived
