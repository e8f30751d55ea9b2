"""docs/configuration.md against the code: both reference tables are what the code makes, and
every option of `rciots controller` really takes its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from rciots.agent import config
from rciots.controller import cli, cmd_controller

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def section(text: str, name: str) -> str:
    begin = f"<!-- BEGIN {name} reference"
    assert text.count(begin) == 1
    return text.split(begin, 1)[1].split("-->\n", 1)[1].split(f"<!-- END {name} reference", 1)[0]


def test_the_controller_table_is_the_one_the_parser_makes() -> None:
    assert section(PAGE.read_text(), "controller") == cmd_controller.reference()


def test_the_agent_table_is_the_one_the_option_table_makes() -> None:
    assert section(PAGE.read_text(), "agent") == config.reference_markdown()


def parse(argv: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> object:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return cli.build_parser(["controller"]).parse_args(["controller", "repo", *argv])


def test_controller_options_come_from_the_environment_and_the_command_line_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "RCIOTS_POLL_INTERVAL": "42",
        "RCIOTS_WORKTREE": "yes",
        "RCIOTS_SERVER_NAME": "a.example, 10.0.0.1",
        "RCIOTS_ENROLL_LISTEN": "off",
    }
    args = parse([], monkeypatch, env)
    assert args.poll_interval == 42.0  # type: ignore[attr-defined]
    assert args.worktree is True  # type: ignore[attr-defined]
    assert args.server_name == ["a.example", "10.0.0.1"]  # type: ignore[attr-defined]
    assert args.enroll_listen == "off"  # type: ignore[attr-defined]
    args = parse(["--poll-interval", "7"], monkeypatch, env)
    assert args.poll_interval == 7.0  # type: ignore[attr-defined]


def test_a_bad_value_in_the_environment_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse([], monkeypatch, {"RCIOTS_POLL_INTERVAL": "soon"})
    assert exited.value.code == 2
    assert "not a number: 'soon'" in capsys.readouterr().err


def test_help_names_each_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["controller", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "[$RCIOTS_POLL_INTERVAL]" in shown
    assert "[$RCIOTS_CONNECT_LISTEN]" in shown
