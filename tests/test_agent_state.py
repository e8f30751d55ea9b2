"""What the agent keeps across restarts (``rciots.agent.state``), in real folders: the identity as
files (``DirectoryIdentity``), the identity in a Kubernetes Secret through a real executable
standing in for kubectl (``SecretIdentity``; no API server exists on these machines), and the
last desired and applied bundles and the inventory (``StateDir``)."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rciots.agent.bundle import ApplyResult, Bundle, ResourceId, ResourceResult, digest_of
from rciots.agent.state import DirectoryIdentity, Identity, SecretIdentity, StateDir, StateError
from tests import fakekubectl


def pem(label: str, body: str) -> bytes:
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


def identity(tag: str = "a") -> Identity:
    return Identity(
        device_id=f"dev-{tag}",
        tenant="acme-sensors",
        name="gw-01",
        connector_url="wss://controller.example:8444/v1/connect",
        device_token=f"rciots-dt-{tag}-device-token-secret",
        key_pem=pem("PRIVATE KEY", f"key{tag}"),
        certificate_pem=pem("CERTIFICATE", f"cert{tag}"),
        ca_pem=pem("CERTIFICATE", "root"),
    )


PENDING_KEY = pem("PRIVATE KEY", "pending")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- DirectoryIdentity ------------------------------------------------------------------------


def test_no_folder_is_no_identity(tmp_path: Path) -> None:
    store = DirectoryIdentity(tmp_path / "identity")
    assert store.load() is None
    assert store.load_pending_key() is None
    assert not (tmp_path / "identity").exists()  # looking creates nothing


def test_an_identity_saved_loads_the_same(tmp_path: Path) -> None:
    DirectoryIdentity(tmp_path / "identity").save(identity())
    assert DirectoryIdentity(tmp_path / "identity").load() == identity()


def test_the_identity_files_and_their_modes(tmp_path: Path) -> None:
    folder = tmp_path / "identity"
    DirectoryIdentity(folder).save(identity())
    assert mode(folder) == 0o700
    assert {p.name: mode(p) for p in folder.iterdir()} == {
        "identity.json": 0o644,
        "device-token": 0o600,
        "key.pem": 0o600,
        "certificate.pem": 0o644,
        "ca.pem": 0o644,
    }
    assert json.loads((folder / "identity.json").read_text()) == {
        "deviceId": "dev-a",
        "tenant": "acme-sensors",
        "name": "gw-01",
        "connectorUrl": "wss://controller.example:8444/v1/connect",
    }
    assert (folder / "device-token").read_text() == "rciots-dt-a-device-token-secret"
    assert (folder / "key.pem").read_bytes() == identity().key_pem


def test_the_identity_json_file_holds_no_secret(tmp_path: Path) -> None:
    folder = tmp_path / "identity"
    DirectoryIdentity(folder).save(identity())
    text = (folder / "identity.json").read_text()
    assert "rciots-dt-" not in text
    assert "PRIVATE KEY" not in text


def test_files_without_identity_json_are_no_identity(tmp_path: Path) -> None:
    """identity.json marks a complete identity: what a crash before it leaves is none."""
    folder = tmp_path / "identity"
    DirectoryIdentity(folder).save(identity())
    (folder / "identity.json").unlink()
    assert DirectoryIdentity(folder).load() is None


def test_the_pending_key_is_kept_owner_only_until_the_identity_arrives(tmp_path: Path) -> None:
    folder = tmp_path / "identity"
    store = DirectoryIdentity(folder)
    store.save_pending_key(PENDING_KEY)
    assert mode(folder) == 0o700
    assert mode(folder / "pending-key.pem") == 0o600
    assert DirectoryIdentity(folder).load_pending_key() == PENDING_KEY
    assert store.load() is None
    store.save(identity())
    assert store.load_pending_key() is None
    assert not (folder / "pending-key.pem").exists()


def test_the_pending_key_can_be_dropped(tmp_path: Path) -> None:
    store = DirectoryIdentity(tmp_path / "identity")
    store.save_pending_key(PENDING_KEY)
    store.save_pending_key(None)
    assert store.load_pending_key() is None
    store.save_pending_key(None)  # twice is fine


def test_an_unreadable_identity_names_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "identity"
    DirectoryIdentity(folder).save(identity())
    (folder / "identity.json").write_text("{not json")
    with pytest.raises(StateError, match=f"the identity in {folder} cannot be read: "):
        DirectoryIdentity(folder).load()


def test_an_identity_without_a_file_names_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "identity"
    DirectoryIdentity(folder).save(identity())
    (folder / "ca.pem").unlink()
    with pytest.raises(StateError) as raised:
        DirectoryIdentity(folder).load()
    assert str(raised.value).startswith(f"the identity in {folder} cannot be read: [Errno 2]")


def test_an_identity_json_of_another_shape_names_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "identity"
    DirectoryIdentity(folder).save(identity())
    (folder / "identity.json").write_text("[]")
    with pytest.raises(StateError, match=f"the identity in {folder} cannot be read: "):
        DirectoryIdentity(folder).load()


def test_an_identity_that_cannot_be_written_names_its_folder(tmp_path: Path) -> None:
    (tmp_path / "identity").write_text("a file where the folder should be")
    store = DirectoryIdentity(tmp_path / "identity")
    with pytest.raises(StateError) as raised:
        store.save(identity())
    assert str(raised.value).startswith(f"the identity in {tmp_path / 'identity'} cannot be ")
    assert identity().device_token not in str(raised.value)
    with pytest.raises(StateError) as raised:
        store.save_pending_key(PENDING_KEY)
    assert str(raised.value).startswith(f"the identity in {tmp_path / 'identity'} cannot be ")


def test_a_new_identity_replaces_the_old_one(tmp_path: Path) -> None:
    store = DirectoryIdentity(tmp_path / "identity")
    store.save(identity("a"))
    store.save(identity("b"))
    assert store.load() == identity("b")


# Saves in processes of their own (forked from one interpreter, which imports the agent once),
# each dying (os._exit, as in a power cut) before its N-th rename: every file of the identity
# becomes visible through one rename. Prints each child's exit status.
CRASHING_SAVES = """
import base64, json, os, sys
from pathlib import Path
from rciots.agent.state import DirectoryIdentity, Identity
jobs, files = json.loads(sys.argv[1]), json.loads(sys.argv[2])
identity = Identity.from_files({k: base64.b64decode(v) for k, v in files.items()})
statuses = []
for folder, limit in jobs:
    pid = os.fork()
    if pid == 0:
        real_replace, renames = os.replace, [0]
        def replace(source, target):
            if renames[0] == limit:
                os._exit(3)
            renames[0] += 1
            real_replace(source, target)
        os.replace = replace
        DirectoryIdentity(Path(folder)).save(identity)
        os._exit(0)
    statuses.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(json.dumps(statuses))
