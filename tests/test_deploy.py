"""The deployment artifacts in deploy/, checked as far as this machine allows.

No container engine builds images here, there is no Kubernetes or OpenShift API server and no
`oc`: so the YAML is parsed with the project's strict reader; every Kustomize directory is
built with the project's renderer (and compared byte for byte with `kubectl kustomize` where
kubectl exists); the OpenShift Templates are processed by a small processor below that follows
`oc process`'s rules; what the manifests start is checked against the real option parsers and
configuration loaders of `rciots controller` and `rciots-agent`; the Containerfiles are read
for their essentials; the systemd unit goes through `systemd-analyze verify`.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rciots.agent import config, enroll, run
from rciots.agent import state as agent_state
from rciots.agent.cli import _parser as agent_parser
from rciots.controller import ca, cli, cmd_controller, yamlsafe
from rciots.controller.render import Rendered, engine

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent

AGENT_TEMPLATE = DEPLOY / "openshift" / "agent-template.yaml"
CLUSTER_ADMIN_TEMPLATE = DEPLOY / "openshift" / "agent-cluster-admin.yaml"
UNIT = DEPLOY / "systemd" / "rciots-agent.service"
AGENT_TOML = DEPLOY / "systemd" / "agent.toml"

TOKEN = "rciots-pt-Zm9yIHRoZSB0ZXN0cyBvbmx5LCBuZXZlciBhIHJlYWwgdG9rZW4"
DEVICE = "plant-7-line-2"
ENROLL_URL = "https://rciots-enroll.apps.example.com"
AGENT_IMAGE = "registry.example.com/rciots/rciots-agent:0.1.0"
CA_PEM = (
    ca.create_authority(["rciots-enroll.apps.example.com"], datetime.now(UTC))
    .ca_bundle_pem()
    .decode()
)
TEMPLATE_VALUES = {
    "TOKEN": TOKEN,
    "DEVICE_NAME": DEVICE,
    "ENROLL_URL": ENROLL_URL,
    "CA_BUNDLE": CA_PEM,
    "IMAGE": AGENT_IMAGE,
}
# what an operator adds beside deploy/microshift/kustomization.yaml
MICROSHIFT_FILES = {"microshift/token": TOKEN, "microshift/root.pem": CA_PEM}

# the environment variables that carry secrets, from the code: never a literal in a manifest
SECRET_ENV = {o.env for o in config.OPTIONS if o.secret} | {
    cmd_controller._PASSWORD_ENV,
    cmd_controller._WEBHOOK_ENV,
}

Obj = dict[str, Any]


# -- reading ------------------------------------------------------------------------------------


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def yaml_files() -> list[Path]:
    return [p for p in deploy_files() if p.suffix in (".yaml", ".yml")]


def read_yaml(path: Path) -> list[Obj]:
    """Every document of a file, read with the controller's strict reader."""
    dialect = yamlsafe.KUSTOMIZATION if path.name == "kustomization.yaml" else yamlsafe.MANIFEST
    documents = []
    for node in yamlsafe.parse(path.read_bytes(), dialect=dialect):
        data = yamlsafe.to_data(node)
        assert isinstance(data, dict), f"{path}: a document that is not a mapping"
        documents.append(data)
    return documents


