"""`rciots kustomize build` on every kustomization of fleet-repo-example prints exactly what
`kubectl kustomize` printed (recorded by tests/kustomize_example/record.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "kustomize_example"
EXAMPLE = HERE.parent.parent / "fleet-repo-example"
ENTRIES = sorted(
    p.parent.relative_to(EXAMPLE).as_posix() for p in EXAMPLE.rglob("kustomization.yaml")
)
RCIOTS = Path(sys.executable).parent / "rciots"


def build(entry: str) -> bytes:
    done = subprocess.run(
        [RCIOTS, "kustomize", "build", entry], cwd=EXAMPLE, capture_output=True, check=True
    )
    return done.stdout


def test_every_example_kustomization_has_a_recording() -> None:
    assert len(ENTRIES) >= 5
    recorded = {p.name for p in HERE.glob("*.yaml")}
    assert recorded == {e.replace("/", "__") + ".yaml" for e in ENTRIES}


@pytest.mark.parametrize("entry", ENTRIES)
def test_same_bytes_as_kubectl_recording(entry: str) -> None:
    assert build(entry) == (HERE / (entry.replace("/", "__") + ".yaml")).read_bytes()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("entry", ENTRIES)
def test_same_bytes_as_live_kubectl(entry: str) -> None:
    theirs = subprocess.run(
        ["kubectl", "kustomize", entry], cwd=EXAMPLE, capture_output=True, check=True
    ).stdout
    assert build(entry) == theirs
