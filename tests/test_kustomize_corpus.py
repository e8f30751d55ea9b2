"""Conformance of the native renderer with ``kustomize build``, case by case.

Each directory under ``kustomize_corpus/cases/`` is one case (see ``kustomize_corpus/record.py``
for the layout). Its ``input/`` becomes the snapshot (input-relative ``/`` paths -> bytes;
symbolic links are left out, not followed) and the build entry is ``input/`` or the directory
named by the case's ``entry`` file. Then:

- ``expected.yaml`` (kubectl's output): the build must print exactly that text, and its digest
  must be the sha256 of it;
- ``expected-error.txt`` (kubectl failed): the build must raise ``RenderError`` within a second,
  and the error text must name the path written in the case's ``error-names``;
- ``refuse`` (kubectl builds it; we refuse on purpose): as for a failure, naming
  ``error-names`` if the case has one, else the entry's kustomization file.

Cases named in ``kustomize_corpus/PENDING`` are not supported yet and run as strict expected
failures: one that starts passing fails the suite until its name is removed from the list.
The expected files are recorded with kubectl by ``record.py``; this suite never runs kubectl.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from rciots.controller import render

CORPUS = Path(__file__).resolve().parent / "kustomize_corpus"
CASES = CORPUS / "cases"
PENDING_FILE = CORPUS / "PENDING"
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MIN_CASES = 100
ERROR_DEADLINE_SECONDS = 1.0


def case_names() -> list[str]:
    return sorted(path.name for path in CASES.iterdir() if path.is_dir())


def pending_names() -> list[str]:
    """Case names listed in PENDING: one per line, ``#`` starts a comment."""
    names = []
    for line in PENDING_FILE.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def read_snapshot(top: Path) -> dict[str, bytes]:
    """Every regular file below ``top``, keyed by its ``/``-separated relative path."""
    snapshot = {}
    for directory, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(directory, filename)
            if path.is_symlink() or not path.is_file():
                continue
            snapshot[path.relative_to(top).as_posix()] = path.read_bytes()
    return snapshot


def read_line(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


def case_entry(case: Path) -> str:
    entry_file = case / "entry"
    return read_line(entry_file) if entry_file.exists() else ""


def entry_kustomization(snapshot: dict[str, bytes], entry: str) -> str:
    """The snapshot path of the entry's kustomization file (the first spelling present)."""
    prefix = f"{entry}/" if entry else ""
    for name in KUSTOMIZATION_NAMES:
        if prefix + name in snapshot:
            return prefix + name
    return prefix + KUSTOMIZATION_NAMES[0]


def expected_error_path(case: Path, snapshot: dict[str, bytes], entry: str) -> str:
    names_file = case / "error-names"
    if names_file.exists():
        return read_line(names_file)
    return entry_kustomization(snapshot, entry)


def corpus_params() -> list[Any]:
    pending = set(pending_names())
    marks = pytest.mark.xfail(strict=True, reason="listed in kustomize_corpus/PENDING")
    return [
        pytest.param(name, marks=marks) if name in pending else pytest.param(name)
        for name in case_names()
    ]


@pytest.mark.parametrize("name", corpus_params())
def test_case(name: str) -> None:
    case = CASES / name
    snapshot = read_snapshot(case / "input")
    entry = case_entry(case)
    expected_yaml = case / "expected.yaml"

    if expected_yaml.exists() and not (case / "refuse").exists():
        rendered = render.build(snapshot, entry)
        expected = expected_yaml.read_bytes().decode("utf-8")
        assert rendered.yaml == expected
        assert rendered.digest == "sha256:" + hashlib.sha256(expected.encode()).hexdigest()
        return

    path = expected_error_path(case, snapshot, entry)
    started = time.monotonic()
    with pytest.raises(render.RenderError) as raised:
        render.build(snapshot, entry)
    elapsed = time.monotonic() - started
    assert elapsed < ERROR_DEADLINE_SECONDS, f"the build took {elapsed:.2f} s to fail"
    assert path in str(raised.value)


def test_corpus_shape() -> None:
    names = case_names()
    assert len(names) >= MIN_CASES
    problems = []
    for name in names:
        case = CASES / name
        outcomes = [f for f in ("expected.yaml", "expected-error.txt") if (case / f).exists()]
        if len(outcomes) != 1:
            problems.append(f"{name}: has {outcomes or 'no expectation'}")
        if not (case / "input").is_dir():
            problems.append(f"{name}: no input/ directory")
        entry = case_entry(case)
        if entry and not (case / "input" / entry).is_dir():
            problems.append(f"{name}: entry {entry!r} is not a directory in input/")
        if (case / "expected-error.txt").exists() and not (case / "error-names").exists():
            problems.append(f"{name}: fails in kubectl but has no error-names")
        for one_line in ("error-names", "refuse", "entry"):
            path = case / one_line
            if path.exists() and len(path.read_text(encoding="utf-8").strip().splitlines()) != 1:
                problems.append(f"{name}: {one_line} must hold exactly one line")
    assert problems == []


def test_pending_names_known_cases() -> None:
    pending = pending_names()
    assert sorted(set(pending) - set(case_names())) == []
    assert len(pending) == len(set(pending)), "a case is listed twice in PENDING"