def strings(value: object, where: str = "") -> Iterator[tuple[str, str]]:
    """(path, text) of every string in a document, keys included."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{where}.{key}(key)", str(key)
            yield from strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, f"{where}[{index}]")


def find(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} objects of kind {kind} named {name}"
    return found[0]


# -- an OpenShift Template processor, after `oc process` --------------------------------------

_STRING_PARAMETER = re.compile(r"\$\{([a-zA-Z0-9_]+?)\}")
_NON_STRING_PARAMETER = re.compile(r"^\$\{\{([a-zA-Z0-9_]+)\}\}$")
_ANY_PARAMETER = re.compile(r"\$\{\{?([a-zA-Z0-9_]+)\}?\}")


class TemplateError(ValueError):
    pass


def process_template(template: Obj, given: Mapping[str, str]) -> list[Obj]:
    """The objects of an OpenShift Template with its parameters substituted, as `oc process`
    makes them (template.openshift.io/v1, library-go's template processing):

    - a parameter's value is the one given, else its `value`; a required parameter without a
      value is an error, and so is an unknown parameter given;
    - generated parameters (`generate: expression`) are left to the caller: one without a
      value is an error here;
    - a string that is exactly `${{NAME}}` is replaced by the value read as JSON (a number,
      a boolean, an object); `${NAME}` anywhere in a string is replaced by the value as text;
      references to undeclared parameters stay as they are;
    - a `metadata.namespace` written out (not a parameter reference) is dropped, as
      `oc process` drops it; one that references a parameter stays.

    The template's `labels` (none here) are not applied.
    """
    declared = {p["name"]: p for p in template.get("parameters", [])}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise TemplateError(f"unknown parameter name(s): {', '.join(unknown)}")
    values: dict[str, str] = {}
    for name, parameter in declared.items():
        value = given.get(name, str(parameter.get("value", "")))
        if value == "" and parameter.get("generate"):
            raise TemplateError(f"parameter {name} is generated ({parameter.get('from')}): give it")
        if value == "" and parameter.get("required"):
            raise TemplateError(f"parameter {name} is required and must be specified")
        values[name] = value

    def substitute(item: object) -> object:
        if isinstance(item, str):
            exact = _NON_STRING_PARAMETER.match(item)
            if exact and exact.group(1) in values:
                try:
                    return json.loads(values[exact.group(1)])
                except ValueError:
                    raise TemplateError(f"{item}: not a JSON value") from None
            return _STRING_PARAMETER.sub(lambda m: values.get(m.group(1), m.group(0)), item)
        if isinstance(item, dict):
            return {substitute(k): substitute(v) for k, v in item.items()}
        if isinstance(item, list):
            return [substitute(v) for v in item]
        return item

    objects = []
    for original in template.get("objects", []):
        item = copy.deepcopy(original)
        metadata = item.get("metadata", {})
        if "namespace" in metadata and "${" not in str(metadata["namespace"]):
            del metadata["namespace"]
        made = substitute(item)
        assert isinstance(made, dict)
        objects.append(made)
    return objects


def agent_objects(**values: str) -> list[Obj]:
    (template,) = read_yaml(AGENT_TEMPLATE)
    return process_template(template, {**TEMPLATE_VALUES, **values})


# -- the processor follows oc's rules ---------------------------------------------------------


def test_processor_substitutes_as_oc_process_does() -> None:
    template: Obj = {
        "parameters": [
            {"name": "A", "value": "one"},
            {"name": "B", "required": True},
            {"name": "N", "value": "3"},
            {"name": "NS", "value": "edge"},
        ],
        "objects": [
            {
                "kind": "X",
                "metadata": {"name": "${A}-${B}", "namespace": "fixed"},
                "spec": {"replicas": "${{N}}", "text": "n=${{N}}", "other": "${NOPE}"},
            },
            {"kind": "Y", "metadata": {"name": "y", "namespace": "${NS}"}},
        ],
    }
    first, second = process_template(template, {"B": "two"})
    assert first["metadata"] == {"name": "one-two"}  # a written-out namespace is dropped
    assert first["spec"] == {"replicas": 3, "text": "n=${{N}}", "other": "${NOPE}"}
    assert second["metadata"] == {"name": "y", "namespace": "edge"}
    with pytest.raises(TemplateError, match="B is required"):
        process_template(template, {})
    with pytest.raises(TemplateError, match="unknown parameter name"):
        process_template(template, {"B": "x", "C": "y"})
    generated: Obj = {"parameters": [{"name": "G", "generate": "expression", "from": "[a-z]{8}"}]}
    with pytest.raises(TemplateError, match="G is generated"):
        process_template(generated, {})


# -- every YAML file ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses_strictly(path: Path) -> None:
    documents = read_yaml(path)
    assert documents, f"{path}: no document"
    for document in documents:
        assert isinstance(document.get("apiVersion"), str)
        assert isinstance(document.get("kind"), str)


def test_every_file_is_explained_in_the_readme() -> None:
    readme = (DEPLOY / "README.md").read_text()
    missing = [
        f"deploy/{p.relative_to(DEPLOY).as_posix()}"
        for p in deploy_files()
        if p.name != "README.md" and f"deploy/{p.relative_to(DEPLOY).as_posix()}" not in readme
    ]
    assert missing == []


# -- the OpenShift Template of the agent ------------------------------------------------------


def test_template_declares_every_parameter_it_uses_and_uses_every_one() -> None:
    for path in (AGENT_TEMPLATE, CLUSTER_ADMIN_TEMPLATE):
        (template,) = read_yaml(path)
        used = {
            m.group(1)
            for _, text in strings([template["objects"], template.get("message", "")])
            for m in _ANY_PARAMETER.finditer(text)
        }
        declared = {p["name"] for p in template["parameters"]}
        assert used == declared, path


def test_template_has_the_parameters_operators_pass() -> None:
    (template,) = read_yaml(AGENT_TEMPLATE)
    parameters = {p["name"]: p for p in template["parameters"]}
    assert {"TOKEN", "DEVICE_NAME", "NAMESPACE", "IMAGE", "ENROLL_URL", "CA_BUNDLE"} <= set(
        parameters
    )
    assert parameters["NAMESPACE"]["value"] == "rciots-agent"
    assert parameters["APPLIER"]["value"] == "kubectl"
    for name in ("TOKEN", "DEVICE_NAME", "ENROLL_URL", "CA_BUNDLE", "IMAGE"):
        assert parameters[name]["required"] is True
        assert "value" not in parameters[name]  # no default that pretends to work
        with pytest.raises(TemplateError, match=f"{name} is required"):
            process_template(template, {k: v for k, v in TEMPLATE_VALUES.items() if k != name})


@pytest.mark.parametrize("namespace", ["rciots-agent", "edge-apps"])
def test_processed_template_is_complete_valid_objects(namespace: str) -> None:
    objects = agent_objects(NAMESPACE=namespace)
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == [
        ("ConfigMap", "rciots-agent"),
        ("ConfigMap", "rciots-agent-ca"),
        ("Deployment", "rciots-agent"),
        ("Role", "rciots-agent-apply"),
        ("Role", "rciots-agent-identity"),
        ("RoleBinding", "rciots-agent-apply"),
        ("RoleBinding", "rciots-agent-identity"),
        ("Secret", "rciots-agent-token"),
        ("ServiceAccount", "rciots-agent"),
    ]
    for item in objects:
        assert isinstance(item["apiVersion"], str)
        assert item["apiVersion"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", item["metadata"]["name"])
        assert item["metadata"]["namespace"] == namespace
        unresolved = [(p, t) for p, t in strings(item) if "${" in t]
        assert unresolved == [], item["kind"]
    for binding in (o for o in objects if o["kind"] == "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "rciots-agent", "namespace": namespace}
        ]
    # the multi-line CA bundle arrives whole
    assert find(objects, "ConfigMap", "rciots-agent-ca")["data"] == {"ca.crt": CA_PEM}


def test_the_token_is_only_in_the_secret() -> None:
    objects = agent_objects()
    where = [
        (o["kind"], o["metadata"]["name"], path)
        for o in objects
        for path, text in strings(o)
        if TOKEN in text
    ]
    assert where == [("Secret", "rciots-agent-token", ".stringData.token")]
    secret = find(objects, "Secret", "rciots-agent-token")
    assert secret["type"] == "Opaque"


def test_least_privilege_by_default_and_cluster_admin_only_by_opt_in() -> None:
    objects = agent_objects()
    assert not [o for o in objects if o["kind"].startswith("Cluster")]
    assert "cluster-admin" not in json.dumps(objects)
    # the agent creates its Secret with a server-side apply, a PATCH whose create the API
    # server authorizes for that name: resourceNames holds create too (docs/agent.md)
    identity = find(objects, "Role", "rciots-agent-identity")
    assert identity["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["rciots-agent-identity"],
            "verbs": ["get", "create", "patch"],
        },
    ]
    apply = find(objects, "Role", "rciots-agent-apply")
    for rule in apply["rules"]:
        if not any("/" in r for r in rule["resources"]):
            # what the kubectl/oc applier runs: apply, label, prune (docs/appliers.md)
            assert set(rule["verbs"]) == {"get", "list", "create", "patch", "delete"}
    (opt_in,) = process_template(read_yaml(CLUSTER_ADMIN_TEMPLATE)[0], {"NAMESPACE": "edge"})
    assert opt_in["kind"] == "ClusterRoleBinding"
    assert opt_in["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "cluster-admin",
    }
    assert opt_in["subjects"] == [
        {"kind": "ServiceAccount", "name": "rciots-agent", "namespace": "edge"}
    ]


# -- what the agent's pod starts: the agent's own configuration loader -------------------------


@dataclass
class Pod:
    environ: dict[str, str]
    root: Path  # the container's files under this folder
    mounts: dict[str, Obj]  # mount path -> volume


def expand(text: str, environ: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of env values, args and commands ($$ escapes)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else environ.get(m.group(1), m.group(0)),
        text,
    )


def pod_of(objects: list[Obj], deployment: Obj, root: Path) -> Pod:
    """The first container's environment and files, as the kubelet would make them from
    ``objects`` (the ConfigMaps and Secrets beside the Deployment)."""
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    namespace = deployment["metadata"]["namespace"]

    def data_of(kind: str, name: str) -> dict[str, str] | None:
        found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
        if not found:
            return None
        item = found[0]
        if kind == "ConfigMap":
            return dict(item.get("data", {}))
        data = {k: base64.b64decode(v).decode() for k, v in item.get("data", {}).items()}
        return {**data, **item.get("stringData", {})}

    environ: dict[str, str] = {}
    for source in container.get("envFrom", []):
        environ.update(data_of("ConfigMap", source["configMapRef"]["name"]) or {})
    for variable in container.get("env", []):
        if "value" in variable:
            environ[variable["name"]] = expand(variable["value"], environ)
            continue
        origin = variable["valueFrom"]
        if "fieldRef" in origin:
            assert origin["fieldRef"]["fieldPath"] == "metadata.namespace"
            environ[variable["name"]] = namespace
            continue
        kind, reference = (
            ("ConfigMap", origin["configMapKeyRef"])
            if "configMapKeyRef" in origin
            else ("Secret", origin["secretKeyRef"])
        )
        data = data_of(kind, reference["name"])
        if data is None or reference["key"] not in data:
            assert reference.get("optional") is True, f"{kind} {reference['name']} is missing"
            continue
        environ[variable["name"]] = data[reference["key"]]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts: dict[str, Obj] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        mounts[mount["mountPath"]] = volume
        folder = root / mount["mountPath"].lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        for kind, key in (("Secret", "secret"), ("ConfigMap", "configMap")):
            if key in volume:
                name = volume[key].get("secretName") or volume[key].get("name")
                for file, content in (data_of(kind, name) or {}).items():
                    (folder / file).write_text(content)
    # paths of the container, as seen from here
    for name, value in environ.items():
        if any(value == m or value.startswith(m + "/") for m in mounts):
            environ[name] = str(root / value.lstrip("/"))
    return Pod(environ, root, mounts)


def secret_data(item: Obj) -> Obj:
    """A Secret as the API server keeps it: stringData folded into base64 data, without the
    line breaks kustomize writes into long base64 values."""
    made = copy.deepcopy(item)
    strings_given = made.pop("stringData", {})
    data = {k: "".join(v.split()) for k, v in made.get("data", {}).items()}
    data.update({k: base64.b64encode(v.encode()).decode() for k, v in strings_given.items()})
    made["data"] = data
    return made


def test_the_agent_pod_is_a_working_agent_configuration(tmp_path: Path) -> None:
    objects = agent_objects()
    deployment = find(objects, "Deployment")
    pod = pod_of(objects, deployment, tmp_path)
    known = {o.env for o in config.OPTIONS}
    assert {n for n in pod.environ if n.startswith("RCIOTS_")} <= known
    (tmp_path / "empty.toml").write_text("")
    settings = config.load(tmp_path / "empty.toml", pod.environ, {})
    assert settings.token == TOKEN
    assert settings.device_name == DEVICE
    assert settings.enroll_url == ENROLL_URL
    assert settings.applier == "kubectl"
    assert settings.kubectl == "kubectl"  # the identity Secret is kept with the same tool
    assert settings.identity_secret == "rciots-agent/rciots-agent-identity"
    assert settings.ca_file is not None
    enroll.trust_context(settings.ca_file)  # the CA bundle loads
    # the state directory and HOME (kubectl's cache) are the writable emptyDir
    state = pod.mounts["/var/lib/rciots-agent"]
    assert state == {"name": "state", "emptyDir": {}}
    assert settings.state_dir == tmp_path / "var/lib/rciots-agent"
    assert pod.environ["HOME"] == str(settings.state_dir)
    store = run.identity_store(settings)
    assert isinstance(store, agent_state.SecretIdentity)
    identity_role = find(objects, "Role", "rciots-agent-identity")
    assert [store.name] == identity_role["rules"][0]["resourceNames"]
    assert store.namespace == deployment["metadata"]["namespace"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "rciots-agent"


def test_the_oc_applier_is_a_parameter_away(tmp_path: Path) -> None:
    objects = agent_objects(APPLIER="oc")
    pod = pod_of(objects, find(objects, "Deployment"), tmp_path)
    (tmp_path / "empty.toml").write_text("")
    settings = config.load(tmp_path / "empty.toml", pod.environ, {})
    assert (settings.applier, settings.kubectl) == ("oc", "oc")


# -- Kustomize: our renderer, and kubectl kustomize where it exists --------------------------


def kustomizations() -> list[str]:
    entries = []
    for path in sorted(DEPLOY.rglob("kustomization.yaml")):
        (document,) = read_yaml(path)
        if document["kind"] == "Kustomization":  # a Component is built by what includes it
            entries.append(path.parent.relative_to(DEPLOY).as_posix())
    return entries


def test_the_kustomizations_are_the_expected_ones() -> None:
    assert kustomizations() == [
        "controller/kubernetes/base",
        "controller/kubernetes/example",
        "controller/kubernetes/openshift",
        "microshift/agent",
        "microshift",
    ]


WITH_CLUSTER_ADMIN = "microshift+cluster-admin"


def deploy_snapshot(variant: str) -> tuple[dict[str, bytes], str]:
    """deploy/ as the renderer reads it, with the operator's files of the MicroShift overlay;
    the variant WITH_CLUSTER_ADMIN has the overlay's component switched on."""
    snapshot = {p.relative_to(DEPLOY).as_posix(): p.read_bytes() for p in deploy_files()}
    snapshot.update({k: v.encode() for k, v in MICROSHIFT_FILES.items()})
    if variant == WITH_CLUSTER_ADMIN:
        text = snapshot["microshift/kustomization.yaml"].decode()
        switched = text.replace(
            "# components:\n# - cluster-admin\n", "components:\n- cluster-admin\n"
        )
        assert switched != text
        snapshot["microshift/kustomization.yaml"] = switched.encode()
        return snapshot, "microshift"
    return snapshot, variant


def build(variant: str) -> Rendered:
    snapshot, entry = deploy_snapshot(variant)
    return engine.build(snapshot, entry)


VARIANTS = [*kustomizations(), WITH_CLUSTER_ADMIN]


@pytest.mark.parametrize("variant", VARIANTS)
def test_kustomization_renders_valid_objects(variant: str) -> None:
    rendered = build(variant)
    assert rendered.resources
    for item in rendered.resources:
        assert item["apiVersion"]
        assert item["kind"]
        assert item["metadata"]["name"]
        assert [t for _, t in strings(item) if "${" in t] == []


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("variant", VARIANTS)
def test_kustomization_renders_as_kubectl_kustomize_does(variant: str, tmp_path: Path) -> None:
    snapshot, entry = deploy_snapshot(variant)
    for name, data in snapshot.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    theirs = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path / entry)], capture_output=True, check=True
    ).stdout
    assert build(variant).yaml == theirs.decode()


