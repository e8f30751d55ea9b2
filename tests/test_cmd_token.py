"""``rciots token create`` on real files: what it writes, prints, and refuses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rciots.controller import cli, tokens

TENANT = "apiVersion: rciots.io/v1\nkind: Tenant\nmetadata:\n  name: acme\n"
TOKEN_LINE = re.compile(r"rciots-pt-[A-Za-z0-9_-]{43}\n")
HEADER = (
    "# Created by `rciots token create`.\n"
    "# Only a hash of the secret is stored here; the token itself was shown once.\n"
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fleet repo with tenant ``acme`` and its template ``web``."""
    root = tmp_path / "fleet"
    (root / "tenants/acme/templates/web").mkdir(parents=True)
    (root / "tenants/acme/tenant.yaml").write_text(TENANT)
    (root / "tenants/acme/templates/web/kustomization.yaml").write_text("resources: []\n")
    return root


def create(repo: Path, *args: str) -> int:
    return cli.main(["token", "create", "--repo", str(repo), "--tenant", "acme", *args])


def error_of(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_prints_the_token_alone_on_stdout(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert create(repo, "--name", "line-1") == 0
    assert TOKEN_LINE.fullmatch(capsys.readouterr().out)


def test_tells_on_stderr_what_it_wrote_and_to_keep_the_token(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create(repo, "--name", "line-1")
    assert capsys.readouterr().err == (
        "wrote tenants/acme/tokens/line-1.yaml (it holds only a hash of the token); commit it "
        "and open a pull request.\nThe token above is shown only this once and is stored "
        "nowhere: store it now, e.g. in your secret manager.\n"
    )


def test_writes_the_hash_with_manual_approval_by_default(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create(repo, "--name", "line-1")
    token = capsys.readouterr().out.strip()
    assert (repo / "tenants/acme/tokens/line-1.yaml").read_text() == (
        HEADER + "apiVersion: rciots.io/v1\n"
        "kind: ProvisioningToken\n"
        "metadata:\n"
        "  name: line-1\n"
        "spec:\n"
        f"  secretHash: {tokens.hash_token(token)}\n"
        "  approval: manual\n"
        "  enabled: true\n"
    )


def test_writes_every_option_given(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    create(
        repo,
        "--name",
        "line-1",
        "--approval",
        "auto",
        "--expires",
        "2099-12-31T18:00:00+02:00",
        "--max-devices",
        "25",
        "--template",
        "web",
        "--label",
        "site=berlin",
        "--label",
        "ready=true",
    )
    token = capsys.readouterr().out.strip()
    assert (
        (repo / "tenants/acme/tokens/line-1.yaml")
        .read_text()
        .endswith(
            "spec:\n"
            f"  secretHash: {tokens.hash_token(token)}\n"
            "  approval: auto\n"
            "  enabled: true\n"
            '  expires: "2099-12-31T16:00:00Z"\n'
            "  maxDevices: 25\n"
            "  template: web\n"
            "  labels:\n"
            "    site: berlin\n"
            "    ready: 'true'\n"
        )
    )


def test_expiry_date_is_written_as_midnight_utc(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create(repo, "--name", "line-1", "--expires", "2099-01-31")
    text = (repo / "tenants/acme/tokens/line-1.yaml").read_text()
    assert '  expires: "2099-01-31T00:00:00Z"\n' in text


def test_token_is_in_no_file_of_the_repo(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    create(repo, "--name", "line-1", "--template", "web", "--label", "site=berlin")
    out = capsys.readouterr().out
    token = out.strip()
    assert out.count(token) == 1
    leaks = [p for p in repo.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    assert leaks == []


@pytest.mark.e2e
def test_token_is_in_no_commit(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    create(repo, "--name", "line-1")
    token = capsys.readouterr().out.strip()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "add token"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env)
    grep = subprocess.run(
        ["git", "-C", str(repo), "grep", "-F", token, "HEAD"], capture_output=True, check=False
    )
    assert (grep.returncode, grep.stdout) == (1, b"")
    shown = subprocess.run(
        ["git", "-C", str(repo), "show", "--name-only", "--format=", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "tenants/acme/tokens/line-1.yaml\n" in shown.stdout


@pytest.mark.e2e
def test_installed_console_script_creates_a_token(repo: Path) -> None:
    script = Path(sys.executable).parent / "rciots"
    done = subprocess.run(
        [script, "token", "create", "--tenant", "acme", "--name", "line-1"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, bool(TOKEN_LINE.fullmatch(done.stdout))) == (0, True)
    assert (repo / "tenants/acme/tokens/line-1.yaml").is_file()


def test_unknown_tenant(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["token", "create", "--repo", str(repo), "--tenant", "x", "--name", "n"])
    assert code == 1
    assert error_of(capsys) == (
        "rciots: error: unknown tenant 'x': tenants/x/tenant.yaml does not exist "
        "(create the tenant first)\n"
    )


def test_existing_token_is_refused_and_kept(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "tenants/acme/tokens").mkdir()
    (repo / "tenants/acme/tokens/n.yaml").write_text("# mine\n")
    assert create(repo, "--name", "n") == 1
    assert error_of(capsys) == (
        "rciots: error: token 'n' already exists: tenants/acme/tokens/n.yaml "
        "(choose another --name or delete the file)\n"
    )
    assert (repo / "tenants/acme/tokens/n.yaml").read_text() == "# mine\n"


def test_malformed_expiry(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert create(repo, "--name", "n", "--expires", "2026-13-01") == 1
    assert error_of(capsys) == (
        "rciots: error: bad --expires '2026-13-01': write a date (2027-12-31) or an RFC 3339 "
        "time with zone (2027-12-31T18:00:00Z)\n"
    )


def test_expiry_in_the_past(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert create(repo, "--name", "n", "--expires", "2020-01-01") == 1
    assert error_of(capsys).startswith(
        "rciots: error: bad --expires '2020-01-01': that is not in the future (it is now "
    )


def test_expiry_without_zone(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert create(repo, "--name", "n", "--expires", "2099-01-01T10:00:00") == 1
    assert error_of(capsys) == (
        "rciots: error: bad --expires '2099-01-01T10:00:00': the time has no zone: add Z for "
        "UTC or an offset such as +02:00 (2027-12-31T18:00:00Z)\n"
    )


def test_bad_token_name(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert create(repo, "--name", "Line_1") == 1
    assert error_of(capsys) == (
        "rciots: error: bad --name 'Line_1': use a DNS-1123 label: lowercase letters, digits "
        "and '-', starting and ending with a letter or digit, at most 63 characters\n"
    )


def test_bad_tenant_name(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["token", "create", "--repo", str(repo), "--tenant", "../x", "--name", "n"])
    assert code == 1
    assert error_of(capsys).startswith("rciots: error: bad --tenant '../x': use a DNS-1123 label")


def test_bad_label(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert create(repo, "--name", "n", "--label", "site") == 1
    assert error_of(capsys) == (
        "rciots: error: bad --label 'site': label 'site' has no '=': write it as key=value\n"
    )


def test_bad_label_value(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert create(repo, "--name", "n", "--label", "site=a b") == 1
    assert error_of(capsys).startswith(
        "rciots: error: bad --label 'site=a b': label value 'a b' is not valid: "
    )


def test_unknown_template(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert create(repo, "--name", "n", "--template", "shop") == 1
    assert error_of(capsys) == (
        "rciots: error: unknown template 'shop': tenants/acme/templates/shop/ has no "
        "kustomization.yaml, kustomization.yml or Kustomization (create the template first or "
        "choose another --template)\n"
    )


def test_template_folder_without_kustomization_is_unknown(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "tenants/acme/templates/shop").mkdir()
    (repo / "tenants/acme/templates/shop/deployment.yaml").write_text("kind: Deployment\n")
    assert create(repo, "--name", "n", "--template", "shop") == 1
    assert "unknown template 'shop'" in error_of(capsys)


@pytest.mark.parametrize("kustomization", ["kustomization.yml", "Kustomization"])
def test_template_with_any_kustomization_name_is_known(
    repo: Path, capsys: pytest.CaptureFixture[str], kustomization: str
) -> None:
    (repo / "tenants/acme/templates/shop").mkdir()
    (repo / "tenants/acme/templates/shop" / kustomization).write_text("resources: []\n")
    assert create(repo, "--name", "n", "--template", "shop") == 0


def test_nothing_is_written_when_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    create(repo, "--name", "n", "--template", "shop")
    assert not (repo / "tenants/acme/tokens").exists()


def test_max_devices_below_one_is_a_usage_error(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        create(repo, "--name", "n", "--max-devices", "0")
    assert exit_info.value.code == 2
    assert "argument --max-devices: '0' is not a whole number of at least 1" in (
        capsys.readouterr().err
    )


def test_repo_that_is_not_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    assert create(missing, "--name", "n") == 1
    assert error_of(capsys) == (
        f"rciots: error: fleet repo {str(missing)!r} is not a directory (give its working tree "
        "with --repo)\n"
    )


def test_symlinked_tokens_folder_is_refused(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo / "tenants/acme/tokens").symlink_to(outside)
    assert create(repo, "--name", "n") == 1
    assert error_of(capsys) == (
        "rciots: error: refusing to write tenants/acme/tokens/n.yaml: tenants/acme/tokens is a "
        "symbolic link (fleet repo files are never read or written through links; replace it "
        "with the real file or directory)\n"
    )
    assert list(outside.iterdir()) == []


def test_token_file_gets_default_permissions(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = os.umask(0o022)
    try:
        create(repo, "--name", "n")
    finally:
        os.umask(old)
    assert (repo / "tenants/acme/tokens/n.yaml").stat().st_mode & 0o777 == 0o644