"""
RENAMES = 12  # a save makes 10 (5 files written, then moved in): the last ones finish


def save_crashing(folders: list[Path], saved: Identity) -> list[bool]:
    """Save ``saved`` into each folder in a process that dies before rename number i (i, the
    folder's index); for each, True when it died, False when the save finished first."""
    files = {k: base64.b64encode(v).decode() for k, v in saved.to_files().items()}
    jobs = [(str(folder), limit) for limit, folder in enumerate(folders)]
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_SAVES, json.dumps(jobs), json.dumps(files)],
        capture_output=True,
        text=True,
        check=True,
    )
    statuses = json.loads(done.stdout)
    assert set(statuses) <= {0, 3}, done.stderr
    return [status == 3 for status in statuses]


def test_a_crash_at_any_point_of_a_replacement_leaves_the_old_or_the_new_identity(
    tmp_path: Path,
) -> None:
    """A certificate renewal saves a new key and certificate over the old ones: a crash in
    between must never leave the new key with the old certificate (TLS would refuse the pair
    for good, and the device could not connect again)."""
    folders = [tmp_path / f"identity-{renames}" for renames in range(RENAMES)]
    for folder in folders:
        DirectoryIdentity(folder).save(identity("a"))
    died = save_crashing(folders, identity("b"))
    assert died.count(True) >= 5  # it died at every rename of the five files, at least
    assert died[-1] is False  # and the last save finished
    for renames, folder in enumerate(folders):
        loaded = DirectoryIdentity(folder).load()
        assert loaded in (identity("a"), identity("b")), renames
        if not died[renames]:
            assert loaded == identity("b")


