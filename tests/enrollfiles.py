"""A fleet repo with tokens for the enrollment tests: one tenant, an auto and a manual token."""

from __future__ import annotations

from rciots.controller import fleet, loader, tokens
from tests import fleetfiles

T = fleetfiles.T
AUTO = "rciots-pt-auto-token-for-the-tests-0000000000000000000"
MANUAL = "rciots-pt-manual-token-for-the-tests-00000000000000000"
OTHER_TENANT = "rciots-pt-globex-token-for-the-tests-00000000000000000"


def token_file(name: str, secret: str, approval: str, extra: str = "") -> bytes:
    return (
        f"apiVersion: rciots.io/v1\nkind: ProvisioningToken\nmetadata:\n  name: {name}\n"
        f"spec:\n  secretHash: {tokens.hash_token(secret)}\n  approval: {approval}\n{extra}"
    ).encode()


def device_file(name: str, spec: str = "  approved: true\n") -> bytes:
    return (
        f"apiVersion: rciots.io/v1\nkind: Device\nmetadata:\n  name: {name}\n  labels:\n"
        f"    role: gw\nspec:\n{spec}"
    ).encode()


def repo(**tokens_extra: str) -> dict[str, bytes]:
    files = fleetfiles.repo()
    files[f"{T}/tokens/rollout.yaml"] = token_file(
        "rollout",
        AUTO,
        "auto",
        tokens_extra.get("rollout", "  labels:\n    role: gw\n    site: lyon\n"),
    )
    files[f"{T}/tokens/review.yaml"] = token_file("review", MANUAL, "manual")
    files["tenants/globex/tenant.yaml"] = fleetfiles.TENANT.replace(b"acme", b"globex")
    files["tenants/globex/tokens/globex.yaml"] = token_file("globex", OTHER_TENANT, "auto")
    return files


def model(files: dict[str, bytes]) -> fleet.FleetModel:
    result = loader.load(files)
    assert not [d for d in result.diagnostics if d.severity == "error"], result.diagnostics
    return result.model
