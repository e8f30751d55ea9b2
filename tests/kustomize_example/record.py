"""Record `kubectl kustomize` output for every kustomization in fleet-repo-example.

Run from the repository root with kubectl installed:

    .venv/bin/python tests/kustomize_example/record.py [--check]

Writes tests/kustomize_example/<path with '/' as '__'>.yaml; --check compares instead and
exits 1 on a difference. tests/test_kustomize_example.py compares the renderer with these.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent.parent / "fleet-repo-example"


def entries() -> list[str]:
    return sorted(
        p.parent.relative_to(EXAMPLE).as_posix() for p in EXAMPLE.rglob("kustomization.yaml")
    )


def golden(entry: str) -> Path:
    return HERE / (entry.replace("/", "__") + ".yaml")


def main() -> int:
    check = "--check" in sys.argv[1:]
    differ = 0
    for entry in entries():
        out = subprocess.run(
            ["kubectl", "kustomize", entry], cwd=EXAMPLE, capture_output=True, check=True
        ).stdout
        if check:
            if golden(entry).read_bytes() != out:
                print(f"differs: {entry}")
                differ += 1
        else:
            golden(entry).write_bytes(out)
    print(f"{len(entries())} kustomizations, {differ} differ", file=sys.stderr)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
