"""Benchmark: from a fetched commit to the updated desired table, and `rciots diff`.

A fleet repo with one tenant, one template (the realistic template of bench/render.py) and N
devices, each with a Device file and its own overlay on the template. The repo is a real Git
repository; the controller's Git source mirrors it over file://. Measured in one run, for N in
--devices (default 1,000 and 10,000):

- cold: the first reconcile of the whole repo (every device rendered) — the reference;
- (a) one device's overlay changed: snapshot of the fetched commit + reconcile (target at
  10,000 devices: <= 100 ms), and its ratio to the cold pass;
- (b) the template shared by all devices changed (target at 10,000: <= 20 s);
- `rciots diff REPO HEAD~1 HEAD` for (a) and (b), one process each.

Run: .venv/bin/python bench/reconcile.py [--devices 1000 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import render as render_bench  # bench/render.py: the template and the device overlays

from rciots.controller import gitsource, reconcile, snapshots

TENANT = "fleet-a"
TOP = f"tenants/{TENANT}"


def fleet_files(devices: int) -> dict[str, str]:
    files = {
        f"{TOP}/tenant.yaml": (
            "apiVersion: rciots.io/v1\nkind: Tenant\nmetadata:\n"
            f"  name: {TENANT}\nspec:\n  enabled: true\n"
        )
    }
    for name, text in render_bench.TEMPLATE.items():
        files[f"{TOP}/templates/collector/{name}"] = text
    for number in range(devices):
        name = f"d{number:05d}"
        files[f"{TOP}/devices/{name}/device.yaml"] = (
            f"apiVersion: rciots.io/v1\nkind: Device\nmetadata:\n  name: {name}\n"
            f"  labels:\n    site: site-{number % 40}\nspec:\n  approved: true\n"
        )
        files[f"{TOP}/devices/{name}/kustomization.yaml"] = render_bench.device_overlay(number)
    return files


def git(work: Path, *args: str) -> str:
    env_args = ["-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    done = subprocess.run(
        ["git", *env_args, *args], cwd=work, check=True, capture_output=True, text=True
    )
    return done.stdout


def commit_change(work: Path, path: str, text: str, message: str) -> None:
    (work / path).write_text(text)
    git(work, "commit", "-qam", message)


def timed_diff(work: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "rciots"), "diff", str(work), "HEAD~1", "HEAD"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"rciots diff failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def one_size(devices: int, repeat: int, scratch: Path) -> dict[str, float]:
    work = scratch / f"work-{devices}"
    for path, text in fleet_files(devices).items():
        target = work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "fleet")
    mirror = gitsource.GitMirror(
        gitsource.SourceConfig(url=work.as_uri(), branch="main", mirror=scratch / f"m-{devices}")
    )
    reconciler = reconcile.Reconciler()

    def fetch_and_reconcile() -> tuple[float, float, reconcile.Outcome]:
        started = time.perf_counter()
        fetched = mirror.fetch()
        fetch_seconds = time.perf_counter() - started
        started = time.perf_counter()
        snapshot = mirror.snapshot(fetched.revision, previous[0])
        outcome = reconciler.apply(snapshot)
        previous[0] = snapshot
        return fetch_seconds, time.perf_counter() - started, outcome

    previous: list[snapshots.Snapshot | None] = [None]
    _, cold, first = fetch_and_reconcile()
    if len(first.rendered) != devices or first.failed:
        raise SystemExit(f"the first reconcile did not render every device: {first}")
    figures: dict[str, float] = {"cold": cold}

    overlay_times, fetch_times = [], []
    for round_number in range(repeat):
        device = f"d{(round_number * 7919) % devices:05d}"
        path = f"{TOP}/devices/{device}/kustomization.yaml"
        text = (work / path).read_text() + f"nameSuffix: -r{round_number}\n"
        commit_change(work, path, text, f"overlay of {device}")
        fetch_seconds, seconds, outcome = fetch_and_reconcile()
        if outcome.changed != ((TENANT, device),):
            raise SystemExit(f"expected only {device} to change, got {outcome.changed[:5]}")
        overlay_times.append(seconds)
        fetch_times.append(fetch_seconds)
    figures["overlay"] = statistics.median(overlay_times)
    figures["fetch"] = statistics.median(fetch_times)
    figures["diff_overlay"] = timed_diff(work)

    template_times = []
    for round_number in range(max(1, repeat // 3)):
        path = f"{TOP}/templates/collector/app.conf"
        commit_change(work, path, (work / path).read_text() + f"# r{round_number}\n", "template")
        _, seconds, outcome = fetch_and_reconcile()
        if len(outcome.changed) != devices:
            raise SystemExit(f"expected every device to change, got {len(outcome.changed)}")
        template_times.append(seconds)
    figures["template"] = statistics.median(template_times)
    figures["diff_template"] = timed_diff(work)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=5, help="rounds of (a); (b) runs a third")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rciots-bench-") as scratch:
        for devices in args.devices:
            print(f"== {devices} devices (setting up the repo ...)", flush=True)
            f = one_size(devices, args.repeat, Path(scratch))
            print(f"cold reconcile (every device rendered): {f['cold']:.2f} s")
            print(f"fetch of one new commit over file://:    {f['fetch'] * 1000:.0f} ms")
            print(
                f"(a) one overlay changed -> desired table: {f['overlay'] * 1000:.1f} ms "
                f"({f['cold'] / f['overlay']:.0f}x faster than cold)"
                + ("  target <= 100 ms" if devices >= 10000 else "")
            )
            print(
                f"(b) template changed -> desired table:    {f['template']:.2f} s "
                f"({f['template'] / f['cold']:.2f} of cold)"
                + ("  target <= 20 s" if devices >= 10000 else "")
            )
            print(f"rciots diff (a): {f['diff_overlay']:.2f} s   (b): {f['diff_template']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
