"""Record (or check) the kustomize conformance corpus against the real ``kubectl kustomize``.

The corpus lives in ``cases/<case-name>/``: ``input/`` holds the files; the build entry is
``input/`` itself unless the case has a file ``entry`` naming a directory inside ``input/``
(e.g. ``overlays/prod``). This script runs ``kubectl kustomize`` on each case's entry and keeps
the outcome next to the input:

- success: ``expected.yaml``, kubectl's exact standard output;
- failure: ``expected-error.txt``, kubectl's standard error for reference, with the klog header
  removed and the case's absolute directory replaced by ``<input>`` (the test runner never reads
  it; it checks ``error-names``, a hand-written file naming the input-relative path that our
  error message must name).

A case with a file ``refuse`` (a one-line reason) is one that kustomize builds but the native
renderer deliberately refuses; its ``expected.yaml`` is kept for reference only.

Re-record everything, or only some cases (names or shell-style patterns), from the repository
root with the project's virtualenv::

    .venv/bin/python tests/kustomize_corpus/record.py [CASE ...]
    .venv/bin/python tests/kustomize_corpus/record.py --check [CASE ...]

``--check`` writes nothing and exits 1 when any recorded outcome differs from kubectl's.
``--kubectl PATH`` picks the binary (default: ``kubectl`` on ``PATH``). The remote-resource
cases expect no network access; their error text differs where github.com is reachable.

The test suite itself never runs kubectl: it reads what this script recorded.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CASES", "Outcome", "main", "record_case", "run_kubectl", "sanitize_error"]

CASES = Path(__file__).resolve().parent / "cases"
TIMEOUT_SECONDS = 120

# klog's header, e.g. 'E1126 18:58:21.484221   14960 run.go:72] '
_KLOG_HEADER = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [\w.-]+:\d+\] ", re.MULTILINE)
_COMMAND_FAILED_QUOTED = re.compile(r'^"command failed" err=(".*")$', re.MULTILINE)
_COMMAND_FAILED_BLOCK = re.compile(r'^"command failed" err=<\n(.*?)\n >$', re.MULTILINE | re.DOTALL)
_IP_ADDRESS = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
_SCRATCH_DIR = re.compile(r"(?:/[\w.-]+)+/kustomize-[\w-]+")
_GO_POINTER = re.compile(r"\b0xc[0-9a-f]{6,}\b")


@dataclass(frozen=True)
class Outcome:
    """What kubectl did with one case: exactly one of ``yaml`` and ``error`` is set."""

    yaml: str | None
    error: str | None


def case_entry(case: Path) -> Path:
    """The directory to build: ``input/`` or the directory named by the case's ``entry`` file."""
    entry_file = case / "entry"
    entry = entry_file.read_text(encoding="utf-8").strip() if entry_file.exists() else ""
    return case / "input" / entry if entry else case / "input"


def _unquote(match: re.Match[str]) -> str:
    try:
        return "command failed: " + str(json.loads(match.group(1)))
    except json.JSONDecodeError:
        return match.group(0)


def _unindent(match: re.Match[str]) -> str:
    lines = match.group(1).split("\n")
    return "command failed: " + "\n".join(line.removeprefix("\t") for line in lines)


def sanitize_error(stderr: str, input_dir: Path) -> str:
    """kubectl's error text without what varies between runs and machines."""
    text = _KLOG_HEADER.sub("", stderr).strip()
    text = _COMMAND_FAILED_QUOTED.sub(_unquote, text)
    text = _COMMAND_FAILED_BLOCK.sub(_unindent, text)
    for spelling in {str(input_dir.resolve()), str(input_dir)}:
        text = text.replace(spelling, "<input>")
    git = shutil.which("git")
    if git:
        text = text.replace(f"'{git} ", "'git ").replace(f"'{os.path.realpath(git)} ", "'git ")
    text = _SCRATCH_DIR.sub("<scratch>", text)
    text = _GO_POINTER.sub("<pointer>", text)
    text = _IP_ADDRESS.sub("<address>", text)
    return text + "\n"


