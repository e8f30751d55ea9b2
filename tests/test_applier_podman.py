"""The podman applier against the real podman: kube play per workload, kube down of what left,
volumes and secrets cleaned up, per-pod status.

Needs podman, runc and a static busybox (``scripts/test-tools`` installs them as root); the
image is built here from busybox and imported under a tag of its own, and every pod, volume
and secret carries this run's suffix, so that nothing here touches what else runs on the
machine, and all of it is removed at the end.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from rciots.agent import applier
from rciots.agent.bundle import ApplyResult, Bundle, ResourceId, digest_of
from tests import podmanhost
from tests.podmanhost import Host

pytestmark = pytest.mark.podman


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    with podmanhost.running_podman(tmp_path_factory.mktemp("podman")) as made:
        yield made


# --- manifests ------------------------------------------------------------------------------


def configmap(host: Host, greeting: str, extra: bool = False) -> tuple[ResourceId, str]:
    name = f"cfg-{host.suffix}"
    more = "  extra: x\n" if extra else ""
    return ResourceId("v1", "ConfigMap", name), (
        f"apiVersion: v1\ndata:\n{more}  greeting: {greeting}\nkind: ConfigMap\nmetadata:\n"
        f"  name: {name}\n"
    )


def secret(host: Host) -> tuple[ResourceId, str]:
    name = f"creds-{host.suffix}"
    value = base64.b64encode(b"secret-value").decode()
    return ResourceId("v1", "Secret", name), (
        f"apiVersion: v1\ndata:\n  password: {value}\nkind: Secret\nmetadata:\n  name: {name}\n"
        "type: Opaque\n"
    )


def claim(host: Host) -> tuple[ResourceId, str]:
    name = f"data-{host.suffix}"
    return ResourceId("v1", "PersistentVolumeClaim", name), (
        f"apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\nspec:\n"
        "  accessModes:\n  - ReadWriteOnce\n  resources:\n    requests:\n      storage: 1Gi\n"
    )


def service(host: Host) -> tuple[ResourceId, str]:
    name = f"svc-{host.suffix}"
    return ResourceId("v1", "Service", name), (
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n  - port: 80\n"
    )


def deployment(host: Host, replicas: int, with_secret: bool) -> tuple[ResourceId, str]:
    name = f"web-{host.suffix}"
    mounts = "        - mountPath: /cfg\n          name: cfg\n"
    volumes = f"      - configMap:\n          name: cfg-{host.suffix}\n        name: cfg\n"
    if with_secret:
        mounts += "        - mountPath: /sec\n          name: sec\n"
        # podman 4.3 crashes on a secret volume without "optional" (docs/appliers.md)
        volumes += (
            f"      - name: sec\n        secret:\n          optional: false\n"
            f"          secretName: creds-{host.suffix}\n"
        )
    return ResourceId("apps/v1", "Deployment", name), (
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n"
        f"  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: web\n  template:\n"
        "    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n"
        '      - command: ["sh", "-c", "cat /cfg/greeting; echo; sleep 1000"]\n'
        f"        image: {host.image}\n        name: main\n        volumeMounts:\n{mounts}"
        f"      terminationGracePeriodSeconds: 0\n      volumes:\n{volumes}"
    )


def pod(
    host: Host, name: str, image: str | None = None, policy: str = ""
) -> tuple[ResourceId, str]:
    name = f"{name}-{host.suffix}"
    pull = f"    imagePullPolicy: {policy}\n" if policy else ""
    return ResourceId("v1", "Pod", name), (
        f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n"
        f'  - command: ["sleep", "1000"]\n    image: {image or host.image}\n{pull}'
        "    name: main\n  terminationGracePeriodSeconds: 0\n"
    )


def bundle_of(*pairs: tuple[ResourceId, str]) -> Bundle:
    manifests = "---\n".join(text for _, text in pairs)
    return Bundle("rev", digest_of(manifests), manifests, tuple(r for r, _ in pairs))


def outcomes(result: ApplyResult) -> list[tuple[str, str]]:
    return [(r.resource.label(), r.action) for r in result.resources]


# --- tests ----------------------------------------------------------------------------------


def test_workloads_are_played_kept_replayed_and_taken_down(host, tmp_path):
    podman = applier.create("podman", root=tmp_path / "state", env=host.env)
    s = host.suffix
    cm, sec, pvc = configmap(host, "hello", extra=True), secret(host), claim(host)
    svc = service(host)
    web, solo = deployment(host, replicas=2, with_secret=True), pod(host, "solo")

    # 1. everything new: each resource gets its own result, workloads with their pods' state
    first = bundle_of(cm, sec, web, solo, svc, pvc)
    result = podman.apply(first, [])
    assert outcomes(result) == [
        (f"ConfigMap/cfg-{s}", "applied"),
        (f"Secret/creds-{s}", "applied"),
        (f"Deployment/web-{s}", "applied"),
        (f"Pod/solo-{s}", "applied"),
        (f"Service/svc-{s}", "skipped"),
        (f"PersistentVolumeClaim/data-{s}", "applied"),
    ], result
    messages = [r.message for r in result.resources]
    assert messages[2] == f"pods: web-{s}-pod-0 Running, web-{s}-pod-1 Running"
    assert messages[3] == f"pods: solo-{s} Running"
    assert messages[4] == "podman kube play does not run kind Service"
    assert host.pods() == {
        f"web-{s}-pod-0": "Running",
        f"web-{s}-pod-1": "Running",
        f"solo-{s}": "Running",
    }
    assert "hello" in host.logs(f"web-{s}-pod-0-main", "hello")
    assert host.names("secret") == {f"creds-{s}"}
    assert host.names("volume") >= {f"cfg-{s}", f"data-{s}"}
    inventory = applier.inventory_after([], result)

    # 2. the same bundle again: nothing is restarted
    ids = host.pod_ids()
    result = podman.apply(first, inventory)
    assert [action for _, action in outcomes(result)] == ["unchanged"] * 4 + [
        "skipped",
        "unchanged",
    ]
    assert result.resources[2].message == f"pods: web-{s}-pod-0 Running, web-{s}-pod-1 Running"
    assert host.pod_ids() == ids

    # 3. a pod removed behind the agent's back is played again, the others are left alone
    host.podman("pod", "rm", "--force", "--time", "0", f"solo-{s}")
    result = podman.apply(first, inventory)
    assert outcomes(result)[3] == (f"Pod/solo-{s}", "applied")
    assert [action for _, action in outcomes(result)][:3] == ["unchanged"] * 3
    assert host.pod_ids()[f"web-{s}-pod-0"] == ids[f"web-{s}-pod-0"]

    # 4. a changed ConfigMap (one key fewer) replays the deployment (one replica fewer now);
    # the pod, the secret and the service left: the pod goes down, the secret and its volume
    # are removed
    second = bundle_of(configmap(host, "bonjour"), deployment(host, 1, with_secret=False), pvc)
    result = podman.apply(second, inventory)
    assert outcomes(result) == [
        (f"ConfigMap/cfg-{s}", "applied"),
        (f"Deployment/web-{s}", "applied"),
        (f"PersistentVolumeClaim/data-{s}", "unchanged"),
        (f"Pod/solo-{s}", "pruned"),
        (f"Service/svc-{s}", "pruned"),
        (f"Secret/creds-{s}", "pruned"),
    ], result
    assert result.resources[5].message == f"removed secret creds-{s} and volume creds-{s}"
    assert host.pods() == {f"web-{s}-pod-0": "Running"}
    assert "bonjour" in host.logs(f"web-{s}-pod-0-main", "bonjour")
    assert host.podman("exec", f"web-{s}-pod-0-main", "ls", "/cfg").split() == ["greeting"]
    assert host.names("secret") == set()
    assert f"creds-{s}" not in host.names("volume")
    inventory = applier.inventory_after(inventory, result)
    assert [r.label() for r in inventory] == [
        f"ConfigMap/cfg-{s}",
        f"Deployment/web-{s}",
        f"PersistentVolumeClaim/data-{s}",
    ]

    # 5. an empty bundle takes everything down, volumes included
    result = podman.apply(bundle_of(), inventory)
    assert outcomes(result) == [
        (f"Deployment/web-{s}", "pruned"),
        (f"PersistentVolumeClaim/data-{s}", "pruned"),
        (f"ConfigMap/cfg-{s}", "pruned"),
    ], result
    assert host.pods() == {}
    assert host.names("volume") == set()
    state = json.loads((tmp_path / "state" / "podman-state.json").read_text())
    assert state == {"resources": {}, "version": 1}


def test_a_failed_workload_is_reported_and_the_others_are_played(host, tmp_path):
    podman = applier.create("podman", root=tmp_path / "state", env=host.env)
    s = host.suffix
    broken = pod(host, "broken", image=f"localhost/rciots-absent:{s}", policy="Never")
    good = pod(host, "good")
    result = podman.apply(bundle_of(broken, good), [])
    assert outcomes(result) == [(f"Pod/broken-{s}", "failed"), (f"Pod/good-{s}", "applied")]
    assert f"localhost/rciots-absent:{s}" in result.resources[0].message
    # podman may leave the failed pod behind, created but not running (as Kubernetes keeps a
    # pod whose image cannot be pulled)
    assert host.pods()[f"good-{s}"] == "Running"

    # a failed workload stays in the inventory, and is taken down when it leaves
    inventory = applier.inventory_after([], result)
    result = podman.apply(bundle_of(), inventory)
    assert outcomes(result) == [(f"Pod/good-{s}", "pruned"), (f"Pod/broken-{s}", "pruned")]
    assert host.pods() == {}


def test_a_workload_is_taken_down_even_when_its_state_was_lost(host, tmp_path):
    podman = applier.create("podman", root=tmp_path / "state", env=host.env)
    lone = pod(host, "lone")
    inventory = applier.inventory_after([], podman.apply(bundle_of(lone), []))
    assert host.pods() == {f"lone-{host.suffix}": "Running"}
    (tmp_path / "state" / "podman-state.json").unlink()
    result = podman.apply(bundle_of(), inventory)
    assert outcomes(result) == [(f"Pod/lone-{host.suffix}", "pruned")]
    assert host.pods() == {}


def test_a_name_from_the_manifests_is_never_read_as_a_podman_option(host, tmp_path):
    # A podman store of this test's own: were the name read as an option, "podman secret rm
    # --all" would remove every secret of the podman it runs against.
    storage = tmp_path / "storage.conf"
    storage.write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp_path / "root"}"\n'
        f'runroot = "{tmp_path / "run"}"\n'
    )
    own = Host({**host.env, "CONTAINERS_STORAGE_CONF": str(storage)}, host.image, host.suffix)
    keep = f"keep-{host.suffix}"
    own.podman("secret", "create", keep, "-", stdin=b"not the tenant's")
    assert keep not in host.names("secret"), "the test's podman store is not its own"

    # A tenant's manifest can name a Secret anything: podman refuses to play this one, so it
    # stays in the inventory (a failed resource may exist in part), and leaving the bundle
    # it is pruned.
    planted = ResourceId("v1", "Secret", "--all")
    text = "apiVersion: v1\ndata:\n  a: eA==\nkind: Secret\nmetadata:\n  name: --all\n"
    podman = applier.create("podman", root=tmp_path / "state", env=own.env)
    first = podman.apply(bundle_of((planted, text)), [])
    assert outcomes(first) == [("Secret/--all", "failed")]
    second = podman.apply(bundle_of(), applier.inventory_after([], first))
    # podman has no secret of a name it refuses: there is nothing to remove
    assert outcomes(second) == [("Secret/--all", "pruned")]
    assert applier.inventory_after([planted], second) == ()
    assert own.names("secret") == {keep}
