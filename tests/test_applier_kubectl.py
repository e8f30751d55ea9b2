"""The kubectl / oc applier, up to the process boundary: a real executable first on PATH
(``tests/fakekubectl.py``) records argv and stdin and answers as kubectl does. There is no
Kubernetes API server on these machines; where the real kubectl's own reading of its command
line matters (what a resource's kind may make of it), the real kubectl runs against a loopback
HTTP server that records every request."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rciots.agent import applier
from rciots.agent.bundle import ApplyResult, Bundle, ResourceId, digest_of
from tests import fakekubectl

NS = ResourceId("v1", "Namespace", "edge")
CM = ResourceId("v1", "ConfigMap", "cfg", "edge")
SECRET = ResourceId("v1", "Secret", "creds", "edge")
DEPLOY = ResourceId("apps/v1", "Deployment", "web", "edge")
CRD = ResourceId("apiextensions.k8s.io/v1", "CustomResourceDefinition", "widgets.example.com")
WIDGET = ResourceId("example.com/v1", "Widget", "w1", "edge")

TEXTS = {
    NS: "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: edge\n",
    CM: "apiVersion: v1\ndata:\n  mode: fast\nkind: ConfigMap\nmetadata:\n  name: cfg\n"
    "  namespace: edge\n",
    SECRET: "apiVersion: v1\ndata:\n  password: c2VjcmV0LXZhbHVl\nkind: Secret\nmetadata:\n"
    "  name: creds\n  namespace: edge\ntype: Opaque\n",
    DEPLOY: "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: edge\n"
    "spec:\n  replicas: 1\n",
    CRD: "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n"
    "  name: widgets.example.com\n",
    WIDGET: "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\n  namespace: edge\n",
}

APPLY = ["apply", "--server-side", "--field-manager=rciots-agent", "--force-conflicts", "-f", "-"]
LABEL = ["label", "--overwrite", "-f", "-", "rciots.io/managed-by=rciots-agent"]


def bundle_of(*resources: ResourceId) -> Bundle:
    manifests = "---\n".join(TEXTS[r] for r in resources)
    return Bundle("rev", digest_of(manifests), manifests, resources)


def actions(result: ApplyResult) -> list[tuple[ResourceId, str]]:
    return [(r.resource, r.action) for r in result.resources]


class Cluster:
    """The fake's folder, its log and its script; ``env`` finds it first on PATH."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.log = root / "calls.jsonl"
        self.script = root / "script.json"
        fakekubectl.install(self.bin, "kubectl")
        fakekubectl.install(self.bin, "oc")
        self.env = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "FAKE_KUBE_LOG": str(self.log),
            "FAKE_KUBE_SCRIPT": str(self.script),
        }
        self.plan({})

    def plan(self, script: dict[str, Any]) -> None:
        self.script.write_text(json.dumps(script))

    def calls(self) -> list[tuple[str, list[str], bytes]]:
        """Each run of the fake: tool, argv after it, stdin bytes."""
        return fakekubectl.records(self.log)


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return Cluster(tmp_path)


def test_a_bundle_is_applied_server_side_then_labelled(cluster):
    bundle = bundle_of(NS, CM, SECRET, DEPLOY)
    result = applier.create("kubectl", env=cluster.env).apply(bundle, [])
    assert result.ok
    assert actions(result) == [
        (NS, "applied"),
        (CM, "applied"),
        (SECRET, "applied"),
        (DEPLOY, "applied"),
    ]
    assert cluster.calls() == [
        ("kubectl", APPLY, bundle.manifests.encode()),
        ("kubectl", LABEL, bundle.manifests.encode()),
    ]


def test_oc_runs_the_same_commands(cluster):
    bundle = bundle_of(CM)
    result = applier.create("oc", env=cluster.env).apply(bundle, [])
    assert result.ok
    assert cluster.calls() == [
        ("oc", APPLY, bundle.manifests.encode()),
        ("oc", LABEL, bundle.manifests.encode()),
    ]


def test_the_executable_can_be_a_path(cluster):
    path = str(cluster.bin / "kubectl")
    result = applier.create("kubectl", executable=path, env={**cluster.env, "PATH": ""}).apply(
        bundle_of(CM), []
    )
    assert result.ok
    assert [argv for _, argv, _ in cluster.calls()] == [APPLY, LABEL]


