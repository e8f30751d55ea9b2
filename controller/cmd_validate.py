"""``rciots validate``: check a fleet repo the way the controller will read it.

Meant for a pull-request check and for the terminal. Reads a working tree (default) or one Git
revision (``--rev``), loads it with the fleet model loader, renders every device's manifests
as the controller will (with the device identity and the tenant policy) and prints every
problem. Exit 0 when there are no errors (warnings alone still pass), 1 when there are, 2 on
usage errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rciots.controller import cmdargs, report
from rciots.controller.diagnostics import Diagnostic, count_errors

if TYPE_CHECKING:
    from rciots.controller import desired

__all__ = ["register", "render_diagnostics", "run"]

_LISTED = 5  # devices named per render error; the rest are counted


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "validate",
        help="check a fleet repo (files, schemas, names, references)",
        description=(
            "Check a fleet repo: YAML syntax and limits, the JSON Schema of each kind, names "
            "against paths, references between tenants' objects, and every device's render "
            "(Kustomize build and tenant policy). Prints one line per problem as "
            "PATH:LINE:COL: MESSAGE. Exit status: 0 valid, 1 invalid, 2 usage error."
        ),
    )
    parser.add_argument(
        "path",
        nargs="?",
        default=".",
        type=Path,
        help="the fleet repo's top directory (holding tenants/); default: current directory",
    )
    parser.add_argument(
        "--rev",
        metavar="REV",
        help="check this Git revision (commit, branch, tag) of the repository at PATH "
        "instead of its working tree, e.g. --rev HEAD or --rev origin/main",
    )
    cmdargs.add_policy_argument(parser)
    parser.add_argument(
        "--format",
        choices=report.FORMATS,
        default="text",
        help="text: PATH:LINE:COL: MESSAGE (default); github: GitHub Actions annotations; "
        "json: a list of objects",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here: the schemas (jsonschema) and Git (pygit2) are not needed by other commands
    from rciots.controller import desired, loader, snapshots

    root: Path = args.path
    try:
        check = cmdargs.policy_check(args.policy)
        snapshot, problems, commit = snapshots.read(root, args.rev)
    except ValueError as exc:
        print(f"rciots: error: {exc}", file=sys.stderr)
        return 2
    checked = f"{args.rev} ({commit[:12]})" if commit is not None else str(root)
    result = loader.load(snapshot)
    renders = desired.render_devices(snapshot, result.model, policy=check)
    diagnostics = sorted(problems + result.diagnostics + render_diagnostics(renders))
    sys.stdout.write(report.format_diagnostics(diagnostics, args.format))
    errors = count_errors(diagnostics)
    warnings = len(diagnostics) - errors
    counts = ", ".join(f"{n} {kind}" for kind, n in result.model.counts().items())
    if errors:
        files = len({d.path for d in diagnostics if d.severity == "error"})
        print(
            f"{checked}: {errors} error(s) in {files} file(s), {warnings} warning(s)",
            file=sys.stderr,
        )
        return 1
    print(f"{checked}: valid ({counts}; {warnings} warning(s))", file=sys.stderr)
    return 0


def render_diagnostics(
    renders: Mapping[desired.DeviceKey, desired.DeviceRender],
) -> list[Diagnostic]:
    """One error per distinct render failure (a broken template fails all its devices alike),
    naming the devices it fails."""
    failing: dict[tuple[str, str], list[str]] = {}
    for (tenant, device), render in sorted(renders.items()):
        if render.error is not None:
            failing.setdefault((render.error_path, render.error), []).append(f"{tenant}/{device}")
    diagnostics = []
    for (path, error), devices in failing.items():
        named = ", ".join(devices[:_LISTED])
        more = f" and {len(devices) - _LISTED} more" if len(devices) > _LISTED else ""
        message = error.removeprefix(f"{path}: ") if path else error
        diagnostics.append(
            Diagnostic(path or "tenants", 1, 1, f"{message} (rendering {named}{more})")
        )
    return diagnostics
