"""Real Git servers on loopback for tests, and the remotes they serve.

The controller's Git source (and the status writer's pushes) are tested against real servers,
never mocks:

- ``GitDaemon``: ``git daemon`` on 127.0.0.1 serving every bare repo under a root as
  ``git://127.0.0.1:PORT/NAME``, pushes allowed. ``stop()`` then ``start()`` brings it back on
  the same port, for "remote down, then up again".
- ``GitHttpServer``: smart HTTP through ``git http-backend`` run as a CGI by a small WSGI app on
  a threaded stdlib server; optional HTTP basic auth (401 without the right credentials),
  optional TLS with a throwaway CA (``make_tls_files``; point pygit2 at ``TlsFiles.ca_cert``),
  optional latency per request (a slow remote); pushes allowed (``http.receivepack``).
- ``Remote``: a bare repo with a working clone beside it, seeded from a folder (such as
  fleet-repo-example), and ``commit`` / ``force_push`` / ``delete_branch`` through the git
  command line, the way people change a fleet repo.

Fixtures (registered for every test module by conftest.py): ``git_daemon``, ``git_http``,
``tls_files`` and ``git_https`` (TLS plus basic auth with ``HTTP_USER``/``HTTP_PASSWORD``).
Other modules import the helpers with ``from tests import gitserver``. Servers wait for
readiness by polling their port; every server a fixture starts is stopped in its teardown.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import os
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO
from wsgiref import simple_server

import pytest

from rciots.controller import castore

__all__ = [
    "GIT_IDENTITY",
    "HTTP_PASSWORD",
    "HTTP_USER",
    "GitDaemon",
    "GitHttpServer",
    "Remote",
    "Request",
    "TlsFiles",
    "free_port",
    "git",
    "git_daemon",
    "git_http",
    "git_https",
    "make_remote",
    "make_tls_files",
    "run_git",
    "tls_files",
    "wait_for_port",
]

# A fixed identity, so that commits made by tests never depend on the machine's git config.
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}
# Throwaway repos need no fsync (it costs this machine ~100 ms per push) and no auto gc.
_GIT_CONFIG = {"core.fsync": "none", "gc.auto": "0"}
HTTP_USER = "fleet-bot"
HTTP_PASSWORD = "s3cret-token-value"  # the git_https fixture's password; tests grep for it

_READY_TIMEOUT = 5.0


def _config_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Git configuration for every git process a helper starts, as environment variables."""
    settings = {**_GIT_CONFIG, **(extra or {})}
    env = {"GIT_CONFIG_COUNT": str(len(settings))}
    for index, (key, value) in enumerate(settings.items()):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def run_git(cwd: Path | None, *args: str) -> str:
    """Run the git command line (in ``cwd`` when given) with a fixed identity; its stdout.
    CalledProcessError, with git's stderr, when git fails."""
    command = ["git", *(["-C", str(cwd)] if cwd is not None else []), *args]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **GIT_IDENTITY, **_config_env()}
    )
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr)
    return done.stdout


