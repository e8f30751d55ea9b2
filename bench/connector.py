"""Benchmark: the connector, with agents as real mutual-TLS WebSocket clients in other processes.

Every figure comes from the real controller (``service.Controller``: Git source, reconcile,
connector, status writer) in a process of its own. Its fleet repo is a bare repo served by
``git daemon`` on loopback (a remote, as in production: the status branch is pushed there);
commits are made in a working copy and pushed to it. Devices are enrolled for real: keys and
CSRs made here, decided, signed and recorded by the controller's own ``Enroller`` (the code
behind ``POST /v1/enroll``, without the HTTP round trip), so the certificates and device tokens
are checked by the connector as any agent's. The agents run in one or two other processes
(``--clients``; the open-file limit of about 20,000 per process rules out 10,000 in one), each
a ``websockets`` client with its own certificate, speaking the real protocol
(``rciots.agent.protocol.AgentSession``): hello, status at the interval the welcome gives, and
every desired answered at once with ``applied``, every resource ok (a simulated applier that
writes nothing: the agents share the machine's two cores with the controller).

(a) idle: N agents connect and get in sync (the desired state on connect, applied), in two
    waves of N/2; the connector process's RSS after each wave (after a collection and a
    malloc_trim). ``kb_per_connection`` is the second wave's growth over its agents (the first
    wave may still reuse heap that start-up freed), ``kb_per_connection_all`` the growth over
    all N; also its CPU per connect and while idle. Reference, measured the same way: N plain
    mutual-TLS connections (same certificates, same server context, no WebSocket, no session)
    held by a bare asyncio server, with the connector's TLS buffer (``tls``) and, at the first
    N only, asyncio's default one (``tls-default``). Target: 10,000 agents on one process at
    <= 100 KB (100,000 bytes) per connection. ``--tracemalloc``: one more run at the first N
    with Python's allocations traced (slower; the top allocation sites go to stderr).
(b) fanout: N agents in sync on one template (it puts each device's id into its Deployment, so
    every bundle differs, as in real fleets); a commit changes the template's image tag, is
    pushed, and wakes the source (what the push webhook does); the time from the push to the
    last agent's ``applied`` reaching the controller (it then checks its observed state), split
    into fetch, reconcile pass, push and the agents' answers. References: the reconcile alone,
    and a ping to every agent until every pong is back (a no-op fanned out over the same
    sessions and processes). Target: <= 5 s for 1,000 agents, every round.
(c) wire: a template rendering about 50 KB; two agents, one offering permessage-deflate (as
    ``rciots-agent`` does) and one not; the desired messages' size as text and as WebSocket
    frames on the wire (header included; TLS adds ~22 bytes per record), full (on connect) and
    delta (after each one-line change: an image tag). Target: <= 1 KB (1,000 bytes).

Run: .venv/bin/python bench/connector.py [--only idle fanout wire] [--idle 1000 10000]
     [--fanout 1000] [--rounds 3] [--wire-kb 50] [--clients 2] [--tracemalloc]

It takes about ten minutes (enrolling and connecting 10,000 agents is most of it) and prints
one JSON document (progress goes to stderr). Each measurement runs the controller in a fresh
process, in a scratch folder that is removed at the end, with every process it started.
Internal: ``scenario`` and ``agents`` run those processes.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import contextlib
import ctypes
import gc
import hashlib
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.extensions.base import Extension
from websockets.frames import DATA_OPCODES, Frame, Opcode
from websockets.typing import ExtensionName

from rciots.agent import protocol
from rciots.agent.bundle import ApplyResult, Bundle, ResourceResult
from rciots.controller import (
    connector,
    enrollment,
    gitsource,
    observed,
    service,
    snapshots,
    tokens,
)

TENANT = "bench"
TOKEN_NAME = "bench"  # noqa: S105 -- a file name, not a secret
TEMPLATE = "app"
SCRIPT = Path(__file__).resolve()

# -- the fleets ----------------------------------------------------------------------------------

# the last resource of a template, and the device's id copied into its Deployments
IDENTITY = "- ../../device-identity\n"
REPLACEMENT = """\
replacements:
- source:
    kind: ConfigMap
    name: rciots-device-identity
    fieldPath: data.id
  targets:
  - select:
      kind: Deployment
    fieldPaths:
    - spec.template.spec.containers.0.env.[name=DEVICE_ID].value
"""


def deployment(name: str, image: str, env: int = 0) -> str:
    variables = "".join(
        f"        - name: SETTING_{i:02d}\n          value: {name}-{i:02d}-{noise(name, i)}\n"
        for i in range(env)
    )
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: {name}
        image: {image}
        ports:
        - {{containerPort: 8080, name: http}}
        env:
        - name: DEVICE_ID
          value: unset
{variables}        resources:
          limits: {{cpu: 200m, memory: 128Mi}}
"""


def noise(name: str, number: int) -> str:
    """A value that compresses as poorly as real settings (hosts, keys, ids) do."""
    return hashlib.sha256(f"{name}/{number}".encode()).hexdigest()[: 8 + number % 24]