def test_the_microshift_base_holds_the_same_objects_as_the_template() -> None:
    """The overlay an operator fills in and the template processed with the same values make
    the same objects, but for the Namespace (MicroShift applies it; OpenShift has projects) and
    the generators' name suffixes."""
    rendered = [copy.deepcopy(r) for r in build("microshift").resources]
    overlay = read_yaml(DEPLOY / "microshift" / "kustomization.yaml")[0]
    literals = dict(line.split("=", 1) for line in overlay["configMapGenerator"][0]["literals"])
    image = overlay["images"][0]
    template = agent_objects(
        DEVICE_NAME=literals["RCIOTS_DEVICE_NAME"],
        ENROLL_URL=literals["RCIOTS_ENROLL_URL"],
        APPLIER=literals["RCIOTS_APPLIER"],
        IMAGE=f"{image['newName']}:{image['newTag']}",
        NAMESPACE=overlay["namespace"],
    )
    assert literals["RCIOTS_KUBECTL"] == literals["RCIOTS_APPLIER"]
    suffixed = {}
    for item in rendered:
        name = item["metadata"]["name"]
        match = re.fullmatch(r"(.+)-[a-z0-9]{10}", name)
        if item["kind"] in ("ConfigMap", "Secret") and match:
            suffixed[name] = match.group(1)

    def unsuffixed(value: Any) -> Any:
        if isinstance(value, str):
            return suffixed.get(value, value)
        if isinstance(value, dict):
            return {k: unsuffixed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [unsuffixed(v) for v in value]
        return value

    ours = sorted(
        (
            unsuffixed(secret_data(r) if r["kind"] == "Secret" else r)
            for r in rendered
            if r["kind"] != "Namespace"
        ),
        key=lambda o: (o["kind"], o["metadata"]["name"]),
    )
    processed = sorted(
        (secret_data(o) if o["kind"] == "Secret" else o for o in template),
        key=lambda o: (o["kind"], o["metadata"]["name"]),
    )
    assert ours == processed


def test_cluster_admin_is_off_in_microshift_unless_the_component_is_on() -> None:
    assert not [r for r in build("microshift").resources if r["kind"].startswith("Cluster")]
    (binding,) = [r for r in build(WITH_CLUSTER_ADMIN).resources if r["kind"].startswith("Cluster")]
    assert binding["kind"] == "ClusterRoleBinding"
    assert binding["roleRef"]["name"] == "cluster-admin"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rciots-agent", "namespace": "rciots-agent"}
    ]


