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


# Each agent module is imported in turn in a fresh interpreter; the heavy modules that appear
# are blamed on the module whose import brought them.
IMPORT_EACH = """
import importlib, json, pkgutil, sys
import rciots.agent
heavy = {"rciots.controller", "pygit2", "fastapi", "watchdog", "ruamel", "jsonschema", "uvicorn"}
def loaded():
    return {m for m in sys.modules if m in heavy or m.split(".")[0] in heavy
            or m.startswith("rciots.controller")}
found, blamed = [], {}
for info in pkgutil.iter_modules(rciots.agent.__path__, "rciots.agent."):
    before = loaded()
    importlib.import_module(info.name)
    found.append(info.name)
    brought = sorted(loaded() - before)
    if brought:
        blamed[info.name] = brought
print(json.dumps({"found": found, "blamed": blamed}))
"""


def test_no_agent_module_loads_the_controller_or_its_dependencies() -> None:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH], capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout)
    assert result["blamed"] == {}
    modules = {path.stem for path in (REPO / "agent").glob("*.py")} - {"__init__"}
    assert sorted(result["found"]) == sorted(f"rciots.agent.{name}" for name in modules)
    assert "rciots.agent.run" in result["found"]  # the module list is not empty


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
