"""``rciots diff`` and ``rciots render`` on real Git repositories made from fleet-repo-example,
and the desired-state rules behind them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from rciots.controller import cli

EXAMPLE = Path(__file__).resolve().parent.parent / "fleet-repo-example"
OVERLAY = "tenants/acme-sensors/devices/berlin-gw-01/kustomization.yaml"
TEMPLATE = "tenants/acme-sensors/templates/mqtt-edge/mqtt-broker.yaml"


@pytest.fixture
def repo(tmp_path: Path, git: Callable[..., str]) -> Path:
    root = Path(shutil.copytree(EXAMPLE, tmp_path / "fleet"))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    return root


def commit_change(git: Callable[..., str], repo: Path, path: str, old: str, new: str) -> None:
    target = repo / path
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    git(repo, "commit", "-q", "-am", f"change {path}")


def diff_json(repo: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code = cli.main(["diff", str(repo), "HEAD~1", "HEAD", "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def test_one_overlay_change_lists_exactly_that_device(
    repo: Path, capsys: pytest.CaptureFixture[str], git: Callable[..., str]
) -> None:
    commit_change(git, repo, OVERLAY, "newTag:", 'newTag: "9.9.9"\n    # was:')
    code, result = diff_json(repo, capsys)
    assert code == 0
    assert result["changed"] == [
        {"tenant": "acme-sensors", "device": "berlin-gw-01", "change": "modified"}
    ]
    assert result["tenants"] == {"acme-sensors": 1}


def test_a_template_change_lists_only_devices_of_its_tenant(
    repo: Path, capsys: pytest.CaptureFixture[str], git: Callable[..., str]
) -> None:
    commit_change(
        git, repo, TEMPLATE, "name: mqtt-broker", "name: mqtt-broker\n  annotations: {x: y}"
    )
    code, result = diff_json(repo, capsys)
    assert code == 0
    changed = result["changed"]
    assert isinstance(changed, list)
    assert changed
    assert {item["tenant"] for item in changed} == {"acme-sensors"}
    assert "berlin-gw-01" in {item["device"] for item in changed}


def test_a_device_that_fails_to_render_at_head_exits_1(
    repo: Path, capsys: pytest.CaptureFixture[str], git: Callable[..., str]
) -> None:
    commit_change(git, repo, OVERLAY, "resources:", "resources:\n  - missing.yaml")
    code, result = diff_json(repo, capsys)
    assert code == 1
    assert result["failed"] == [
        {
            "tenant": "acme-sensors",
            "device": "berlin-gw-01",
            "error": f"{OVERLAY}: file 'missing.yaml' is not found",
        }
    ]


def test_text_diff_shows_the_changed_lines(
    repo: Path, capsys: pytest.CaptureFixture[str], git: Callable[..., str]
) -> None:
    commit_change(git, repo, OVERLAY, "newTag:", 'newTag: "9.9.9"\n    # was:')
    assert cli.main(["diff", str(repo), "HEAD~1", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 of 8 device(s) change between HEAD~1 and HEAD: acme-sensors 1\n")
    assert "+      - image: docker.io/library/eclipse-mosquitto:9.9.9\n" in out


def test_render_prints_what_kustomize_build_prints(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(["kustomize", "build", str(repo / "tenants/acme-sensors/devices/berlin-gw-01")])
        == 0
    )
    built = capsys.readouterr().out
    assert (
        cli.main(["render", str(repo), "--device", "acme-sensors/berlin-gw-01", "--rev", "HEAD"])
        == 0
    )
    assert capsys.readouterr().out == built


def test_render_of_an_unknown_device(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", str(repo), "--device", "acme-sensors/nope"]) == 1
    assert "no valid device acme-sensors/nope" in capsys.readouterr().err


def test_unknown_revision_is_a_usage_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["diff", str(repo), "HEAD", "no-such-branch"]) == 2
    assert "revision 'no-such-branch' not found" in capsys.readouterr().err