def test_the_token_is_only_in_the_generated_secret() -> None:
    rendered = build("microshift").resources
    where = [(r["kind"], path) for r in rendered for path, text in strings(r) if TOKEN in text]
    assert where == []
    (secret,) = [r for r in rendered if r["kind"] == "Secret"]
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN


# -- the Containerfiles ---------------------------------------------------------------------------


def containerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        word, _, rest = whole.strip().partition(" ")
        instructions.append((word.upper(), rest.strip()))
    assert not pending, f"{path}: ends in a continuation"
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1] :]


UBI9_PYTHON = "registry.access.redhat.com/ubi9/python-311"


@pytest.mark.parametrize(
    ("image", "install", "entrypoint"),
    [
        ("agent", '"rciots @ file://', ["rciots-agent"]),
        (
            "controller",
            '"rciots[controller] @ file://',
            ["rciots", "controller", "--state-dir", "/var/lib/rciots"],
        ),
    ],
)
def test_containerfile_essentials(image: str, install: str, entrypoint: list[str]) -> None:
    instructions = containerfile(DEPLOY / image / "Containerfile")
    stage = final_stage(instructions)
    assert stage[0] == ("FROM", UBI9_PYTHON)
    builds = [rest for word, rest in instructions if word == "FROM" and " AS build" in rest]
    assert builds == [f"{UBI9_PYTHON} AS build"]
    users = [rest for word, rest in stage if word == "USER"]
    assert users
    assert users[-1].isdigit()
    assert int(users[-1]) != 0  # runs as non-root
    pip = [rest for word, rest in stage if word == "RUN" and "pip install" in rest]
    assert len(pip) == 1
    assert install in pip[0]
    if image == "agent":
        assert "[controller]" not in pip[0]  # the agent alone
    assert json.loads(dict(stage)["ENTRYPOINT"]) == entrypoint
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint[0] in scripts
    # nothing secret is baked in
    for word, rest in instructions:
        if word in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"TOKEN|PASSWORD|SECRET", rest, re.IGNORECASE), rest


