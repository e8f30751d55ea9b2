"""What the appliers share: running tools (stdin, environment, timeout), Secret data out of
messages, and the choice of what to prune."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from rciots.agent import applier_support
from rciots.agent.bundle import ResourceId

CM = ResourceId("v1", "ConfigMap", "cfg", "edge")
DEPLOY = ResourceId("apps/v1", "Deployment", "web", "edge")
OLD = ResourceId("v1", "Service", "old", "edge")

SECRET = """\
apiVersion: v1
data:
  password: c2VjcmV0LXZhbHVl
  short: YWI=
kind: Secret
metadata:
  name: creds
stringData:
  token: "plain-token-1"
  cert: |
    -----BEGIN-----
    MIIBline
    -----END-----
type: Opaque
"""
CONFIG = """\
apiVersion: v1
data:
  password: visible-config
kind: ConfigMap
metadata:
  name: cfg
"""


def test_prunes_are_what_left_in_reverse_order_whatever_the_version():
    namespace = ResourceId("v1", "Namespace", "edge")
    beta = ResourceId("apps/v1beta1", "Deployment", "web", "edge")

    def key(resource: ResourceId) -> tuple[str, str, str, str]:
        return (resource.group, resource.kind, resource.namespace or "", resource.name)

    prunes = applier_support.pick_prunes([namespace, beta, OLD, OLD], [DEPLOY], key)
    assert prunes == [OLD, namespace]


def test_secret_values_are_found_in_secret_documents_only():
    documents = [(ResourceId("v1", "Secret", "creds"), SECRET), (CM, CONFIG)]
    values = applier_support.secret_values(documents)
    assert {"c2VjcmV0LXZhbHVl", "secret-value", "YWI=", "ab", "plain-token-1"} <= values
    assert "-----BEGIN-----\nMIIBline\n-----END-----" in values
    assert "MIIBline" in values
    assert "visible-config" not in values


def test_the_redactor_hides_secret_values_and_caps_length():
    redactor = applier_support.Redactor.for_documents([(ResourceId("v1", "Secret", "c"), SECRET)])
    text = redactor.clean(
        'error: data.password "c2VjcmV0LXZhbHVl" (secret-value) is bad; ab and about, a tab'
    )
    assert text == 'error: data.password "***" (***) is bad; *** and about, a tab'
    long = redactor.clean("x" * 5000)
    assert len(long) == applier_support.MESSAGE_LIMIT
    assert long.endswith(" ...")


def _tool(tmp_path: Path, name: str, body: str) -> dict[str, str]:
    """A real executable ``name`` in its own folder; the environment that finds it."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return {"PATH": str(folder)}


def test_a_tool_runs_with_stdin_and_the_given_environment(tmp_path):
    env = _tool(
        tmp_path,
        "echoer",
        "import os, sys\n"
        "sys.stdout.write(sys.stdin.read().upper() + os.environ['WHO'])\n"
        "sys.stderr.write(repr(sys.argv[1:]))\n"
        "sys.exit(3)\n",
    )
    env["WHO"] = "agent"
    output = applier_support.run(
        [applier_support.find_tool("echoer", env), "a b", "--x"],
        env=env,
        timeout=10,
        stdin="text",
    )
    assert (output.returncode, output.stdout, output.stderr) == (3, "TEXTagent", "['a b', '--x']")
    assert not output.ok
    assert output.message() == "['a b', '--x']"


def test_a_tool_that_outlives_its_timeout_is_killed_and_reported(tmp_path):
    env = _tool(tmp_path, "slow", "import time\nprint('started', flush=True)\ntime.sleep(30)\n")
    started = time.monotonic()
    output = applier_support.run(
        [applier_support.find_tool("slow", env), "apply"], env=env, timeout=0.5
    )
    assert time.monotonic() - started < 10
    assert output.returncode is None
    assert output.message() == "slow apply timed out after 0.5 s"


def test_a_tool_that_cannot_be_executed_is_missing(tmp_path):
    path = tmp_path / "kubectl"
    path.write_text("not a program")
    path.chmod(0o644)
    with pytest.raises(applier_support.ToolMissing, match="cannot run"):
        applier_support.run([str(path)], env=dict(os.environ), timeout=5)