def small_template() -> dict[str, str]:
    """(a): one Deployment that knows its device's id."""
    return {
        "kustomization.yaml": "resources:\n- deployment.yaml\n" + IDENTITY + REPLACEMENT,
        "deployment.yaml": deployment("agent-app", "registry.example.com/edge/app:1.0.0"),
    }


def collector_template(tag: str) -> dict[str, str]:
    """(b): a Deployment with its ServiceAccount, Service and generated ConfigMap and Secret
    (whose hashed names the Deployment refers to), the device id copied into it."""
    app = deployment("collector", f"registry.example.com/edge/collector:{tag}", env=4)
    app = app.replace(
        "        resources:\n",
        "        envFrom:\n        - configMapRef: {name: collector-settings}\n"
        "        - secretRef: {name: collector-credentials}\n        resources:\n",
    ).replace("      containers:\n", "      serviceAccountName: collector\n      containers:\n")
    return {
        "kustomization.yaml": (
            "resources:\n- deployment.yaml\n- service.yaml\n- serviceaccount.yaml\n"
            + IDENTITY
            + "configMapGenerator:\n- name: collector-settings\n  literals:\n"
            "  - LOG_LEVEL=info\n  - BROKER=mqtt://broker:1883\n  files:\n  - app.conf\n"
            "secretGenerator:\n- name: collector-credentials\n  literals:\n"
            "  - username=device\n  - password=change-me\n" + REPLACEMENT
        ),
        "deployment.yaml": app,
        "app.conf": "listen 8080\nworkers 2\ncache /data/cache\n",
        "service.yaml": (
            "apiVersion: v1\nkind: Service\nmetadata: {name: collector}\nspec:\n"
            "  selector: {app: collector}\n  ports:\n  - {port: 80, targetPort: http}\n"
        ),
        "serviceaccount.yaml": (
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: collector}\n"
        ),
    }


def wire_template(kilobytes: int, tag: str) -> dict[str, str]:
    """(c): Deployments with 30 settings each, as many as make about ``kilobytes``; the first
    one's image tag is what changes."""
    files: dict[str, str] = {}
    size = 0
    number = 0
    while size < kilobytes * 1024:
        image = f"registry.example.com/edge/app-{number:02d}:{tag if number == 0 else '1.0.0'}"
        text = deployment(f"app-{number:02d}", image, env=30)
        files[f"app-{number:02d}.yaml"] = text
        size += len(text)
        number += 1
    listing = "".join(f"- {name}\n" for name in files)
    files["kustomization.yaml"] = "resources:\n" + listing + IDENTITY + REPLACEMENT
    return files


@dataclass(frozen=True)
class Fleet:
    """A scratch fleet: a working copy that commits and pushes to a bare repo, which
    ``git daemon`` serves to the controller (a remote, as in production: the status branch
    is pushed there too); the controller's state folder; the enrolled agents' identities."""

    folder: Path

    @property
    def work(self) -> Path:
        return self.folder / "work"

    @property
    def served(self) -> Path:
        return self.folder / "served"

    @property
    def state(self) -> Path:
        return self.folder / "state"

    @property
    def identities(self) -> Path:
        return self.folder / "identities"


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def write_template(fleet: Fleet, files: dict[str, str]) -> None:
    for name, text in files.items():
        target = fleet.work / "tenants" / TENANT / "templates" / TEMPLATE / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def commit_and_push(fleet: Fleet, message: str) -> None:
    git(fleet.work, "commit", "-qam", message)
    git(fleet.work, "push", "-q", "origin", "main")


def make_fleet(folder: Path, template: dict[str, str], devices: int) -> Fleet:
    """A repo with one tenant, one automatic token giving the template, and ``devices``
    devices enrolled through the controller's own Enroller."""
    fleet = Fleet(folder)
    token = tokens.generate_token()
    top = fleet.work / "tenants" / TENANT
    (top / "tokens").mkdir(parents=True)
    (top / "tenant.yaml").write_text(
        f"apiVersion: rciots.io/v1\nkind: Tenant\nmetadata:\n  name: {TENANT}\nspec: {{}}\n"
    )
    (top / "tokens" / f"{TOKEN_NAME}.yaml").write_text(
        tokens.render_token_file(
            TOKEN_NAME, tokens.hash_token(token), approval="auto", template=TEMPLATE
        )
    )
    write_template(fleet, template)
    git(fleet.work, "init", "-q", "-b", "main")
    git(fleet.work, "add", "-A")
    git(fleet.work, "commit", "-qm", "fleet")
    fleet.served.mkdir()
    git(fleet.served, "init", "-q", "--bare", "-b", "main", "fleet.git")
    git(fleet.work, "remote", "add", "origin", str(fleet.served / "fleet.git"))
    git(fleet.work, "push", "-q", "origin", "main")
    asyncio.run(enroll(fleet, token, devices))
    return fleet