@pytest.mark.parametrize("image", ["agent", "controller"])
def test_containerfile_copies_what_the_wheel_is_built_from(image: str) -> None:
    """The build stage's COPY sources exist and hold what pyproject.toml builds from: the
    readme, each package folder, and the schemas the controller package links to."""
    copied: set[str] = set()
    for word, rest in containerfile(DEPLOY / image / "Containerfile"):
        if word == "COPY" and "--from=" not in rest:
            sources = [s for s in rest.split() if not s.startswith("--")][:-1]
            for source in sources:
                assert (REPO / source).exists(), source
            copied.update(sources)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= set(project["tool"]["setuptools"]["package-dir"].values())
    link = REPO / "controller" / "schemafiles"
    needed.add(link.resolve().relative_to(REPO).as_posix())
    assert needed <= copied


def test_the_agent_image_carries_both_clients() -> None:
    stage = final_stage(containerfile(DEPLOY / "agent" / "Containerfile"))
    assert ("COPY", "--from=cli /usr/bin/oc /opt/app-root/bin/oc") in stage
    assert ("RUN", "ln -s oc /opt/app-root/bin/kubectl") in stage
    assert json.loads(dict(stage)["CMD"]) == ["run"]
    agent_parser().parse_args(json.loads(dict(stage)["CMD"]))