def test_a_failed_batch_is_retried_per_resource_to_pin_the_failure(cluster):
    cluster.plan({"fail": {"apply": ["Deployment/web"]}, "batch_only": ["Widget/w1"]})
    bundle = bundle_of(CRD, WIDGET, CM, DEPLOY)
    result = applier.create("kubectl", env=cluster.env).apply(bundle, [])
    assert actions(result) == [
        (CRD, "applied"),
        (WIDGET, "applied"),
        (CM, "applied"),
        (DEPLOY, "failed"),
    ]
    # the resources the batch reported applied are not applied again; the others alone
    assert cluster.calls() == [
        ("kubectl", APPLY, bundle.manifests.encode()),
        ("kubectl", APPLY, TEXTS[WIDGET].encode()),
        ("kubectl", APPLY, TEXTS[DEPLOY].encode()),
        ("kubectl", LABEL, f"{TEXTS[CRD]}---\n{TEXTS[WIDGET]}---\n{TEXTS[CM]}".encode()),
    ]
    # kubectl's own messages, without client-go's log lines
    message = result.resources[3].message
    assert message.startswith('Error from server (Invalid): Deployment.apps "web" is invalid: ')
    assert "memcache.go" not in message


def test_a_batch_that_applied_nothing_is_not_retried_per_resource(cluster):
    # what a cluster that refuses the agent looks like: every object fails
    cluster.plan({"fail": {"apply": ["ConfigMap/cfg", "Deployment/web"]}})
    result = applier.create("kubectl", env=cluster.env).apply(bundle_of(CM, DEPLOY), [])
    assert actions(result) == [(CM, "failed"), (DEPLOY, "failed")]
    assert [argv for _, argv, _ in cluster.calls()] == [APPLY]
    message = result.resources[0].message
    assert 'ConfigMap "cfg" is invalid' in message
    assert 'Deployment.apps "web" is invalid' in message


def test_secret_data_never_reaches_a_message(cluster):
    cluster.plan({"fail": {"apply": ["Secret/creds"]}})
    # the ConfigMap applies, so the Secret is retried alone: its own message holds the data
    result = applier.create("kubectl", env=cluster.env).apply(bundle_of(CM, SECRET), [])
    failed = result.resources[1]
    assert (failed.resource, failed.action) == (SECRET, "failed")
    assert "password: ***" in failed.message
    assert "c2VjcmV0LXZhbHVl" not in failed.message
    assert "secret-value" not in failed.message


def test_a_failed_label_fails_the_resource_it_left_unlabelled(cluster):
    cluster.plan({"fail": {"label": ["ConfigMap/cfg"]}})
    result = applier.create("kubectl", env=cluster.env).apply(bundle_of(NS, CM), [])
    assert actions(result) == [(NS, "applied"), (CM, "failed")]
    assert result.resources[1].message == (
        "applied, but not labelled as managed (prune will leave it): "
        'Error from server (NotFound): configmap "cfg" not found'
    )


def test_what_left_the_bundle_is_deleted_only_while_labelled_as_ours(cluster):
    old_deploy = ResourceId("apps/v1", "Deployment", "old", "edge")
    role = ResourceId("rbac.authorization.k8s.io/v1", "ClusterRole", "reader")
    gone = ResourceId("v1", "Service", "gone", "edge")
    widget = ResourceId("example.com/v1", "Widget", "w0", "edge")
    cluster.plan({"absent": ["gone"], "no_type": ["Widget.example.com"]})
    previous = [NS, widget, role, old_deploy, gone, CM]
    bundle = bundle_of(NS, CM)
    result = applier.create("kubectl", env=cluster.env).apply(bundle, previous)
    assert result.ok
    selector = ["-l", "rciots.io/managed-by=rciots-agent"]
    wait = ["--wait=false", "--"]  # the type last, after "--"
    deletes = [argv for _, argv, _ in cluster.calls() if argv[0] == "delete"]
    assert deletes == [
        [
            "delete",
            "-n",
            "edge",
            *selector,
            "--field-selector",
            "metadata.name=gone",
            *wait,
            "Service",
        ],
        [
            "delete",
            "-n",
            "edge",
            *selector,
            "--field-selector",
            "metadata.name=old",
            *wait,
            "Deployment.apps",
        ],
        [
            "delete",
            *selector,
            "--field-selector",
            "metadata.name=reader",
            *wait,
            "ClusterRole.rbac.authorization.k8s.io",
        ],
        [
            "delete",
            "-n",
            "edge",
            *selector,
            "--field-selector",
            "metadata.name=w0",
            *wait,
            "Widget.example.com",
        ],
    ]
    assert [(r.resource, r.action, r.message) for r in result.resources[2:]] == [
        (gone, "pruned", "nothing to delete (gone already, or not labelled as ours)"),
        (old_deploy, "pruned", 'deployment.apps "old" deleted'),
        (role, "pruned", 'clusterrole.rbac.authorization.k8s.io "reader" deleted'),
        (widget, "pruned", "the cluster has no Widget.example.com"),
    ]
    assert applier.inventory_after(previous, result) == (NS, CM)