def git(cwd: Path | None, *args: str) -> str:
    """``run_git``'s stdout without the whitespace around it (a commit id, a listing)."""
    return run_git(cwd, *args).strip()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(
    port: int,
    *,
    timeout: float = _READY_TIMEOUT,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """Poll until something accepts TCP connections on 127.0.0.1:``port``. RuntimeError when
    ``alive()`` turns false (the server died) or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            pass
        if not alive():
            raise RuntimeError(f"the server meant for port {port} exited before it listened")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listened on 127.0.0.1:{port} after {timeout} s")
        time.sleep(0.005)


# --- git daemon ----------------------------------------------------------------------------


class GitDaemon:
    """``git daemon`` serving the bare repos under ``root`` on 127.0.0.1 (pushes enabled).

    The port is chosen on the first ``start()`` (or given) and kept, so that ``stop()`` and
    ``start()`` again simulate a remote that goes down and comes back at the same address.
    """

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None
        self._log = root.parent / f"{root.name}-git-daemon.log"

    def url(self, name: str) -> str:
        assert self.port is not None, "start the daemon first"
        return f"git://127.0.0.1:{self.port}/{name}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        # A port picked by free_port() can be taken before the daemon binds it: pick again,
        # unless the caller fixed the port (a restart must come back on the same one).
        for _attempt in range(3 if self.port is None else 1):
            port = self.port if self.port is not None else free_port()
            if self._spawn(port):
                self.port = port
                return
        raise RuntimeError(f"git daemon did not start; see {self._log}")

    def _spawn(self, port: int) -> bool:
        with self._log.open("ab") as log:
            process = subprocess.Popen(
                [
                    "git",
                    "daemon",
                    "--reuseaddr",
                    "--export-all",
                    "--informative-errors",
                    "--enable=receive-pack",
                    "--listen=127.0.0.1",
                    f"--port={port}",
                    f"--base-path={self.root}",
                    str(self.root),
                ],
                stdin=subprocess.DEVNULL,
                env={**os.environ, **_config_env()},
                stdout=log,
                stderr=log,
                # its own process group: stop() ends the daemon and the children it forked
                # for open connections, and nothing else
                start_new_session=True,
            )
        try:
            wait_for_port(port, alive=lambda: process.poll() is None)
        except RuntimeError:
            _end_process_group(process)
            return False
        self._process = process
        return True

    def stop(self) -> None:
        if self._process is not None:
            _end_process_group(self._process)
            self._process = None

    def __enter__(self) -> GitDaemon:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _end_process_group(process: subprocess.Popen[bytes]) -> None:
    """End a process started with start_new_session=True and its group, by its id."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- TLS material --------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throwaway CA and a server certificate it signed for 127.0.0.1 and
    localhost. Give ``ca_cert`` to the client (pygit2: the source's CA bundle)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A new CA in ``directory`` (the controller's own, ``castore``: EC P-256) and its server
    certificate for 127.0.0.1 and localhost."""
    castore.load_or_create(
        directory, ["127.0.0.1", "localhost"], datetime.datetime.now(datetime.UTC)
    )
    return TlsFiles(
        ca_cert=directory / "root.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
    )


# --- smart HTTP (git http-backend) ---------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request a GitHttpServer answered (for assertions)."""

    method: str
    path: str
    query: str
    status: int


class GitHttpServer:
    """Smart HTTP(S) for the bare repos under ``root``: ``git http-backend`` behind a threaded
    WSGI server on 127.0.0.1, at ``url(name)``.

    ``auth`` (user, password) requires HTTP basic auth on every request (401 otherwise);
    ``tls`` serves HTTPS with that certificate; ``delay`` seconds are waited before each
    request is answered (a slow remote). ``stop()`` then ``start()`` keeps the port.
    """

    def __init__(
        self,
        root: Path,
        *,
        auth: tuple[str, str] | None = None,
        tls: TlsFiles | None = None,
        delay: float = 0.0,
        port: int | None = None,
    ) -> None:
        self.root = root
        self.auth = auth
        self.tls = tls
        self.delay = delay
        self.port = port
        self.requests: list[Request] = []  # answered, in order
        self.arrivals = 0  # requests received so far, counted before ``delay``
        self._lock = threading.Lock()
        self._server: _ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def url(self, name: str, *, user: str | None = None, password: str | None = None) -> str:
        """The URL of repo ``name``, with ``user:password@`` in it when given."""
        assert self.port is not None, "start the server first"
        userinfo = ""
        if user is not None:
            userinfo = user + (f":{password}" if password is not None else "") + "@"
        return f"{self.scheme}://{userinfo}127.0.0.1:{self.port}/{name}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.tls.server_cert, self.tls.server_key)
        server = _ThreadingWSGIServer(
            ("127.0.0.1", self.port or 0), _QuietHandler, tls=context, on_error=self._record
        )
        server.set_app(self._app)
        self.port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        wait_for_port(self.port, alive=thread.is_alive)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None and thread is not None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def __enter__(self) -> GitHttpServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        with self._lock:
            self.arrivals += 1
        if self.delay:
            time.sleep(self.delay)
        user = _basic_user(environ.get("HTTP_AUTHORIZATION", ""), self.auth)
        if self.auth is not None and user is None:
            self._record(Request(method, path, query, 401))
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="git"'), ("Content-Type", "text/plain")],
            )
            return [b"authentication required\n"]
        body = _read_body(environ)
        cgi_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": environ.get("REMOTE_ADDR", "127.0.0.1"),
            "REMOTE_USER": user or "",
            "GIT_PROTOCOL": environ.get("HTTP_GIT_PROTOCOL", ""),
            "HTTP_CONTENT_ENCODING": environ.get("HTTP_CONTENT_ENCODING", ""),
            # pushes over HTTP, for every repo served, without editing each repo's config
            **_config_env({"http.receivepack": "true"}),
        }
        done = subprocess.run(
            ["git", "http-backend"], input=body, capture_output=True, env=cgi_env, timeout=60
        )
        status, headers, payload = _parse_cgi(done.stdout)
        self._record(Request(method, path, query, int(status.split()[0])))
        start_response(status, headers)
        return [payload]


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True
    block_on_close = False  # a client that hangs must not hold up stop()
    allow_reuse_address = True  # restart on the same port while old connections linger

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[simple_server.WSGIRequestHandler],
        *,
        tls: ssl.SSLContext | None,
        on_error: Callable[[Request], None],
    ) -> None:
        self.tls = tls
        self.on_error = on_error
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        # The TLS handshake happens here, in the connection's own thread, so that a slow or
        # failing handshake never holds up accept().
        with self.tls.wrap_socket(request, server_side=True) as wrapped:
            super().finish_request(wrapped, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gives up (a refused certificate, a fetch aborted by its size cap)
        # is part of what the tests do; record it instead of printing a traceback.
        self.on_error(Request("?", "?", "", 0))


class _QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _basic_user(header: str, auth: tuple[str, str] | None) -> str | None:
    """The user named by a valid basic ``Authorization`` header, else None."""
    if auth is None or not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user if (user, password) == auth else None


def _read_body(environ: Mapping[str, Any]) -> bytes:
    """The request body, chunked (libgit2 and git send pushes that way) or sized."""
    stream: BinaryIO = environ["wsgi.input"]
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int(stream.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while stream.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(body)
            body += stream.read(size)
            stream.readline()  # the CRLF after each chunk
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return stream.read(length) if length else b""


def _parse_cgi(output: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    """Split a CGI response into WSGI status, headers and body."""
    ends = [i for i in (output.find(b"\r\n\r\n"), output.find(b"\n\n")) if i >= 0]
    if not ends:
        return "502 Bad Gateway", [("Content-Type", "text/plain")], b"bad CGI output\n"
    end = min(ends)
    separator = 4 if output[end : end + 4] == b"\r\n\r\n" else 2
    head, body = output[:end].decode("latin-1"), output[end + separator :]
    status = "200 OK"
    headers: list[tuple[str, str]] = []
    for line in head.splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = value.strip()
        elif name:
            headers.append((name.strip(), value.strip()))
    return status, headers, body


# --- remotes -------------------------------------------------------------------------------


@dataclass
class Remote:
    """A bare repo (``bare``, what a server serves) and a working clone (``work``) that
    changes it with the git command line, as people do."""

    bare: Path
    work: Path
    branch: str = "main"

    def head(self) -> str:
        """The commit id the bare repo's branch points to."""
        return run_git(self.bare, "rev-parse", f"refs/heads/{self.branch}").strip()

    def commit(
        self,
        files: Mapping[str, str | bytes | None],
        message: str = "change",
        *,
        symlinks: Mapping[str, str] | None = None,
        gitlinks: Mapping[str, str] | None = None,
        push: bool = True,
    ) -> str:
        """Write (text or bytes), delete (None) files and make symlinks (path -> target) in the
        working clone, add submodule entries (path -> commit id), commit everything and push
        it to the branch; the new commit id."""
        _write_files(self.work, files, symlinks or {})
        run_git(self.work, "add", "-A")
        for path, commit in (gitlinks or {}).items():
            run_git(self.work, "update-index", "--add", "--cacheinfo", f"160000,{commit},{path}")
        run_git(self.work, "commit", "-q", "--allow-empty", "-m", message)
        if push:
            run_git(self.work, "push", "-q", "origin", f"HEAD:refs/heads/{self.branch}")
        return run_git(self.work, "rev-parse", "HEAD").strip()

    def rename(self, old: str, new: str, message: str = "rename") -> str:
        """``git mv`` a file or folder, commit and push; the new commit id."""
        (self.work / new).parent.mkdir(parents=True, exist_ok=True)
        run_git(self.work, "mv", old, new)
        return self.commit({}, message)

    def force_push(self, files: Mapping[str, str | bytes | None], message: str = "rewrite") -> str:
        """Replace the branch with a new root commit that shares no history with it (a
        force-push); the new commit id."""
        run_git(self.work, "checkout", "-q", "--orphan", "rewritten")
        run_git(self.work, "rm", "-q", "-r", "-f", "--ignore-unmatch", ".")
        _write_files(self.work, files, {})
        run_git(self.work, "add", "-A")
        run_git(self.work, "commit", "-q", "--allow-empty", "-m", message)
        run_git(self.work, "push", "-q", "-f", "origin", f"HEAD:refs/heads/{self.branch}")
        run_git(self.work, "branch", "-q", "-M", self.branch)
        return run_git(self.work, "rev-parse", "HEAD").strip()

    def delete_branch(self) -> None:
        """Delete the branch on the bare repo (its commits stay in the working clone)."""
        run_git(self.bare, "symbolic-ref", "HEAD", "refs/heads/unborn")
        run_git(self.bare, "update-ref", "-d", f"refs/heads/{self.branch}")


def make_remote(
    bare: Path,
    *,
    source: Path | None = None,
    files: Mapping[str, str | bytes | None] | None = None,
    branch: str = "main",
    work: Path | None = None,
) -> Remote:
    """A bare repo at ``bare`` with one commit on ``branch``: a copy of the folder ``source``
    (such as fleet-repo-example) plus ``files``. The working clone is ``work`` (default: a
    sibling of the bare repo named ``<name>.work``)."""
    run_git(None, "init", "-q", "--bare", "-b", branch, str(bare))
    work = work or bare.with_name(f"{bare.name.removesuffix('.git')}.work")
    run_git(None, "init", "-q", "-b", branch, str(work))
    run_git(work, "remote", "add", "origin", str(bare))
    if source is not None:
        shutil.copytree(source, work, dirs_exist_ok=True)
    remote = Remote(bare=bare, work=work, branch=branch)
    remote.commit(files or {}, "seed")
    return remote


def _write_files(
    root: Path, files: Mapping[str, str | bytes | None], symlinks: Mapping[str, str]
) -> None:
    for relative, content in files.items():
        target = root / relative
        if content is None:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
            continue
        # replace whatever is there: a link is replaced, never written through; a folder
        # gives way to a file
        if target.is_symlink():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    for relative, link_target in symlinks.items():
        link = root / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        link.symlink_to(link_target)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    """A running ``git daemon`` serving ``tmp_path/served`` (put bare repos there)."""
    with GitDaemon(tmp_path / "served") as daemon:
        yield daemon


@pytest.fixture
def git_http(tmp_path: Path) -> Iterator[GitHttpServer]:
    """A running plain-HTTP smart Git server, no auth, serving ``tmp_path/served-http``."""
    with GitHttpServer(tmp_path / "served-http") as server:
        yield server


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and server certificate for 127.0.0.1 (one per test session)."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def git_https(tmp_path: Path, tls_files: TlsFiles) -> Iterator[GitHttpServer]:
    """A running HTTPS smart Git server with basic auth (HTTP_USER, HTTP_PASSWORD), serving
    ``tmp_path/served-https``; its certificate is signed by ``tls_files.ca_cert``."""
    with GitHttpServer(
        tmp_path / "served-https", auth=(HTTP_USER, HTTP_PASSWORD), tls=tls_files
    ) as server:
        yield server