def test_a_crash_during_the_first_save_leaves_no_identity_or_all_of_it(tmp_path: Path) -> None:
    """Before identity.json is in place the pending key stays, so that enrolling again sends
    the same key (which the controller knows)."""
    folders = [tmp_path / f"identity-{renames}" for renames in range(RENAMES)]
    for folder in folders:
        DirectoryIdentity(folder).save_pending_key(PENDING_KEY)
    died = save_crashing(folders, identity("b"))
    assert died.count(True) >= 5
    for renames, folder in enumerate(folders):
        loaded = DirectoryIdentity(folder).load()
        assert loaded in (None, identity("b")), renames
        if loaded is None:
            assert DirectoryIdentity(folder).load_pending_key() == PENDING_KEY
        if not died[renames]:
            assert loaded == identity("b")
            assert DirectoryIdentity(folder).load_pending_key() is None


# -- SecretIdentity ---------------------------------------------------------------------------

# A kubectl that keeps Secrets in a folder (FAKE_SECRETS) and records every run in
# fakekubectl's log format: `get secret NAME -n NS -o json` answers the stored Secret or
# kubectl's NotFound; `apply` stores the Secret from stdin whole (what a server-side apply by
# the only field manager leaves); FAKE_FAIL names a verb that fails as a forbidden request,
# FAKE_QUOTE one that fails quoting what it was given.
SECRET_KUBECTL = r"""
import base64, json, os, sys
argv = sys.argv[1:]
data = sys.stdin.buffer.read()
with open(os.environ["FAKE_KUBE_LOG"], "a") as log:
    record = {"tool": os.path.basename(sys.argv[0]), "argv": argv,
              "stdin": base64.b64encode(data).decode()}
    log.write(json.dumps(record) + "\n")
if argv[0] == os.environ.get("FAKE_FAIL"):
    sys.stderr.write('Error from server (Forbidden): secrets "x" is forbidden: User '
                     '"system:serviceaccount:edge:agent" cannot ' + argv[0] + '\n')
    sys.exit(1)
if argv[0] == os.environ.get("FAKE_QUOTE"):  # a server that quotes the object in its error
    sys.stderr.write('Error from server (Invalid): Secret is invalid: ' + data.decode() + '\n')
    sys.exit(1)
store = os.environ["FAKE_SECRETS"]
if argv[:2] == ["get", "secret"]:
    name, namespace = argv[2], argv[argv.index("-n") + 1]
    path = os.path.join(store, namespace + "_" + name + ".json")
    if not os.path.exists(path):
        sys.stderr.write('Error from server (NotFound): secrets "' + name + '" not found\n')
        sys.exit(1)
    sys.stdout.write(open(path).read())
    sys.exit(0)
if argv[0] == "apply":
    secret = json.loads(data)
    meta = secret["metadata"]
    with open(os.path.join(store, meta["namespace"] + "_" + meta["name"] + ".json"), "w") as f:
        json.dump(secret, f)
    print("secret/" + meta["name"] + " serverside-applied")
    sys.exit(0)
sys.stderr.write("error: unknown command " + repr(argv[0]) + " for kubectl\n")
sys.exit(1)
"""


