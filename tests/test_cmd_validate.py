"""``rciots validate`` on real files and real Git repositories: exit codes, formats, places."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from rciots.controller import cli

EXAMPLE = Path(__file__).resolve().parent.parent / "fleet-repo-example"
TENANT = "apiVersion: rciots.io/v1\nkind: Tenant\nmetadata:\n  name: acme\n"
DEVICE = (
    "apiVersion: rciots.io/v1\nkind: Device\nmetadata:\n  name: gw-1\nspec:\n  approved: true\n"
)


def write(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLE, tmp_path / "repo", symlinks=True))


def test_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "valid (2 tenants" in err


def test_one_run_names_every_broken_file(
    example_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = next(example_copy.glob("tenants/*/devices/*/device.yaml"))
    token = next(example_copy.glob("tenants/*/tokens/*.yaml"))
    device.write_text(device.read_text().replace("kind: Device", "kind: Device\nkind: Device"))
    token.write_text(token.read_text() + "  unknownField: 1\n")
    assert cli.main(["validate", str(example_copy)]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2
    device_path = device.relative_to(example_copy).as_posix()
    token_path = token.relative_to(example_copy).as_posix()
    device_line = device.read_text().splitlines().index("kind: Device") + 2
    token_line = len(token.read_text().splitlines())
    assert lines[0].startswith(f"{device_path}:{device_line}:1: duplicate key 'kind'")
    assert lines[1].startswith(f"{token_path}:{token_line}:3: unknown field 'unknownField'")
    assert "2 error(s) in 2 file(s)" in err


def test_github_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"tenants/acme/tenant.yaml": TENANT + "spec:\n  enabled: 'no, really'\n"})
    assert cli.main(["validate", "--format", "github", str(tmp_path)]) == 1
    out, _ = capsys.readouterr()
    assert out == (
        "::error file=tenants/acme/tenant.yaml,line=6,col=12::spec.enabled must be a boolean "
        "(true or false), not the string 'no, really'\n"
    )


def test_json_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"tenants/acme/tenant.yaml": TENANT, "tenants/acme/x.txt": "x"})
    assert cli.main(["validate", "--format", "json", str(tmp_path)]) == 0
    out, _ = capsys.readouterr()
    (item,) = json.loads(out)
    assert item["path"] == "tenants/acme/x.txt"
    assert item["severity"] == "warning"
    assert (item["line"], item["column"]) == (1, 1)


def test_symlinks_are_refused_not_followed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = write(tmp_path / "outside", {"secret.yaml": "password: hunter2\n"})
    repo = write(tmp_path / "repo", {"tenants/acme/tenant.yaml": TENANT})
    (repo / "tenants/acme/tokens").mkdir()
    (repo / "tenants/acme/tokens/leak.yaml").symlink_to(secret / "secret.yaml")
    assert cli.main(["validate", str(repo)]) == 1
    out, _ = capsys.readouterr()
    assert out.startswith("tenants/acme/tokens/leak.yaml:1:1: symbolic links are not allowed")
    assert "hunter2" not in out


def test_a_git_revision_is_checked_not_the_working_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], git: Callable[..., str]
) -> None:
    repo = write(
        tmp_path,
        {"tenants/acme/tenant.yaml": TENANT, "tenants/acme/devices/gw-1/device.yaml": DEVICE},
    )
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "good")
    good = git(repo, "rev-parse", "HEAD").strip()
    (repo / "tenants/acme/devices/gw-1/device.yaml").write_text(DEVICE + "  colour: red\n")
    git(repo, "commit", "-q", "-am", "bad")

    assert cli.main(["validate", "--rev", "HEAD", str(repo)]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("tenants/acme/devices/gw-1/device.yaml:7:3: unknown field 'colour'")
    assert err.startswith("HEAD (")

    (repo / "tenants/acme/devices/gw-1/device.yaml").write_text(DEVICE)  # fixed, not committed
    assert cli.main(["validate", "--rev", "HEAD~1", str(repo)]) == 0
    assert cli.main(["validate", "--rev", good[:10], str(repo)]) == 0
    assert cli.main(["validate", "--rev", "HEAD", str(repo)]) == 1


def test_symlink_in_a_commit_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], git: Callable[..., str]
) -> None:
    repo = write(tmp_path, {"tenants/acme/tenant.yaml": TENANT})
    (repo / "tenants/acme/fleets").mkdir()
    (repo / "tenants/acme/fleets/x.yaml").symlink_to("/etc/passwd")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "link")
    (repo / "tenants/acme/fleets/x.yaml").unlink()
    assert cli.main(["validate", "--rev", "HEAD", str(repo)]) == 1
    out, _ = capsys.readouterr()
    assert out.startswith("tenants/acme/fleets/x.yaml:1:1: symbolic links are not allowed")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["validate", "/nonexistent/fleet"], "/nonexistent/fleet is not a directory"),
        (["validate", "--rev", "HEAD", "."], "is not inside a Git repository"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_revision_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], git: Callable[..., str]
) -> None:
    write(tmp_path, {"tenants/acme/tenant.yaml": TENANT})
    git(tmp_path, "init", "-q")
    assert cli.main(["validate", "--rev", "no-such-branch", str(tmp_path)]) == 2
    assert "revision 'no-such-branch' not found" in capsys.readouterr().err


def test_bad_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["validate", "--format", "xml"])
    assert exited.value.code == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err


def test_every_device_is_rendered_and_a_broken_template_is_one_error(
    example_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = example_copy / "tenants/northwind-retail/templates/edge-cache/kustomization.yaml"
    template.write_text(template.read_text() + "patches:\n- path: missing-patch.yaml\n")
    assert cli.main(["validate", str(example_copy)]) == 1
    out, _ = capsys.readouterr()
    (line,) = out.splitlines()
    assert line.startswith("tenants/northwind-retail/templates/edge-cache/kustomization.yaml:1:1: ")
    assert "missing-patch.yaml" in line
    # every device of the template is named, in one line
    for device in ("store-0042", "store-0107", "store-0213", "store-0388"):
        assert f"northwind-retail/{device}" in line


CLUSTER_ADMIN = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: fleet-admins
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cluster-admin
subjects:
- kind: ServiceAccount
  name: default
  namespace: default
"""


def test_the_tenant_policy_is_applied_and_can_be_given(
    example_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overlay = example_copy / "tenants/acme-sensors/devices/berlin-gw-01"
    (overlay / "admins.yaml").write_text(CLUSTER_ADMIN)
    kustomization = overlay / "kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text().replace("resources:\n", "resources:\n  - admins.yaml\n", 1)
    )
    assert cli.main(["validate", str(example_copy)]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(
        "tenants/acme-sensors/devices/berlin-gw-01/kustomization.yaml:1:1: policy: "
        "ClusterRoleBinding/fleet-admins: binds cluster role 'cluster-admin'"
    )
    assert line.endswith("(rendering acme-sensors/berlin-gw-01)")
    allowing = tmp_path / "policy.yaml"
    allowing.write_text(
        "apiVersion: rciots.io/v1\nkind: Policy\nspec:\n  tenants:\n    acme-sensors:\n"
        "      allow: [cluster-admin-binding]\n"
    )
    assert cli.main(["validate", str(example_copy), "--policy", str(allowing)]) == 0
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: rciots.io/v1\nkind: Policy\nspec:\n  allow: [no-such-rule]\n")
    capsys.readouterr()
    assert cli.main(["validate", str(example_copy), "--policy", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"{broken}:4:" in err
    assert "no-such-rule" in err