@contextlib.contextmanager
def git_daemon(fleet: Fleet) -> Iterator[str]:
    """``git daemon`` serving the fleet's bare repo on loopback, pushes allowed; its URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--enable=receive-pack",
            "--listen=127.0.0.1",
            f"--port={port}",
            f"--base-path={fleet.served}",
            str(fleet.served),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: the children it forks end with it
    )
    try:
        deadline = time.monotonic() + 10
        while not listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("git daemon did not start")
            time.sleep(0.02)
        yield f"git://127.0.0.1:{port}/fleet.git"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def controller_settings(fleet: Fleet, source: str, connector_on: bool) -> service.Settings:
    return service.Settings(
        source=source,
        state_dir=fleet.state,
        poll_interval=3600.0,  # fetches come from wake(), as from the push webhook
        status_window=1.0,
        enrollment=service.EnrollmentSettings(listen=None),
        agents=connector.ConnectorSettings(
            listen=("127.0.0.1", 0) if connector_on else None,
        ),
    )


async def enroll(fleet: Fleet, token: str, devices: int) -> None:
    with git_daemon(fleet) as source:
        running = service.Controller(controller_settings(fleet, source, connector_on=False))
        await running.start()
        try:
            await asyncio.to_thread(enroll_all, running, token, devices, fleet.identities)
        finally:
            await running.stop()


def enroll_all(running: service.Controller, token: str, devices: int, folder: Path) -> None:
    """In a worker thread: each device makes its key and CSR, the Enroller decides, signs
    and records; each identity is written where the agents' processes read it."""
    assert running.enroller is not None
    folder.mkdir()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    agents = []
    started = time.perf_counter()
    for number in range(devices):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        )
        answer = running.enroller.enroll(
            enrollment.Request(
                token=token,
                name=f"d{number:05d}",
                csr_pem=csr.public_bytes(serialization.Encoding.PEM),
                address="127.0.0.1",
            ),
            running.reconciler.loaded,
            datetime.now(UTC),
        )
        if answer.status != 200:
            raise SystemExit(f"enrollment {number} refused: {answer.status} {answer.body}")
        body = answer.body
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pem = f"{number:05d}.pem"
        (folder / pem).write_bytes(str(body["certificateChain"]).encode() + key_pem)
        if number == 0:
            (folder / "ca.pem").write_text(str(body["caBundle"]))
        agents.append({"deviceId": body["deviceId"], "token": body["deviceToken"], "pem": pem})
    (folder / "index.json").write_text(json.dumps(agents))
    seconds = time.perf_counter() - started
    progress(f"enrolled {devices} devices in {seconds:.1f} s")


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- measuring a process ------------------------------------------------------------------------


def rss_bytes() -> int:
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- the agents' processes ----------------------------------------------------------------------


class FrameCounter(Extension):
    """Sees each received data frame before decompression (it is the last extension, so it
    decodes first): the size of each message on the wire, header included."""

    name = ExtensionName("x-rciots-bench-count")  # never negotiated: appended to the list

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        if frame.opcode in DATA_OPCODES:
            length = len(frame.data)
            header = 2 + (0 if length < 126 else 2 if length < 65536 else 8)
            if frame.opcode == Opcode.CONT and self.sizes:
                self.sizes[-1] += header + length
            else:
                self.sizes.append(header + length)
        return frame

    def encode(self, frame: Frame) -> Frame:
        return frame


@dataclass
class AgentStats:
    opened: int = 0
    failed: int = 0
    retries: dict[str, int] = field(default_factory=dict)  # why a connect was tried again
    dropped: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)  # one per desired received


async def send_outgoing(connection: ClientConnection, session: protocol.AgentSession) -> None:
    for text in session.outgoing():
        await connection.send(text)
    if session.closed is not None:
        await connection.close(session.closed.code, session.closed.reason)


async def run_agent(
    number: int,
    identity: dict[str, str],
    connection: ClientConnection,
    counter: FrameCounter,
    stats: AgentStats,
    welcomed: asyncio.Event,
) -> None:
    session = protocol.AgentSession(identity["deviceId"], identity["token"], "bench")
    status: asyncio.Task[None] | None = None

    async def report_status(interval: int) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(interval)
                session.status(summary={"resources": 1})
                await send_outgoing(connection, session)

    try:
        session.hello()
        await send_outgoing(connection, session)
        async for text in connection:
            frame = counter.sizes.pop(0) if counter.sizes else 0  # this message's frame
            events = session.receive(text)
            for event in events:
                if isinstance(event, protocol.Welcomed):
                    welcomed.set()
                    status = asyncio.create_task(report_status(event.settings.status_interval))
                elif isinstance(event, protocol.DesiredReceived):
                    stats.records.append(
                        {
                            "agent": number,
                            "delta": event.delta,
                            "text": len(text.encode() if isinstance(text, str) else text),
                            "frame": frame,
                            "bundle": len(event.bundle.manifests.encode()),
                        }
                    )
                    result = ApplyResult(
                        event.bundle.digest,
                        tuple(ResourceResult(r, "applied") for r in event.bundle.resources),
                    )
                    session.applied(event.generation, result)
                elif isinstance(event, protocol.Closing):
                    print(f"agent {number}: closed {event.code} {event.reason}", file=sys.stderr)
            await send_outgoing(connection, session)
            if session.closed is not None:
                break
    except ConnectionClosed:
        if not stopping.is_set():
            stats.dropped += 1
    finally:
        if status is not None:
            status.cancel()