def test_the_controller_image_keeps_its_state_in_a_volume() -> None:
    stage = dict(final_stage(containerfile(DEPLOY / "controller" / "Containerfile")))
    assert json.loads(stage["VOLUME"]) == ["/var/lib/rciots"]


# -- the controller's manifests ---------------------------------------------------------------


def controller_parts() -> tuple[list[Obj], Obj]:
    objects = build("controller/kubernetes/example").resources
    return objects, find(objects, "Deployment", "rciots-controller")


def test_the_controller_pod_runs_a_valid_controller_command_line(tmp_path: Path) -> None:
    objects, deployment = controller_parts()
    pod = pod_of(objects, deployment, tmp_path)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    entrypoint = dict(final_stage(containerfile(DEPLOY / "controller" / "Containerfile")))
    command = json.loads(entrypoint["ENTRYPOINT"])
    assert command[:2] == ["rciots", "controller"]
    argv = [*command[1:], *(expand(a, pod.environ) for a in container["args"])]
    assert [a for a in argv if "$(" in a] == []
    args = cli.build_parser(["controller"]).parse_args(argv)
    settings = find(objects, "ConfigMap")["data"]
    assert args.source == settings["source"]
    assert args.branch == settings["branch"]
    # the state directory is the claim's mount
    assert pod.mounts[str(args.state_dir)] == {
        "name": "state",
        "persistentVolumeClaim": {"claimName": "rciots-controller-state"},
    }
    find(objects, "PersistentVolumeClaim", "rciots-controller-state")
    # listeners on the container's ports, and the image exposes those
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    listening = {
        "enroll": args.enroll_listen,
        "connect": args.connect_listen,
        "http": args.listen,
    }
    assert {name: f"0.0.0.0:{port}" for name, port in ports.items()} == listening
    assert set(entrypoint["EXPOSE"].split()) == {str(p) for p in ports.values()}
    # devices reach it at the Route hosts, which are the server certificate's names
    hosts = {r["metadata"]["name"]: r["spec"].get("host") for r in objects if r["kind"] == "Route"}
    assert args.server_name == [settings["enroll-host"], settings["connect-host"]]
    assert hosts["rciots-enroll"] == settings["enroll-host"]
    assert hosts["rciots-connect"] == settings["connect-host"]
    assert args.connector_url == f"wss://{settings['connect-host']}/v1/connect"
    # the secrets come from the environment, from an optional Secret
    from_secret = {
        v["name"]: v["valueFrom"]["secretKeyRef"]
        for v in container["env"]
        if "secretKeyRef" in v.get("valueFrom", {})
    }
    assert set(from_secret) == {cmd_controller._PASSWORD_ENV, cmd_controller._WEBHOOK_ENV}
    assert all(r["name"] == "rciots-controller-git" and r["optional"] for r in from_secret.values())
    assert not any(a.startswith(("--password-file", "--webhook-secret-file")) for a in argv)


