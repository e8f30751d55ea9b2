"""Status page credentials: the admin's and tenants' viewers', and the admin credential file."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from rciots.controller import auth, fleet, tokens

ACME_VIEWER = "rciots-vw-acme-credential"
SHARED_VIEWER = "rciots-vw-shared-credential"
ADMIN = "rciots-adm-the-admin"


def tenant(name: str, *viewers: tuple[str, str]) -> fleet.TenantModel:
    return fleet.TenantModel(
        fleet.Tenant(
            name,
            f"tenants/{name}",
            name,
            viewers=tuple(fleet.Viewer(who, tokens.hash_token(secret)) for who, secret in viewers),
        )
    )


MODEL = fleet.FleetModel(
    {
        "acme": tenant("acme", ("ops", ACME_VIEWER), ("both", SHARED_VIEWER)),
        "beta": tenant("beta", ("both", SHARED_VIEWER)),
        "gamma": tenant("gamma"),
    }
)


def test_a_viewer_sees_the_tenants_that_list_its_hash() -> None:
    acme = auth.identify(ACME_VIEWER, ADMIN, MODEL)
    assert acme == auth.Principal("ops", frozenset({"acme"}))
    assert acme is not None
    assert acme.may_see("acme")
    assert not acme.may_see("beta")
    assert not acme.admin
    shared = auth.identify(SHARED_VIEWER, ADMIN, MODEL)
    assert shared is not None
    assert shared.tenants == frozenset({"acme", "beta"})


def test_the_admin_sees_every_tenant() -> None:
    admin = auth.identify(ADMIN, ADMIN, MODEL)
    assert admin is not None
    assert admin.admin
    assert admin.may_see("anything")


@pytest.mark.parametrize(
    "credential",
    ["", "wrong", ADMIN + "x", ADMIN[:-1], tokens.hash_token(ACME_VIEWER), "x" * 10_000],
)
def test_anything_else_is_nobody(credential: str) -> None:
    assert auth.identify(credential, ADMIN, MODEL) is None


def test_without_an_admin_credential_only_viewers_get_in() -> None:
    assert auth.identify(ADMIN, None, MODEL) is None
    assert auth.identify(ACME_VIEWER, None, MODEL) is not None


def test_the_admin_credential_is_made_once_readable_by_its_owner_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    with caplog.at_level(logging.INFO):
        token, path = auth.load_or_create_admin_token(state)
    assert path == state / auth.ADMIN_FILE
    assert token.startswith(auth.ADMIN_PREFIX)
    assert len(token) > 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in caplog.text  # where it is is logged...
    assert token not in caplog.text  # ...never what it is
    again, _ = auth.load_or_create_admin_token(state)
    assert again == token


def test_an_admin_token_file_must_hold_a_credential(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        auth.read_admin_token(empty)
    with pytest.raises(ValueError, match="cannot read the admin token file"):
        auth.read_admin_token(tmp_path / "missing")
    given = tmp_path / "given"
    given.write_text("  s3cret-admin  \n")
    assert auth.read_admin_token(given) == "s3cret-admin"
