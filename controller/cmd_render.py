"""``rciots render`` and ``rciots diff``: what devices will run, and what a change alters.

Pull-request tools that work offline on a clone: ``render`` prints one device's manifests at a
revision (or in the working tree); ``diff`` renders every device at the base revision, and at
the head revision those whose inputs changed (exactly what the controller re-renders), and
prints the blast radius (how many devices change, per tenant) and a unified diff per changed device,
or one JSON object. ``diff`` exits 1 when a device fails to render at the new revision.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

from rciots.controller import cmdargs, desired, loader, report, snapshots
from rciots.controller.diagnostics import count_errors
from rciots.controller.render import engine

__all__ = ["register"]

Renders = dict[desired.DeviceKey, desired.DeviceRender]


def register(commands: Any) -> None:
    render = commands.add_parser(
        "render",
        help="print one device's rendered manifests",
        description=(
            "Print the manifests a device runs: its own overlay, else its template, else the "
            "template of the fleet that selects it, rendered with the built-in Kustomize."
        ),
    )
    render.add_argument("repo", type=Path, help="the fleet repo (a Git clone or working tree)")
    render.add_argument("--device", required=True, metavar="TENANT/NAME")
    render.add_argument("--rev", metavar="REV", help="a Git revision; default: working tree")
    cmdargs.add_policy_argument(render)
    render.set_defaults(func=run_render)

    diff = commands.add_parser(
        "diff",
        help="which devices a change alters, and how",
        description=(
            "Render every device at BASE and at HEAD (Git revisions of REPO) and print how "
            "many devices' manifests change, per tenant, then a unified diff per changed "
            "device. Exit status: 0 when every device renders at HEAD, 1 when one fails or "
            "the fleet repo is invalid at HEAD, 2 on usage errors."
        ),
    )
    diff.add_argument("repo", type=Path, help="the fleet repo (a Git clone)")
    diff.add_argument("base", metavar="BASE", help="the revision merged into, e.g. origin/main")
    diff.add_argument("head", metavar="HEAD", help="the revision to merge, e.g. HEAD")
    diff.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: summary and unified diffs (default); json: one object, `changed` listing "
        "each changed device",
    )
    cmdargs.add_policy_argument(diff)
    diff.set_defaults(func=run_diff)


class _UsageError(Exception):
    pass


def _policy(path: Path | None) -> desired.PolicyCheck:
    try:
        return cmdargs.policy_check(path)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None


def _read(repo: Path, rev: str | None) -> tuple[snapshots.Files, list[Any], str]:
    try:
        snapshot, problems, commit = snapshots.read(repo, rev)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    return snapshot, problems, commit or "working tree"


def _render_one(
    repo: Path, rev: str | None, device: desired.DeviceKey, policy: desired.PolicyCheck
) -> tuple[desired.DeviceRender | None, list[Any]]:
    """The device's render (None when the repo has no such valid device), and the repo's
    diagnostics; only that device is rendered."""
    snapshot, problems, _ = _read(repo, rev)
    result = loader.load(snapshot)
    renders = desired.render_devices(snapshot, result.model, only={device}, policy=policy)
    return renders.get(device), problems + result.diagnostics


def run_render(args: argparse.Namespace) -> int:
    tenant, slash, name = str(args.device).partition("/")
    if not slash or not tenant or not name:
        print("rciots: error: --device takes TENANT/NAME", file=sys.stderr)
        return 2
    try:
        found, diagnostics = _render_one(args.repo, args.rev, (tenant, name), _policy(args.policy))
    except _UsageError as exc:
        print(f"rciots: error: {exc}", file=sys.stderr)
        return 2
    if found is None:
        problems = [d for d in diagnostics if f"/{tenant}/" in d.path and d.severity == "error"]
        sys.stderr.write(report.format_diagnostics(problems, "text"))
        print(f"rciots: error: no valid device {tenant}/{name} in the fleet repo", file=sys.stderr)
        return 1
    if found.error is not None:
        print(f"rciots: error: {found.error}", file=sys.stderr)
        return 1
    if found.entry is None:
        print(f"{tenant}/{name} gets no workload", file=sys.stderr)
        return 0
    sys.stdout.write(found.yaml)
    return 0


def _changes(
    before: dict[desired.DeviceKey, desired.DeviceRender],
    after: dict[desired.DeviceKey, desired.DeviceRender],
) -> list[tuple[desired.DeviceKey, str]]:
    changes = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if new is None:
            changes.append((key, "removed"))
        elif not new.ok:
            changes.append((key, "failed"))
        elif old is None:
            changes.append((key, "added"))
        elif old.yaml != new.yaml or not old.ok:
            changes.append((key, "modified"))
    return changes


def _states(
    repo: Path, base: str, head: str, policy: desired.PolicyCheck
) -> tuple[str, str, Renders, Renders, list[Any]]:
    """Every device rendered at ``base``; at ``head`` only those a changed file affects
    (the others are the same by construction), as the controller does on a new commit."""
    base_files, _, base_commit = _read(repo, base)
    head_files, head_problems, head_commit = _read(repo, head)
    memo, cache = loader.LoadMemo(), engine.Cache()
    base_model = loader.load(base_files, memo=memo).model
    before = desired.render_devices(base_files, base_model, cache=cache, policy=policy)
    loaded = loader.load(head_files, memo=memo)
    changed = {
        path
        for path in base_files.keys() | head_files.keys()
        if base_files.get(path) != head_files.get(path)
    }
    wanted = desired.affected(before, base_model, loaded.model, changed)
    present = {(t, d) for t, model in loaded.model.tenants.items() for d in model.devices}
    after = {key: render for key, render in before.items() if key in present}
    after.update(
        desired.render_devices(
            head_files, loaded.model, only=wanted, cache=cache, policy=policy, changed=changed
        )
    )
    return base_commit, head_commit, before, after, head_problems + loaded.diagnostics


def run_diff(args: argparse.Namespace) -> int:
    try:
        base_commit, head_commit, before, after, head_problems = _states(
            args.repo, args.base, args.head, _policy(args.policy)
        )
    except _UsageError as exc:
        print(f"rciots: error: {exc}", file=sys.stderr)
        return 2
    changes = _changes(before, after)
    per_tenant: dict[str, int] = {}
    for (tenant, _), _change in changes:
        per_tenant[tenant] = per_tenant.get(tenant, 0) + 1
    failed = [render for render in after.values() if not render.ok]
    invalid = count_errors(head_problems) > 0
    if args.format == "json":
        print(
            json.dumps(
                {
                    "base": base_commit,
                    "head": head_commit,
                    "devices": len(after),
                    "changed": [
                        {"tenant": t, "device": d, "change": change} for (t, d), change in changes
                    ],
                    "tenants": per_tenant,
                    "failed": [
                        {"tenant": r.tenant, "device": r.device, "error": r.error} for r in failed
                    ],
                    "invalid": [str(d) for d in head_problems if d.severity == "error"],
                },
                indent=2,
            )
        )
    else:
        _print_text(args, changes, per_tenant, before, after, head_problems)
    return 1 if failed or invalid else 0


def _print_text(
    args: argparse.Namespace,
    changes: list[tuple[desired.DeviceKey, str]],
    per_tenant: dict[str, int],
    before: dict[desired.DeviceKey, desired.DeviceRender],
    after: dict[desired.DeviceKey, desired.DeviceRender],
    head_problems: list[Any],
) -> None:
    out = sys.stdout
    out.write(
        report.format_diagnostics([d for d in head_problems if d.severity == "error"], "text")
    )
    out.write(
        f"{len(changes)} of {len(after)} device(s) change between {args.base} and {args.head}"
        + (": " + ", ".join(f"{t} {n}" for t, n in sorted(per_tenant.items())) if changes else "")
        + "\n"
    )
    for (tenant, device), change in changes:
        name = f"{tenant}/{device}"
        if change == "failed":
            out.write(
                f"\n{name}: fails to render at {args.head}: {after[(tenant, device)].error}\n"
            )
            continue
        old = before.get((tenant, device))
        new = after.get((tenant, device))
        out.write(f"\n{name}: {change}\n")
        out.writelines(
            difflib.unified_diff(
                (old.yaml if old else "").splitlines(keepends=True),
                (new.yaml if new else "").splitlines(keepends=True),
                fromfile=f"{name} ({args.base})",
                tofile=f"{name} ({args.head})",
            )
        )
