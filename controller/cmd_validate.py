"""``rciots validate``: check a fleet repo the way the controller will read it.

Meant for a pull-request check and for the terminal. Reads a working tree (default) or one Git
revision (``--rev``), loads it with the fleet model loader and prints every problem. Exit 0
when there are no errors (warnings alone still pass), 1 when there are, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rciots.controller import report
from rciots.controller.diagnostics import count_errors

__all__ = ["register", "run"]


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "validate",
        help="check a fleet repo (files, schemas, names, references)",
        description=(
            "Check a fleet repo: YAML syntax and limits, the JSON Schema of each kind, names "
            "against paths, and references between tenants' objects. Prints one line per "
            "problem as PATH:LINE:COL: MESSAGE. Exit status: 0 valid, 1 invalid, 2 usage error."
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
    from rciots.controller import loader, snapshots

    root: Path = args.path
    try:
        snapshot, problems, commit = snapshots.read(root, args.rev)
    except ValueError as exc:
        print(f"rciots: error: {exc}", file=sys.stderr)
        return 2
    checked = f"{args.rev} ({commit[:12]})" if commit is not None else str(root)
    result = loader.load(snapshot)
    diagnostics = sorted(problems + result.diagnostics)
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
