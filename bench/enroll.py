"""Benchmark: enrollments per second through the real controller, over HTTPS.

A `rciots controller` process on a copy of fleet-repo-example with a tenant of its own and one
automatic token (no device limits) and rate limits out of the way; clients in this process send
enrollments with P-256 CSRs made beforehand (a device makes its key and CSR on its own time),
each answered only after its registration is committed to the registry (SQLite, synchronous)
and queued for the status branch. It reports, measured in the same run, for 1 and for 100
concurrent clients:

1. enrollments per second (target: at least 200);
2. the reference: requests per second of the same clients to an unknown path of the same
   HTTPS server (FastAPI's 404: TLS, HTTP and routing, no enrollment work), and the ratio;
3. that every enrollment was recorded: the registry files on the status branch after a stop.

Run: .venv/bin/python bench/enroll.py [--enrollments 2000] [--concurrency 1 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rciots.controller import tokens

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "fleet-repo-example"
RCIOTS = Path(sys.executable).parent / "rciots"
TOKEN = tokens.generate_token()
TENANT = "bench"


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_repo(folder: Path) -> Path:
    repo = folder / "fleet"
    shutil.copytree(EXAMPLE, repo)
    (repo / "tenants" / TENANT / "tokens").mkdir(parents=True)
    (repo / "tenants" / TENANT / "tenant.yaml").write_text(
        f"apiVersion: rciots.io/v1\nkind: Tenant\nmetadata:\n  name: {TENANT}\nspec: {{}}\n"
    )
    (repo / "tenants" / TENANT / "tokens" / "bench.yaml").write_text(
        tokens.render_token_file(
            "bench", tokens.hash_token(TOKEN), approval="auto", labels={"site-type": "bench"}
        )
    )
    git(repo, "init", "-q", "-b", "main")
    git(repo, "-c", "user.email=b@example.com", "-c", "user.name=bench", "add", "-A")
    git(repo, "-c", "user.email=b@example.com", "-c", "user.name=bench", "commit", "-qm", "fleet")
    return repo


def csrs(count: int) -> list[str]:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    made = []
    for _ in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        )
        made.append(csr.public_bytes(serialization.Encoding.PEM).decode())
    return made


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_controller(repo: Path, state: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            str(RCIOTS),
            "controller",
            str(repo),
            "--state-dir",
            str(state),
            "--enroll-listen",
            f"127.0.0.1:{port}",
            "--enroll-rate",
            "1000000",
            "--enroll-burst",
            "1000000",
            "--poll-interval",
            "3600",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (state / "ca" / "root.pem").exists() or not _listening(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the controller did not start")
        time.sleep(0.05)
    return process


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Connection:
    """One keep-alive HTTP/1.1 connection over TLS, as small as a client can be: the
    benchmark measures the server, and a general-purpose client (httpx) costs more CPU per
    request than the enrollment itself once a hundred connections share one event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, trust: ssl.SSLContext) -> Connection:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=trust, server_hostname="127.0.0.1"
        )
        return cls(reader, writer)

    async def post(self, path: str, body: bytes) -> int:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        headers = await self.reader.readuntil(b"\r\n\r\n")
        status = int(headers.split(b" ", 2)[1])
        length = 0
        for line in headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def run_clients(
    port: int, trust: ssl.SSLContext, bodies: list[bytes] | None, count: int, clients: int
) -> tuple[float, int]:
    """Send ``count`` requests over ``clients`` concurrent connections; (seconds, successes).
    ``bodies`` None: POST an empty JSON object to an unknown path (the reference, 404)."""
    # connections first (TLS handshakes), so that both runs measure requests, not set-up
    connections = await asyncio.gather(*(Connection.open(port, trust) for _ in range(clients)))
    pending = list(range(count))
    ok = 0
    statuses: dict[int, int] = {}

    async def worker(connection: Connection) -> None:
        nonlocal ok
        while pending:
            index = pending.pop()
            if bodies is None:
                status = await connection.post("/nothing", b"{}")
            else:
                status = await connection.post("/v1/enroll", bodies[index])
            statuses[status] = statuses.get(status, 0) + 1
            ok += status == (404 if bodies is None else 200)

    started = time.perf_counter()
    await asyncio.gather(*(worker(connection) for connection in connections))
    seconds = time.perf_counter() - started
    await asyncio.gather(*(connection.close() for connection in connections))
    if ok != count:
        print(f"answers by status: {statuses}", file=sys.stderr)
    return seconds, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enrollments", type=int, default=2000, help="per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 100])
    args = parser.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="rciots-bench-enroll-") as scratch:
        folder = Path(scratch)
        repo = make_repo(folder)
        port = free_port()
        process = start_controller(repo, folder / "state", port)
        total = 0
        try:
            trust = ssl.create_default_context(cafile=str(folder / "state" / "ca" / "root.pem"))
            for clients in args.concurrency:
                print(f"{clients} client(s): making {args.enrollments} CSRs ...", file=sys.stderr)
                bodies = [
                    json.dumps(
                        {"token": TOKEN, "name": f"bench-{clients}-{i}", "csr": csr}
                    ).encode()
                    for i, csr in enumerate(csrs(args.enrollments))
                ]
                print(f"{clients} client(s): reference requests ...", file=sys.stderr)
                cpu = cpu_seconds(process.pid)
                ref_seconds, ref_ok = asyncio.run(
                    run_clients(port, trust, None, args.enrollments, clients)
                )
                ref_cpu = cpu_seconds(process.pid) - cpu
                print(f"{clients} client(s): enrolling ...", file=sys.stderr)
                cpu = cpu_seconds(process.pid)
                seconds, ok = asyncio.run(
                    run_clients(port, trust, bodies, args.enrollments, clients)
                )
                # the passes and status commits that the enrollments bring about come after
                time.sleep(6)
                enroll_cpu = cpu_seconds(process.pid) - cpu
                if ok != args.enrollments or ref_ok != args.enrollments:
                    raise SystemExit(f"only {ok} of {args.enrollments} enrollments succeeded")
                total += ok
                results[f"clients_{clients}"] = {
                    "enrollments_per_second": round(ok / seconds, 1),
                    "ms_per_enrollment": round(seconds / ok * 1000, 2),
                    "server_cpu_ms_per_enrollment": round(enroll_cpu / ok * 1000, 2),
                    "reference_requests_per_second": round(ref_ok / ref_seconds, 1),
                    "reference_server_cpu_ms_per_request": round(ref_cpu / ref_ok * 1000, 2),
                    "enroll_vs_reference": round((ok / seconds) / (ref_ok / ref_seconds), 3),
                }
        finally:
            process.terminate()
            process.wait(timeout=60)
        listed = subprocess.run(
            ["git", "ls-tree", "-r", "--name-only", "rciots/status", f"registry/{TENANT}/"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        recorded = sum(1 for path in listed if "/bench-" in path)
        results["registered_on_status_branch"] = f"{recorded}/{total}"
    print(json.dumps(results, indent=2))
    return 0 if recorded == total else 1


if __name__ == "__main__":
    sys.exit(main())