def test_a_failed_delete_stays_in_the_inventory(cluster):
    cluster.plan({"fail": {"delete": ["Deployment/web"]}})
    result = applier.create("kubectl", env=cluster.env).apply(bundle_of(CM), [CM, DEPLOY])
    assert actions(result) == [(CM, "applied"), (DEPLOY, "failed")]
    assert "cannot delete resource" in result.resources[1].message
    assert applier.inventory_after([CM, DEPLOY], result) == (CM, DEPLOY)


def test_an_object_whose_version_moved_is_not_pruned(cluster):
    beta = ResourceId("apps/v1beta1", "Deployment", "web", "edge")
    result = applier.create("kubectl", env=cluster.env).apply(bundle_of(DEPLOY), [beta])
    assert actions(result) == [(DEPLOY, "applied")]
    assert [argv[0] for _, argv, _ in cluster.calls()] == ["apply", "label"]


def test_no_namespace_and_the_default_namespace_are_not_told_apart_for_prune(cluster):
    unset = ResourceId("v1", "ConfigMap", "cfg")
    explicit = ResourceId("v1", "ConfigMap", "cfg", "default")
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: default\n"
    bundle = Bundle("rev", digest_of(text), text, (explicit,))
    result = applier.create("kubectl", env=cluster.env).apply(bundle, [unset])
    assert actions(result) == [(explicit, "applied")]
    assert [argv[0] for _, argv, _ in cluster.calls()] == ["apply", "label"]


def test_an_empty_bundle_only_prunes(cluster):
    empty = Bundle("rev", digest_of(""), "", ())
    result = applier.create("kubectl", env=cluster.env).apply(empty, [CM])
    assert actions(result) == [(CM, "pruned")]
    assert [argv[0] for _, argv, _ in cluster.calls()] == ["delete"]


def test_a_cluster_that_does_not_answer_times_out_once(cluster):
    cluster.plan({"hang": ["apply"]})
    result = applier.create("kubectl", env=cluster.env, timeout=0.5).apply(
        bundle_of(CM, DEPLOY), []
    )
    assert actions(result) == [(CM, "failed"), (DEPLOY, "failed")]
    assert result.resources[0].message == "kubectl apply timed out after 0.5 s"
    # no retry per resource, no label
    assert len(cluster.calls()) == 1


# --- the real kubectl: what manifests may make of its command line ---------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    """An API server that knows nothing: every request is recorded and answered 404."""

    requests: list[tuple[str, str]]

    def _answer(self) -> None:
        self.requests.append((self.command, self.path))
        body = b'{"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_DELETE = do_PATCH = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def recording_api_server(home: Path) -> Iterator[tuple[dict[str, str], list[tuple[str, str]]]]:
    """A loopback API server and the environment that points the real kubectl at it."""
    requests: list[tuple[str, str]] = []
    handler = type("Handler", (_Recorder,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}
                ],
                "users": [{"name": "u", "user": {"token": "test"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    env = {"PATH": str(Path(kubectl).parent), "KUBECONFIG": str(kubeconfig), "HOME": str(home)}
    try:
        yield env, requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize(
    "kind",
    [
        # kubectl reads these as options: a raw DELETE of any API path, past the label
        "--raw=/api/v1/namespaces/kube-system",
        "--raw=/api/v1/namespaces/edge/secrets/rciots-agent-identity",
        # and every object of that name, labelled or not, in every namespace
        "-A",
    ],
)
def test_a_kind_from_the_manifests_is_never_read_as_a_kubectl_option(tmp_path, kind):
    # A tenant's manifest can carry any kind: applying it fails, so it stays in the inventory
    # (a failed resource may exist in part), and when it leaves the bundle it is pruned.
    planted = ResourceId("v1", kind, "x", "edge")
    empty = Bundle("rev", digest_of(""), "", ())
    with recording_api_server(tmp_path) as (env, requests):
        result = applier.create("kubectl", env=env, timeout=30).apply(empty, [planted])
    assert [method for method, _ in requests if method != "GET"] == []
    # nothing of a kind Kubernetes cannot have can exist: there is nothing to prune
    assert actions(result) == [(planted, "pruned")]
    assert applier.inventory_after([planted], result) == ()