def run_kubectl(case: Path, kubectl: str) -> Outcome:
    """Run ``kubectl kustomize`` on the case's entry, without network credentials or prompts."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    with tempfile.TemporaryDirectory() as home:
        env["HOME"] = home  # no user git or kube configuration leaks into the outcome
        proc = subprocess.run(
            [kubectl, "kustomize", str(case_entry(case))],
            capture_output=True,
            env=env,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    if proc.returncode == 0:
        return Outcome(yaml=proc.stdout.decode("utf-8"), error=None)
    return Outcome(yaml=None, error=sanitize_error(proc.stderr.decode("utf-8"), case / "input"))


def recorded(case: Path) -> Outcome:
    """The outcome currently stored in the case directory."""
    yaml_file, error_file = case / "expected.yaml", case / "expected-error.txt"
    return Outcome(
        yaml=yaml_file.read_bytes().decode("utf-8") if yaml_file.exists() else None,
        error=error_file.read_bytes().decode("utf-8") if error_file.exists() else None,
    )


def describe_difference(case: Path, old: Outcome, new: Outcome) -> str | None:
    """One line saying how ``new`` differs from what is recorded, or None when it does not."""
    if old == new:
        return None
    now = "success" if new.yaml is not None else "failure"
    if old.yaml is None and old.error is None:
        return f"{case.name}: new case, kubectl gives {now}"
    if (old.yaml is None) != (new.yaml is None):
        was = "success" if old.yaml is not None else "failure"
        return f"{case.name}: recorded {was}, kubectl now gives {now}"
    if new.yaml is not None:
        return f"{case.name}: expected.yaml differs from kubectl's output"
    return f"{case.name}: expected-error.txt differs from kubectl's error"


def warnings_for(case: Path, outcome: Outcome) -> list[str]:
    """Hand-written files that do not fit the outcome (the script never writes them)."""
    refuse = (case / "refuse").exists()
    names = (case / "error-names").exists()
    problems = []
    if outcome.error is not None and not names:
        problems.append(f"{case.name}: kubectl fails; write error-names by hand")
    if outcome.yaml is not None and names and not refuse:
        problems.append(f"{case.name}: kubectl succeeds but the case has error-names")
    return problems


def record_case(case: Path, outcome: Outcome) -> None:
    """Store ``outcome`` in the case directory, removing the other kind of expectation."""
    yaml_file, error_file = case / "expected.yaml", case / "expected-error.txt"
    if outcome.yaml is not None:
        yaml_file.write_bytes(outcome.yaml.encode("utf-8"))
        error_file.unlink(missing_ok=True)
    else:
        assert outcome.error is not None
        error_file.write_bytes(outcome.error.encode("utf-8"))
        yaml_file.unlink(missing_ok=True)


def selected_cases(patterns: list[str]) -> list[Path]:
    """Case directories matching any pattern (all of them when there are none), sorted."""
    cases = sorted(path for path in CASES.iterdir() if (path / "input").is_dir())
    if not patterns:
        return cases
    return [c for c in cases if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]


def main(argv: list[str] | None = None) -> int:
    """Record or check the selected cases; the exit status is 0, 1 (differences) or 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("cases", nargs="*", help="case names or shell-style patterns")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on change")
    parser.add_argument("--kubectl", default="kubectl", help="the kubectl binary to run")
    args = parser.parse_args(argv)

    if shutil.which(args.kubectl) is None:
        print(f"{args.kubectl}: not found", file=sys.stderr)
        return 2
    cases = selected_cases(args.cases)
    if not cases:
        print("no case matches", file=sys.stderr)
        return 2
    differences: list[str] = []
    warnings: list[str] = []
    for case in cases:
        outcome = run_kubectl(case, args.kubectl)
        difference = describe_difference(case, recorded(case), outcome)
        if difference:
            differences.append(difference)
            if not args.check:
                record_case(case, outcome)
        warnings.extend(warnings_for(case, outcome))
    for line in differences:
        print(("differs: " if args.check else "recorded: ") + line)
    for line in warnings:
        print("warning: " + line, file=sys.stderr)
    print(f"{len(cases)} cases, {len(differences)} {'differ' if args.check else 'changed'}")
    return 1 if args.check and differences else 0


if __name__ == "__main__":
    sys.exit(main())
