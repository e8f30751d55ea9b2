"""The distribution's shape: import names, console scripts, schemas shipped, agent stays small."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def test_agent_imports_nothing_of_the_controller() -> None:
    code = (
        "import sys, rciots.agent, rciots.agent.cli\n"
        "heavy = {'rciots.controller', 'pygit2', 'fastapi', 'watchdog', 'ruamel', 'jsonschema',"
        " 'uvicorn'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("script", ["rciots", "rciots-agent"])
def test_console_scripts_answer_help(script: str) -> None:
    out = subprocess.run([BIN / script, "--help"], capture_output=True, text=True, check=False)
    assert out.returncode == 0
    assert out.stdout.startswith(f"usage: {script}")


def test_agent_version() -> None:
    out = subprocess.run(
        [BIN / "rciots-agent", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("rciots-agent ")


def test_schemas_ship_inside_the_package_and_match_the_top_level_folder() -> None:
    packaged = resources.files("rciots.controller.schemafiles")
    for path in sorted((REPO / "schemas").glob("*.json")):
        shipped = json.loads((packaged / path.name).read_text(encoding="utf-8"))
        assert shipped == json.loads(path.read_text(encoding="utf-8"))
        assert shipped["$schema"] == "https://json-schema.org/draft/2020-12/schema"
