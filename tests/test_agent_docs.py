"""docs/agent.md against the code: the configuration reference is the table the code makes
from ``config.OPTIONS``, the example configuration loads, and the pages it links exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from rciots.agent import config

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "agent.md"
BEGIN = "<!-- BEGIN configuration reference: python -m rciots.agent.config --markdown -->\n"
END = "<!-- END configuration reference -->\n"


def documented_table(text: str) -> str:
    assert text.count(BEGIN) == 1
    assert text.count(END) == 1
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def test_the_configuration_reference_is_the_one_the_code_makes() -> None:
    """After a change to config.OPTIONS, paste the output of
    ``python -m rciots.agent.config --markdown`` between the markers in docs/agent.md."""
    assert documented_table(PAGE.read_text()) == config.reference_markdown()


def test_the_reference_has_one_row_per_option_with_its_variable() -> None:
    rows = config.reference_markdown().splitlines()[2:]
    assert len(rows) == len(config.OPTIONS)
    for row, option in zip(rows, config.OPTIONS, strict=True):
        assert f"| `{option.env}` |" in row
        assert row.endswith(f"| {option.help} |")


def test_secrets_have_no_file_option_and_no_command_line_option() -> None:
    [token] = [r for r in config.reference_markdown().splitlines() if "`RCIOTS_TOKEN`" in r]
    assert token.startswith("| — | — | `RCIOTS_TOKEN` |")


def test_a_changed_option_makes_the_page_differ() -> None:
    """The comparison can fail: a page with one meaning changed is not the reference."""
    changed = PAGE.read_text().replace("the podman executable", "the podman binary", 1)
    assert changed != PAGE.read_text()
    assert documented_table(changed) != config.reference_markdown()


def test_the_module_prints_the_reference() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rciots.agent.config", "--markdown"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == config.reference_markdown()


def test_the_module_without_the_flag_says_how_to_call_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rciots.agent.config"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stderr == "usage: python -m rciots.agent.config --markdown\n"


def test_the_example_configuration_loads(tmp_path: Path) -> None:
    text = PAGE.read_text()
    block = text.split("<!-- agent-toml-example", 1)[1].split("```toml\n", 1)[1]
    example = block.split("```", 1)[0]
    token = tmp_path / "token"
    token.write_text("rciots-pt-example\n")
    path = tmp_path / "agent.toml"
    path.write_text(example.replace('"/etc/rciots/token"', f'"{token}"'))
    loaded = config.load(path, {}, {})
    assert loaded == config.AgentConfig(
        enroll_url="https://controller.example:8443",
        token="rciots-pt-example",
        device_name="warehouse-gw-17",
        ca_file=Path("/etc/rciots/root.pem"),
        state_dir=Path("/var/lib/rciots-agent"),
        applier="podman",
        labels={"site": "lyon", "hardware": "rpi4"},
    )


def test_the_pages_it_links_exist() -> None:
    links = set(re.findall(r"\]\(([a-z-]+\.md)(?:#[a-z-]+)?\)", PAGE.read_text()))
    assert {"appliers.md", "protocol.md", "enrollment.md"} <= links
    for link in links:
        assert (PAGE.parent / link).is_file(), link


def test_the_anchors_it_links_exist() -> None:
    text = PAGE.read_text()
    anchors = re.findall(r"\]\(([a-z-]+\.md)?#([a-z0-9-]+)\)", text)
    assert ("appliers.md", "permissions-least-privilege") in anchors
    assert ("", "the-state-directory") in anchors
    for page, anchor in anchors:
        target = (PAGE.parent / page).read_text() if page else text
        headings = re.findall(r"^#+ (.+)$", target, flags=re.MULTILINE)
        slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
        assert anchor in slugs, f"{page or 'agent.md'}#{anchor}"