stopping = asyncio.Event()  # the agents' process closes its connections: not a drop


async def open_websocket(
    url: str, context: ssl.SSLContext, compression: bool, stats: AgentStats
) -> ClientConnection:
    for attempt in range(30):
        try:
            return await connect(
                url,
                ssl=context,
                compression="deflate" if compression else None,
                open_timeout=60,
                max_size=protocol.DEFAULT_MAX_MESSAGE_BYTES,
                user_agent_header="rciots-bench",
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            # e.g. 503: too many connections of this address wait for their hello
            why = str(exc)[:60]
            stats.retries[why] = stats.retries.get(why, 0) + 1
            if attempt == 29:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


async def agents_main(args: argparse.Namespace) -> None:
    """One agents' process: connect, report, idle until told (stdin) to report or close."""
    # the client side of TLS has the same large default buffer; the agents are not measured,
    # but 5,000 of them in one process would take 1.3 GB
    asyncio.sslproto.SSLProtocol.max_size = connector.TLS_BUFFER
    folder = Path(args.identities)
    everyone = json.loads((folder / "index.json").read_text())
    mine = everyone[args.first : args.first + args.count]
    ca_pem = (folder / "ca.pem").read_text()
    stats = AgentStats()
    tasks: list[asyncio.Task[None]] = []
    writers: list[asyncio.StreamWriter] = []
    gate = asyncio.Semaphore(args.concurrency)
    started = time.perf_counter()

    async def open_one(number: int, identity: dict[str, str]) -> None:
        context = ssl.create_default_context(cadata=ca_pem)
        context.load_cert_chain(folder / identity["pem"])
        async with gate:
            try:
                if args.mode != "ws":
                    _, writer = await asyncio.open_connection(
                        "127.0.0.1", args.port, ssl=context, server_hostname="127.0.0.1"
                    )
                    writers.append(writer)
                    stats.opened += 1
                    return
                connection = await open_websocket(args.url, context, args.compression, stats)
            except Exception as exc:
                stats.failed += 1
                print(f"agent {number}: cannot connect: {exc!r}", file=sys.stderr)
                return
            counter = FrameCounter()
            connection.protocol.extensions.append(counter)
            welcomed = asyncio.Event()
            task = asyncio.create_task(
                run_agent(number, identity, connection, counter, stats, welcomed)
            )
            tasks.append(task)
            # the hello answered (the next may connect), or the session over (refused)
            waiting = asyncio.create_task(welcomed.wait())
            await asyncio.wait({waiting, task}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if welcomed.is_set():
                stats.opened += 1
            else:
                stats.failed += 1

    await asyncio.gather(*(open_one(args.first + i, x) for i, x in enumerate(mine)))
    say(
        {
            "event": "opened",
            "opened": stats.opened,
            "failed": stats.failed,
            "retries": stats.retries,
            "seconds": round(time.perf_counter() - started, 2),
        }
    )
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "report":
            say({"event": "report", "records": stats.records, "dropped": stats.dropped})
            stats.records = []
            continue
        break  # "close", or the scenario's process is gone (end of input)
    stopping.set()
    for writer in writers:
        writer.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


# -- the scenarios: the connector's process -----------------------------------------------------


class Agents:
    """The agents' processes of one scenario, ``--clients`` of them sharing the agents."""

    def __init__(self, processes: list[asyncio.subprocess.Process]) -> None:
        self.processes = processes

    @classmethod
    async def start(
        cls,
        fleet: Fleet,
        count: int,
        clients: int,
        *,
        mode: str = "ws",
        port: int,
        compression: Sequence[bool] = (True,),
        first: int = 0,
    ) -> Agents:
        processes = []
        share = -(-count // clients)
        for index in range(clients):
            begin = first + index * share
            size = min(share, first + count - begin)
            if size <= 0:
                break
            deflate = compression[index % len(compression)]
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(SCRIPT),
                    "agents",
                    "--identities",
                    str(fleet.identities),
                    "--first",
                    str(begin),
                    "--count",
                    str(size),
                    "--mode",
                    mode,
                    "--port",
                    str(port),
                    "--url",
                    f"wss://127.0.0.1:{port}{connector.PATH}",
                    "--concurrency",
                    str(max(1, 48 // clients)),
                    *(["--compression"] if deflate else []),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=2**28,  # a report is one line
                )
            )
        return cls(processes)

    async def read_all(self, event: str) -> list[dict[str, Any]]:
        answers = []
        for process in self.processes:
            assert process.stdout is not None
            while True:
                line = await process.stdout.readline()
                if not line:
                    raise SystemExit("an agents' process ended early (see its errors above)")
                message = json.loads(line)
                if message.get("event") == event:
                    answers.append(message)
                    break
        return answers

    async def opened(self) -> dict[str, Any]:
        answers = await self.read_all("opened")
        retries: dict[str, int] = {}
        for answer in answers:
            for why, times in answer["retries"].items():
                retries[why] = retries.get(why, 0) + times
        return {
            "opened": sum(a["opened"] for a in answers),
            "failed": sum(a["failed"] for a in answers),
            "retries": retries,
        }

    async def report(self) -> list[dict[str, Any]]:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(b"report\n")
            await process.stdin.drain()
        records = []
        for answer in await self.read_all("report"):
            records.extend(answer["records"])
        return records

    async def close(self) -> None:
        for process in self.processes:
            if process.returncode is None and process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.write(b"close\n")
                    process.stdin.close()
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


class Watched(service.Controller):
    """The real controller, with marks: when a snapshot arrived, when its pass ended, the
    push, and the last applied received."""

    def __init__(self, settings: service.Settings) -> None:
        super().__init__(settings)
        self.marks: dict[str, float] = {}
        self.applied_count = 0

    async def on_snapshot(self, snapshot: snapshots.Snapshot) -> None:
        self.marks["snapshot"] = time.perf_counter()
        await super().on_snapshot(snapshot)
        self.marks["pass_end"] = time.perf_counter()

    def applied(self, key: tuple[str, str], bundle: Bundle, result: Any) -> None:
        super().applied(key, bundle, result)
        self.applied_count += 1
        self.marks["applied"] = time.perf_counter()

    def time_source(self) -> None:
        """Marks around the Git fetch and the snapshot (in the source's thread) and the
        connector's push."""
        assert self.connector is not None
        assert self.git_mirror is not None
        mirror, marks = self.git_mirror, self.marks
        fetch, snapshot, push = mirror.fetch, mirror.snapshot, self.connector.push_changed

        def timed_fetch() -> gitsource.Fetched:
            marks["fetch_start"] = time.perf_counter()
            fetched = fetch()
            marks["fetch_end"] = time.perf_counter()
            return fetched

        def timed_snapshot(revision: str, previous: snapshots.Snapshot | None) -> Any:
            made = snapshot(revision, previous)
            marks["snapshot_made"] = time.perf_counter()
            return made

        async def timed_push(keys: Collection[tuple[str, str]]) -> None:
            marks["push_start"] = time.perf_counter()
            await push(keys)
            marks["push_end"] = time.perf_counter()

        mirror.fetch = timed_fetch  # type: ignore[method-assign]
        mirror.snapshot = timed_snapshot  # type: ignore[method-assign]
        self.connector.push_changed = timed_push  # type: ignore[method-assign]

    def in_sync(self) -> int:
        """How many devices are connected and report their desired digest applied."""
        count = 0
        for key, state in self.reconciler.table.items():
            seen: observed.Observed | None = self.observed.get(key)
            if seen is not None and seen.connected and seen.applied_digest == state.digest:
                count += 1
        return count


async def until(check: Callable[[], bool], within: float, what: str, every: float = 0.005) -> None:
    deadline = time.perf_counter() + within
    while not check():
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out waiting for {what}: {check.__doc__ or check()}")
        await asyncio.sleep(every)


def at_least(count: Callable[[], int], wanted: int) -> Callable[[], bool]:
    def check() -> bool:
        return count() >= wanted

    return check


class Collections:
    """Time the garbage collector takes, while in the ``with`` block."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __enter__(self) -> Collections:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


async def settle_memory(seconds: float, collections: Collections | None = None) -> int:
    """RSS after ``seconds`` of rest, a collection, and free heap handed back to the system
    (what start-up freed must not pass for memory the connections take little of)."""
    with collections or contextlib.nullcontext():
        await asyncio.sleep(seconds)
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_bytes()


@contextlib.asynccontextmanager
async def started(controller: Watched) -> Any:
    await controller.start()
    try:
        yield controller
    finally:
        await controller.stop()


async def scenario_idle(args: argparse.Namespace, fleet: Fleet, source: str) -> dict[str, Any]:
    """(a): the connector under test, or (mode tls) a bare TLS server for reference."""
    if args.mode == "ws":
        controller = Watched(controller_settings(fleet, source, connector_on=True))
        async with started(controller):
            assert controller.status is not None
            assert controller.connector is not None
            await controller.status.flush()
            return await hold_idle(
                args, fleet, controller.connector.port, controller, controller.in_sync
            )
    if args.mode == "tls":
        asyncio.sslproto.SSLProtocol.max_size = connector.TLS_BUFFER
    held: list[asyncio.BaseTransport] = []

    class Hold(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            held.append(transport)

    ca = fleet.state / "ca"
    context = connector.server_context(ca / "server.pem", ca / "server.key", ca / "root.pem")
    server = await asyncio.get_running_loop().create_server(
        Hold, "127.0.0.1", 0, ssl=context, backlog=128
    )
    try:
        port = server.sockets[0].getsockname()[1]
        return await hold_idle(args, fleet, port, None, lambda: len(held))
    finally:
        for transport in held:
            transport.close()
        server.close()
        await server.wait_closed()


async def hold_idle(
    args: argparse.Namespace,
    fleet: Fleet,
    port: int,
    controller: Watched | None,
    held: Callable[[], int],
) -> dict[str, Any]:
    """Connect the agents in two waves of half each and measure after each: the second
    wave's growth over its agents is the cost of one more connection (the first wave may
    still reuse heap that start-up freed); the growth over all of them is reported too."""
    count = args.agents
    half = count // 2
    waves = [(0, half, max(1, args.clients // 2)), (half, count - half, -(-args.clients // 2))]
    rss = [await settle_memory(1.0)]
    files_before = open_files()
    if args.tracemalloc:
        tracemalloc.start(10)
    processes: list[Agents] = []
    connect_seconds = connect_cpu = 0.0
    try:
        for first, size, clients in waves:
            started_at, cpu = time.perf_counter(), cpu_seconds()
            agents = await Agents.start(
                fleet, size, clients, mode=args.mode, port=port, first=first
            )
            processes.append(agents)
            opened = await agents.opened()
            if opened["opened"] != size:
                raise SystemExit(f"only {opened['opened']} of {size} agents connected")
            await until(at_least(held, first + size), 300, "the agents in sync", 0.05)
            connect_seconds += time.perf_counter() - started_at
            connect_cpu += cpu_seconds() - cpu
            progress(f"{args.mode}: {first + size} connections held ({opened})")
            if controller is not None and controller.status is not None:
                await controller.status.flush()  # the connect and applied documents: written
            cpu, collections = cpu_seconds(), Collections()
            rss.append(await settle_memory(args.idle_seconds, collections))
            idle_cpu = (cpu_seconds() - cpu) / args.idle_seconds
            idle_gc = collections.seconds / args.idle_seconds
        files = open_files() - files_before
        traced = None
        if args.tracemalloc:
            traced, _ = tracemalloc.get_traced_memory()
            for stat in tracemalloc.take_snapshot().statistics("lineno")[:15]:
                progress(f"  {stat}")
            tracemalloc.stop()
    finally:
        for agents in processes:
            await agents.close()
    result: dict[str, Any] = {
        "mode": args.mode,
        "agents": count,
        "open_files": files,
        "connect_seconds": round(connect_seconds, 1),
        # CPU of this process (all threads) per connection, from connect to in sync
        "cpu_ms_per_connect": round(connect_cpu / count * 1000, 2),
        "rss_mb": [round(x / 2**20, 1) for x in rss],  # before, after each wave
        # KB: 1,000 bytes
        "kb_per_connection": round((rss[2] - rss[1]) / (count - half) / 1000, 1),
        "kb_per_connection_all": round((rss[2] - rss[0]) / count / 1000, 1),
        "idle_cpu_percent": round(idle_cpu * 100, 1),
        "idle_gc_percent": round(idle_gc * 100, 1),  # of it, the garbage collector's
    }
    if traced is not None:
        result["python_kb_per_connection_all"] = round(traced / count / 1000, 1)
    return result


async def scenario_fanout(args: argparse.Namespace, fleet: Fleet, source: str) -> dict[str, Any]:
    """(b): commit -> every connected agent's applied."""
    count = args.agents
    controller = Watched(controller_settings(fleet, source, connector_on=True))
    async with started(controller):
        assert controller.connector is not None
        controller.time_source()
        agents = await Agents.start(fleet, count, args.clients, port=controller.connector.port)
        try:
            opened = await agents.opened()
            await until(lambda: controller.in_sync() >= count, 120, "the agents in sync", 0.05)
            progress(f"fanout: {count} agents in sync ({opened})")
            await agents.report()
            pings = [await ping_all(controller) for _ in range(5)]
            rounds = []
            for number in range(args.rounds):
                rounds.append(await fanout_round(controller, fleet, count, number))
                progress(f"fanout round {number}: {rounds[-1]}")
                await asyncio.sleep(1.5)  # the status writer's commit of the round
            records = await agents.report()
        finally:
            await agents.close()
    deltas = [r for r in records if r["delta"]]
    total = statistics.median(r["commit_to_all_applied"] for r in rounds)
    ping = statistics.median(pings)
    reconcile = statistics.median(r["reconcile"] for r in rounds)
    return {
        "agents": count,
        "rounds": rounds,
        "commit_to_all_applied_median": round(total, 3),
        "reference_ping_all_seconds": round(ping, 3),
        "reference_reconcile_seconds": round(reconcile, 3),
        "commit_to_all_applied_vs_ping": round(total / ping, 1),
        "after_reconcile_vs_ping": round((total - reconcile) / ping, 1),
        "desired_messages": len(records),
        "delta_messages": len(deltas),
        "delta_text_bytes_median": statistics.median(r["text"] for r in deltas) if deltas else None,
        "bundle_bytes": records[0]["bundle"] if records else None,
    }


async def ping_all(controller: Watched) -> float:
    """A ping to every agent, until the last pong: the no-op fan-out."""
    assert controller.connector is not None
    sessions = list(controller.connector.sessions.values())
    started_at = time.perf_counter()
    waiters: list[Awaitable[float]] = [await s.connection.ping() for s in sessions]
    await asyncio.gather(*waiters)
    return time.perf_counter() - started_at


async def fanout_round(
    controller: Watched, fleet: Fleet, count: int, number: int
) -> dict[str, float]:
    tag = f"1.5.{number}"
    write_template(fleet, {"deployment.yaml": collector_template(tag)["deployment.yaml"]})
    await asyncio.to_thread(commit_and_push, fleet, f"collector {tag}")
    committed = time.perf_counter()
    controller.marks.clear()
    done = changed(controller)
    controller.source.wake()
    await until(done, 60, "every agent to apply the commit")
    marks = controller.marks
    assert controller.last_outcome is not None
    return {
        "commit_to_all_applied": round(marks["applied"] - committed, 3),
        "wake_to_fetch": round(marks["fetch_start"] - committed, 3),
        "fetch": round(marks["fetch_end"] - marks["fetch_start"], 3),
        "snapshot": round(marks["snapshot_made"] - marks["fetch_end"], 3),
        "commit_to_snapshot": round(marks["snapshot"] - committed, 3),
        "reconcile": round(controller.last_outcome.seconds, 3),
        "pass": round(marks["push_start"] - marks["snapshot"], 3),
        "push": round(marks["push_end"] - marks["push_start"], 3),
        "answers_after_push": round(marks["applied"] - marks["push_end"], 3),
    }


def changed(controller: Watched) -> Callable[[], bool]:
    """A check: every device's desired digest changed since now, and every device applied
    its new one."""
    before = {key: state.digest for key, state in controller.reconciler.table.items()}

    def check() -> bool:
        table = controller.reconciler.table
        return all(table[k].digest != d for k, d in before.items()) and controller.in_sync() >= len(
            before
        )

    return check


async def scenario_wire(args: argparse.Namespace, fleet: Fleet, source: str) -> dict[str, Any]:
    """(c): one agent with permessage-deflate, one without; full then deltas."""
    controller = Watched(controller_settings(fleet, source, connector_on=True))
    async with started(controller):
        assert controller.connector is not None
        agents = await Agents.start(
            fleet, 2, 2, port=controller.connector.port, compression=(True, False)
        )
        try:
            await agents.opened()
            await until(lambda: controller.in_sync() >= 2, 60, "the agents in sync")
            records = await agents.report()
            for number in range(args.rounds):
                tag = f"1.1.{number}"
                write_template(fleet, wire_template(args.wire_kb, tag))
                await asyncio.to_thread(commit_and_push, fleet, f"app-00 {tag}")
                check = changed(controller)
                controller.source.wake()
                await until(check, 30, "the agents to apply the change")
                records += await agents.report()
        finally:
            await agents.close()
    result: dict[str, Any] = {}
    for agent, deflate in ((0, "deflate"), (1, "no_compression")):
        mine = [r for r in records if r["agent"] == agent]
        full = [r for r in mine if not r["delta"]]
        delta = [r for r in mine if r["delta"]]
        if not full or not delta:
            raise SystemExit(f"expected full and delta messages, got {mine}")
        result[deflate] = {
            "bundle_bytes": full[0]["bundle"],
            "full_text_bytes": full[0]["text"],
            "full_frame_bytes": full[0]["frame"],
            "delta_text_bytes": max(r["text"] for r in delta),
            "delta_frame_bytes": max(r["frame"] for r in delta),
            "delta_vs_full_frame": round(max(r["frame"] for r in delta) / full[0]["frame"], 4),
            "deltas": len(delta),
        }
    return result


async def scenario_main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    fleet = Fleet(Path(args.fleet))
    with git_daemon(fleet) as source:
        say(await scenario(args, fleet, source))


async def scenario(args: argparse.Namespace, fleet: Fleet, source: str) -> dict[str, Any]:
    kinds: dict[str, Callable[[argparse.Namespace, Fleet, str], Awaitable[dict[str, Any]]]] = {
        "idle": scenario_idle,
        "fanout": scenario_fanout,
        "wire": scenario_wire,
    }
    return await kinds[args.kind](args, fleet, source)


# -- the whole run ------------------------------------------------------------------------------


def run_scenario(fleet: Fleet, kind: str, *options: str, timeout: float = 900) -> dict[str, Any]:
    command = [sys.executable, str(SCRIPT), "scenario", kind, "--fleet", str(fleet.folder)]
    process = subprocess.Popen([*command, *options], stdout=subprocess.PIPE)
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if process.returncode != 0:
        raise SystemExit(f"scenario {kind} {' '.join(options)} failed ({process.returncode})")
    answer: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return answer


TARGET_KB_PER_CONNECTION = 100  # at 10,000 agents on one process
TARGET_FANOUT_SECONDS = 5.0  # commit -> 1,000 agents applied
TARGET_DELTA_BYTES = 1000  # a one-line change of a 50 KB bundle, on the wire


def main_all(args: argparse.Namespace) -> int:
    results: dict[str, Any] = {}
    clients = ["--clients", str(args.clients)]
    with tempfile.TemporaryDirectory(prefix="rciots-bench-connector-") as scratch:
        folder = Path(scratch)
        if "idle" in args.only:
            results["a_idle"] = part_idle(args, folder, clients)
        if "fanout" in args.only:
            progress(f"(b) enrolling {args.fanout} devices ...")
            fleet = make_fleet(folder / "fanout", collector_template("1.4.0"), args.fanout)
            progress("(b) fan-out ...")
            rounds = ["--rounds", str(args.rounds)]
            figures = run_scenario(fleet, "fanout", "--agents", str(args.fanout), *rounds, *clients)
            worst = max(r["commit_to_all_applied"] for r in figures["rounds"])
            figures["target_seconds"] = TARGET_FANOUT_SECONDS
            figures["meets_target"] = worst <= TARGET_FANOUT_SECONDS
            results["b_fanout"] = figures
        if "wire" in args.only:
            fleet = make_fleet(folder / "wire", wire_template(args.wire_kb, "1.0.0"), 2)
            progress("(c) wire ...")
            figures = run_scenario(
                fleet, "wire", "--rounds", str(args.rounds), "--wire-kb", str(args.wire_kb)
            )
            for deflate in figures.values():
                deflate["meets_target"] = deflate["delta_frame_bytes"] <= TARGET_DELTA_BYTES
            figures["target_bytes"] = TARGET_DELTA_BYTES
            results["c_wire"] = figures
    print(json.dumps(results, indent=2))
    return 0


def part_idle(args: argparse.Namespace, folder: Path, clients: list[str]) -> list[dict[str, Any]]:
    idle = []
    for number, count in enumerate(sorted(args.idle)):
        # a fleet of exactly as many devices: the heap that start-up frees, proportionate to
        # the fleet, is then taken up by the first half of the agents
        progress(f"(a) enrolling {count} devices ...")
        fleet = make_fleet(folder / f"idle-{count}", small_template(), count)
        agents = ["--agents", str(count), *clients, "--idle-seconds", str(args.idle_seconds)]
        modes = ["ws", "tls", *(["tls-default"] if number == 0 else [])]
        figures: dict[str, Any] = {}
        for mode in modes:
            progress(f"(a) {count} agents, {mode} ...")
            figures[mode] = run_scenario(fleet, "idle", "--mode", mode, *agents)
        if number == 0 and args.tracemalloc:
            progress(f"(a) {count} agents, ws, with tracemalloc ...")
            traced = run_scenario(fleet, "idle", "--mode", "ws", "--tracemalloc", *agents)
            figures["ws"]["python_kb_per_connection_all"] = traced["python_kb_per_connection_all"]
        ws, tls = figures["ws"]["kb_per_connection"], figures["tls"]["kb_per_connection"]
        figures["connector_vs_tls"] = round(ws / tls, 2)
        figures["target_kb_per_connection"] = TARGET_KB_PER_CONNECTION
        figures["meets_target"] = ws <= TARGET_KB_PER_CONNECTION
        idle.append(figures)
    return idle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--only", nargs="+", default=["idle", "fanout", "wire"])
    parser.add_argument("--idle", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wire-kb", type=int, default=50)
    parser.add_argument("--clients", type=int, default=2, help="agents' processes")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="(a): idle, measured")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="(a): one more run, Python's allocations"
    )
    scenario = sub.add_parser("scenario", help="internal: the connector's process")
    scenario.add_argument("kind", choices=["idle", "fanout", "wire"])
    scenario.add_argument("--fleet", required=True)
    scenario.add_argument("--mode", choices=["ws", "tls", "tls-default"], default="ws")
    scenario.add_argument("--agents", type=int, default=2)
    scenario.add_argument("--clients", type=int, default=2)
    scenario.add_argument("--rounds", type=int, default=3)
    scenario.add_argument("--wire-kb", type=int, default=50)
    scenario.add_argument("--idle-seconds", type=float, default=5.0)
    scenario.add_argument("--tracemalloc", action="store_true")
    agents = sub.add_parser("agents", help="internal: an agents' process")
    agents.add_argument("--identities", required=True)
    agents.add_argument("--first", type=int, default=0)
    agents.add_argument("--count", type=int, required=True)
    agents.add_argument("--mode", choices=["ws", "tls", "tls-default"], default="ws")
    agents.add_argument("--port", type=int, required=True)
    agents.add_argument("--url", required=True)
    agents.add_argument("--concurrency", type=int, default=24)
    agents.add_argument("--compression", action="store_true")
    args = parser.parse_args()
    if args.command == "scenario":
        asyncio.run(scenario_main(args))
        return 0
    if args.command == "agents":
        asyncio.run(agents_main(args))
        return 0
    return main_all(args)


if __name__ == "__main__":
    sys.exit(main())