class Kube:
    """A folder with a kubectl on PATH, its run log and the Secrets it keeps."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, recording_only: bool) -> None:
        self.bin = root / "bin"
        self.log = root / "runs.jsonl"
        self.secrets = root / "secrets"
        self.secrets.mkdir(parents=True)
        if recording_only:
            fakekubectl.install(self.bin, "kubectl")  # records, and knows no `get`
        else:
            self.bin.mkdir()
            (self.bin / "kubectl").write_text(f"#!{sys.executable}\n{SECRET_KUBECTL}")
            (self.bin / "kubectl").chmod(0o755)
        monkeypatch.setenv("PATH", f"{self.bin}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_KUBE_LOG", str(self.log))
        monkeypatch.setenv("FAKE_SECRETS", str(self.secrets))

    def runs(self) -> list[tuple[str, list[str], bytes]]:
        return fakekubectl.records(self.log)

    def stored(self) -> dict[str, object]:
        secret: dict[str, object] = json.loads(
            (self.secrets / "edge_rciots-agent-identity.json").read_text()
        )
        return secret


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Kube:
    return Kube(tmp_path, monkeypatch, recording_only=False)


@pytest.fixture
def recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Kube:
    return Kube(tmp_path, monkeypatch, recording_only=True)


def secret_store() -> SecretIdentity:
    return SecretIdentity("kubectl", "edge", "rciots-agent-identity")


GET = ["get", "secret", "rciots-agent-identity", "-n", "edge", "-o", "json"]


def test_a_missing_secret_is_no_identity(kube: Kube) -> None:
    assert secret_store().load() is None
    assert kube.runs() == [("kubectl", GET, b"")]


def test_the_secret_holds_each_identity_file_in_base64(recording: Kube) -> None:
    secret_store().save(identity())
    [(tool, argv, stdin)] = recording.runs()
    assert (tool, argv) == (
        "kubectl",
        ["apply", "--server-side", "--field-manager=rciots-agent", "--force-conflicts", "-f", "-"],
    )
    files = identity().to_files()
    assert json.loads(stdin) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "rciots-agent-identity",
            "namespace": "edge",
            "labels": {"app.kubernetes.io/managed-by": "rciots-agent"},
        },
        "type": "Opaque",
        "data": {name: base64.b64encode(value).decode() for name, value in files.items()},
    }


def test_an_identity_in_a_secret_loads_the_same(kube: Kube) -> None:
    secret_store().save(identity())
    assert secret_store().load() == identity()


def test_no_secret_value_is_ever_on_a_command_line(kube: Kube) -> None:
    store = secret_store()
    store.save_pending_key(PENDING_KEY)
    store.load_pending_key()
    store.save(identity())
    store.load()
    runs = kube.runs()
    assert len(runs) == 5
    argvs = " ".join(" ".join(argv) for _, argv, _ in runs)
    secrets = [identity().device_token, "PRIVATE KEY", "pending", "keya"]
    secrets += [base64.b64encode(v).decode() for v in identity().to_files().values()]
    assert [s for s in secrets if s in argvs] == []


def test_the_pending_key_lives_in_the_secret_until_the_identity_replaces_it(kube: Kube) -> None:
    store = secret_store()
    store.save_pending_key(PENDING_KEY)
    assert store.load() is None
    assert store.load_pending_key() == PENDING_KEY
    store.save(identity())
    assert store.load_pending_key() is None
    data = kube.stored()["data"]
    assert isinstance(data, dict)
    assert sorted(data) == ["ca.pem", "certificate.pem", "device-token", "identity.json", "key.pem"]


def test_dropping_the_pending_key_leaves_it_out_of_the_secret(kube: Kube) -> None:
    store = secret_store()
    store.save_pending_key(PENDING_KEY)
    store.save_pending_key(None)
    assert store.load_pending_key() is None
    data = kube.stored()["data"]
    assert data == {}


def test_a_kubectl_that_fails_to_read_names_the_secret(recording: Kube) -> None:
    with pytest.raises(StateError) as raised:
        secret_store().load()
    assert str(raised.value) == (
        "cannot read Secret edge/rciots-agent-identity: error: unknown command 'get' for kubectl"
    )


def test_a_kubectl_that_fails_to_write_names_the_secret(
    kube: Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "apply")
    with pytest.raises(StateError) as raised:
        secret_store().save(identity())
    message = str(raised.value)
    assert message.startswith("cannot write Secret edge/rciots-agent-identity: Error from server")
    assert identity().device_token not in message


def test_a_write_error_that_quotes_the_secret_shows_none_of_its_secret_values(
    kube: Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QUOTE", "apply")
    with pytest.raises(StateError) as raised:
        secret_store().save(identity())
    message = str(raised.value)
    assert message.startswith(
        "cannot write Secret edge/rciots-agent-identity: Error from server (Invalid): "
    )
    files = identity().to_files()
    assert base64.b64encode(files["certificate.pem"]).decode() in message  # no secret
    for name in ("device-token", "key.pem"):
        assert base64.b64encode(files[name]).decode() not in message
    assert identity().device_token not in message


def test_a_missing_kubectl_is_a_state_error(tmp_path: Path) -> None:
    store = SecretIdentity(str(tmp_path / "no-kubectl"), "edge", "rciots-agent-identity")
    with pytest.raises(StateError, match=r"cannot run .*no-kubectl: \[Errno 2\]"):
        store.load()


def test_a_kubectl_that_hangs_is_a_state_error(
    recording: Kube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"hang": ["get"]}))
    monkeypatch.setenv("FAKE_KUBE_SCRIPT", str(script))
    store = SecretIdentity("kubectl", "edge", "rciots-agent-identity", timeout=0.5)
    with pytest.raises(StateError, match=r"cannot run kubectl: .* timed out after 0.5 seconds"):
        store.load()


def test_a_secret_that_is_no_identity_names_the_secret(kube: Kube) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "rciots-agent-identity", "namespace": "edge"},
        "data": {"identity.json": base64.b64encode(b'{"deviceId": "d"}').decode()},
    }
    (kube.secrets / "edge_rciots-agent-identity.json").write_text(json.dumps(secret))
    with pytest.raises(StateError) as raised:
        secret_store().load()
    assert str(raised.value) == "Secret edge/rciots-agent-identity: 'tenant'"


def test_a_secret_whose_identity_json_is_no_object_names_the_secret(kube: Kube) -> None:
    secret_store().save(identity())
    stored = kube.stored()
    data = stored["data"]
    assert isinstance(data, dict)
    data["identity.json"] = base64.b64encode(b"[]").decode()
    (kube.secrets / "edge_rciots-agent-identity.json").write_text(json.dumps(stored))
    with pytest.raises(StateError) as raised:
        secret_store().load()
    assert str(raised.value).startswith("Secret edge/rciots-agent-identity: list indices")


# -- StateDir ---------------------------------------------------------------------------------

CM = ResourceId("v1", "ConfigMap", "site", "edge")
NS = ResourceId("v1", "Namespace", "edge")
MANIFESTS = (
    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: edge\n---\n"
    "apiVersion: v1\ndata:\n  city: Berlin\nkind: ConfigMap\nmetadata:\n  name: site\n"
    "  namespace: edge\n"
)
BUNDLE = Bundle(
    "8f14e45fceea167a5a36dedd4bea2543d1d3ba6e", digest_of(MANIFESTS), MANIFESTS, (NS, CM)
)


def test_an_empty_state_dir_has_nothing(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    assert state.load_desired() is None
    assert state.load_applied() is None
    assert state.load_inventory() == ()


def test_the_desired_bundle_round_trips(tmp_path: Path) -> None:
    StateDir(tmp_path / "state").save_desired(BUNDLE)
    loaded = StateDir(tmp_path / "state").load_desired()
    assert loaded == BUNDLE
    assert loaded is not None
    assert loaded.manifests == MANIFESTS


def test_the_applied_bundle_round_trips_with_its_result(tmp_path: Path) -> None:
    result = ApplyResult(
        BUNDLE.digest,
        (ResourceResult(NS, "unchanged"), ResourceResult(CM, "failed", "denied by a webhook")),
        None,
    )
    StateDir(tmp_path / "state").save_applied(BUNDLE, result)
    assert StateDir(tmp_path / "state").load_applied() == (BUNDLE, result)


def test_an_apply_that_failed_as_a_whole_round_trips(tmp_path: Path) -> None:
    result = ApplyResult(BUNDLE.digest, (), "kubectl not found on PATH (is it installed?)")
    StateDir(tmp_path / "state").save_applied(BUNDLE, result)
    assert StateDir(tmp_path / "state").load_applied() == (BUNDLE, result)


def test_the_inventory_round_trips_in_order(tmp_path: Path) -> None:
    StateDir(tmp_path / "state").save_inventory((CM, NS))
    assert StateDir(tmp_path / "state").load_inventory() == (CM, NS)
    StateDir(tmp_path / "state").save_inventory(())
    assert StateDir(tmp_path / "state").load_inventory() == ()


def test_state_files_are_owner_only(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.save_desired(BUNDLE)
    state.save_applied(BUNDLE, ApplyResult(BUNDLE.digest))
    state.save_inventory((NS,))
    assert mode(tmp_path / "state") == 0o700
    assert {p.name: mode(p) for p in (tmp_path / "state").iterdir()} == {
        "desired.json": 0o600,
        "applied.json": 0o600,
        "inventory.json": 0o600,
    }


def test_a_save_replaces_the_file_and_never_rewrites_it_in_place(tmp_path: Path) -> None:
    """A reader (or a crash) sees the old file or the new one, never a mix."""
    state = StateDir(tmp_path / "state")
    state.save_desired(BUNDLE)
    path = tmp_path / "state" / "desired.json"
    before = path.read_bytes()
    with path.open("rb") as old:
        other = Bundle(
            "c9f0f895fb98ab9159f51fd0297e236d2c8a3b1e", digest_of("x: 1\n"), "x: 1\n", (CM,)
        )
        state.save_desired(other)
        assert old.read() == before  # the old file is whole: a new one took its name
    assert state.load_desired() == other
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["desired.json"]


def test_what_a_crash_left_beside_a_state_file_is_ignored(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.save_desired(BUNDLE)
    (tmp_path / "state" / ".desired.json.0a1b2c3d4e5f.tmp").write_text('{"revision": "hal')
    assert state.load_desired() == BUNDLE


def test_an_unreadable_state_file_names_itself(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.save_inventory((NS,))
    (tmp_path / "state" / "inventory.json").write_text("[{")
    with pytest.raises(StateError) as raised:
        state.load_inventory()
    assert str(raised.value).startswith(f"{tmp_path / 'state' / 'inventory.json'} cannot be read")


def test_a_state_file_of_another_shape_names_itself(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.save_applied(BUNDLE, ApplyResult(BUNDLE.digest))
    (tmp_path / "state" / "applied.json").write_text('{"revision": "r"}')
    with pytest.raises(StateError) as raised:
        state.load_applied()
    assert str(raised.value) == f"{tmp_path / 'state' / 'applied.json'} cannot be read: 'digest'"


def test_a_state_file_that_cannot_be_written_names_its_folder(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the folder should be")
    with pytest.raises(StateError) as raised:
        StateDir(tmp_path / "state").save_desired(BUNDLE)
    assert str(raised.value).startswith(f"{tmp_path / 'state' / 'desired.json'} cannot be written")