def test_routes_pass_tls_through_to_the_enrollment_and_connector_services() -> None:
    objects, deployment = controller_parts()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container_ports = {
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    assert set(services) == {"rciots-enroll", "rciots-connect", "rciots-http"}
    for service in services.values():
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    routes = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Route"}
    termination = {name: r["spec"]["tls"]["termination"] for name, r in routes.items()}
    assert termination == {
        "rciots-enroll": "passthrough",
        "rciots-connect": "passthrough",
        "rciots-http": "edge",
    }
    for route in routes.values():
        service = services[route["spec"]["to"]["name"]]
        assert route["spec"]["port"]["targetPort"] in {p["name"] for p in service["spec"]["ports"]}


def test_the_controller_can_issue_a_certificate_for_the_route_hosts() -> None:
    objects, _ = controller_parts()
    hosts = [r["spec"]["host"] for r in objects if r["kind"] == "Route" and "host" in r["spec"]]
    authority = ca.create_authority(hosts, datetime.now(UTC))
    assert ca.server_names_of(authority.server) == hosts


# -- rules for every workload in deploy/ ------------------------------------------------------


def every_object() -> Iterator[tuple[str, Obj]]:
    for variant in VARIANTS:
        for item in build(variant).resources:
            yield variant, item
    for path in (AGENT_TEMPLATE, CLUSTER_ADMIN_TEMPLATE):
        (template,) = read_yaml(path)
        values = TEMPLATE_VALUES if path == AGENT_TEMPLATE else {}
        for item in process_template(template, values):
            yield path.name, item


def test_workloads_run_unprivileged_and_take_secrets_from_secrets() -> None:
    workloads = [(where, o) for where, o in every_object() if o["kind"] == "Deployment"]
    assert len(workloads) >= 7
    for where, item in workloads:
        spec = item["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert item["spec"]["replicas"] == 1
        assert item["spec"]["strategy"]["type"] == "Recreate"
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            for variable in container.get("env", []):
                if variable["name"] in SECRET_ENV:
                    assert "secretKeyRef" in variable["valueFrom"], (where, variable["name"])
            assert not [a for a in container.get("args", []) if TOKEN in a]


def test_no_role_grants_everything() -> None:
    for where, item in every_object():
        for rule in item.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), (where, item["metadata"]["name"])


def test_no_configmap_holds_a_secret() -> None:
    for where, item in every_object():
        if item["kind"] == "ConfigMap":
            assert not SECRET_ENV & set(item.get("data", {})), where
            assert TOKEN not in json.dumps(item), where


# -- systemd ---------------------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    """The unit as shipped, but for ExecStart's program: verify wants it to exist, so the
    copy runs this virtual environment's rciots-agent."""
    (shipped,) = unit_settings()["ExecStart"]
    program = shipped.split()[0]
    assert program == "/opt/rciots-agent/bin/rciots-agent"
    copy_of_unit = tmp_path / "rciots-agent.service"
    copy_of_unit.write_text(UNIT.read_text().replace(program, str(BIN / "rciots-agent")))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy_of_unit)], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_unit_runs_the_podman_agent_and_survives_restarts() -> None:
    settings = unit_settings()
    (exec_start,) = settings["ExecStart"]
    args = agent_parser().parse_args(exec_start.split()[1:])
    assert args.command == "run"
    assert args.config == Path("/etc/rciots/agent.toml")
    assert settings["Restart"] == ["always"]
    assert settings["RestartPreventExitStatus"] == ["2"]  # a configuration error
    assert settings["KillMode"] == ["mixed"]
    assert settings["UnsetEnvironment"] == ["INVOCATION_ID"]  # conmon leaves the unit
    assert settings["StateDirectory"] == ["rciots-agent"]
    assert settings["StateDirectoryMode"] == ["0700"]
    # each of these gives the unit a mount namespace of its own (systemd.exec(5),
    # PrivateMounts=), where podman's container mounts would be invisible to the host
    namespacing = {
        "PrivateMounts",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectSystem",
        "ProtectHome",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectProc",
        "ProcSubset",
        "ReadOnlyPaths",
        "ReadWritePaths",
        "InaccessiblePaths",
        "TemporaryFileSystem",
        "BindPaths",
        "BindReadOnlyPaths",
        "RootDirectory",
        "RootImage",
        "DynamicUser",
    }
    assert not namespacing & set(settings)


def test_the_example_configuration_loads_with_the_podman_applier() -> None:
    text = AGENT_TOML.read_text()
    # the token from the environment, so that token_file is not read here
    settings = config.load(AGENT_TOML, {"RCIOTS_TOKEN": TOKEN}, {})
    assert settings.applier == "podman"
    assert settings.podman == "/usr/bin/podman"
    assert settings.state_dir == Path("/var/lib") / unit_settings()["StateDirectory"][0]
    assert settings.identity_secret is None
    assert tomllib.loads(text)["token_file"] == "/etc/rciots/token"
    assert "token =" not in text
