"""The ``podman`` applier: ``podman kube play --replace`` per workload, ``kube down`` for what
left, with the ConfigMap volumes and secrets kube down leaves behind removed too.

Position in the flow: protocol delivers a ``Bundle`` -> **podman applier** -> ``ApplyResult``
-> ``applied`` message.

Each workload (Pod, Deployment; DaemonSet and Job where the podman release runs them) is played
on its own, with the bundle's ConfigMaps beside it on stdin (podman reads them only from the
same input), so that each gets its own result, and so that a workload whose inputs did not
change is not restarted when another one changes. In order:

1. workloads that left the bundle: ``podman kube down -`` with the document they were played
   with (kept in the state folder; it names every replica's pod);
2. Secrets, and PersistentVolumeClaims whose volume does not exist yet: one
   ``podman kube play -`` (secrets are replaced; an existing volume is kept, with its data);
3. each workload whose document, ConfigMaps or Secrets changed since its last successful play,
   or whose pods are gone: ``podman kube play --replace -`` (after ``kube down`` of its old
   document when that differs, so that replicas dropped from it go too). When a ConfigMap
   changed, all workloads go down first and its volume is removed, so that the plays write
   it afresh (podman rewrites a volume key by key and would keep removed keys);
4. ConfigMaps, Secrets and claims that left the bundle: their volumes and secrets are removed;
5. ``podman pod ps --format json`` gives each workload's pods and their state for its result.

Kinds podman does not run (Service, Namespace, ...) are reported ``skipped``.

The state folder (``root``) holds ``podman-state.json``: per resource, a hash of what was
played and, per workload, its document and pod names. It is rewritten atomically after each
apply; losing it costs one restart of every workload, and a workload pruned without it is
taken down by a document made from its name alone (one replica).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rciots.agent import applier_support
from rciots.agent.atomicfile import write_atomically
from rciots.agent.bundle import ApplyResult, Bundle, ResourceId, ResourceResult

__all__ = ["DEFAULT_TIMEOUT", "STATE_FILE", "WORKLOAD_KINDS", "PodmanApplier"]

log = logging.getLogger(__name__)

# a play may pull images over a slow link
DEFAULT_TIMEOUT = 300.0
STATE_FILE = "podman-state.json"
WORKLOAD_KINDS = frozenset({"Pod", "Deployment", "DaemonSet", "Job"})
# kinds that only feed workloads: podman has no object for a ConfigMap, a Secret becomes a
# podman secret, a claim a named volume
_SUPPORT_KINDS = frozenset({"ConfigMap", "Secret", "PersistentVolumeClaim"})
# the names podman gives secrets and volumes (its own rule); it has nothing of any other name
_PODMAN_NAME = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,62}[a-zA-Z0-9])?")


def _identity(resource: ResourceId) -> str:
    # podman has no namespaces: a Deployment "web" is the same pods in any namespace
    return f"{resource.group}/{resource.kind}/{resource.name}"


@dataclass
class PodmanApplier:
    """Runs ``executable`` (``podman``, a name on PATH or a path) as root or rootless, whichever
    the agent is; keeps its state under ``root``."""

    root: Path
    executable: str = "podman"
    env: Mapping[str, str] | None = None
    timeout: float = DEFAULT_TIMEOUT
    kind: str = field(default="podman", init=False)

    def apply(self, bundle: Bundle, previous: Sequence[ResourceId]) -> ApplyResult:
        prepared = applier_support.prepare(bundle, self.executable, self.env)
        if isinstance(prepared, ApplyResult):
            return prepared
        tool, env, redactor = prepared.tool, prepared.env, prepared.redactor
        state = _load_state(self.root)
        try:
            results = _Apply(tool, env, self.timeout, redactor, state).run(bundle, previous)
        except applier_support.ToolMissing as error:
            return ApplyResult(bundle.digest, error=str(error))
        finally:
            _save_state(self.root, state)
        result = ApplyResult(bundle.digest, tuple(results))
        log.info("podman: %s (%s)", bundle.digest, applier_support.summary(result))
        return result


class _Apply:
    """One apply: the tool, its environment and the state it updates as it goes."""

    def __init__(
        self,
        tool: str,
        env: Mapping[str, str],
        timeout: float,
        redactor: applier_support.Redactor,
        state: dict[str, dict[str, Any]],
    ) -> None:
        self.tool = tool
        self.env = env
        self.timeout = timeout
        self.redactor = redactor
        self.state = state

    def podman(self, *arguments: str, stdin: str = "") -> applier_support.ToolOutput:
        return applier_support.run(
            [self.tool, *arguments], env=self.env, timeout=self.timeout, stdin=stdin
        )

    def message(self, output: applier_support.ToolOutput) -> str:
        text = output.message()
        # a Go panic: its first lines say what happened, the goroutine dump only what ran
        if "\ngoroutine " in text:
            text = text.split("\ngoroutine ", 1)[0]
        return self.redactor.clean(text)

    def run(self, bundle: Bundle, previous: Sequence[ResourceId]) -> list[ResourceResult]:
        documents = bundle.documents()
        prunes = applier_support.pick_prunes(previous, bundle.resources, _identity)
        pruned: list[ResourceResult] = []
        for resource in prunes:
            if resource.kind in WORKLOAD_KINDS:
                pruned.append(self.take_down(resource))

        results: dict[int, ResourceResult] = {}
        results.update(self.play_support(documents))
        self.drop_changed_configmaps(documents)
        configmaps = [text for resource, text in documents if resource.kind == "ConfigMap"]
        secret_texts = [text for resource, text in documents if resource.kind == "Secret"]
        played: dict[int, list[str]] = {}  # workload index -> pod ids from its play
        pods = self.pods()
        for index, (resource, text) in enumerate(documents):
            if resource.kind in WORKLOAD_KINDS:
                inputs = "---\n".join([*configmaps, text])
                digest = _hash(inputs, *secret_texts)
                results[index], ids = self.play_workload(resource, inputs, text, digest, pods)
                if ids is not None:
                    played[index] = ids
            elif resource.kind == "ConfigMap":
                results[index] = self.record(resource, text)
            elif resource.kind not in _SUPPORT_KINDS:
                message = f"podman kube play does not run kind {resource.kind}"
                results[index] = ResourceResult(resource, "skipped", message)

        for resource in prunes:
            if resource.kind not in WORKLOAD_KINDS:
                pruned.append(self.remove_support(resource))

        if any(resource.kind in WORKLOAD_KINDS for resource, _ in documents):
            pods = self.pods()
            for index, ids in played.items():
                entry = self.state[_identity(documents[index][0])]
                entry["pods"] = [pods[i]["Name"] for i in ids if i in pods]
            for index, (resource, _) in enumerate(documents):
                if resource.kind in WORKLOAD_KINDS:
                    results[index] = self.with_status(results[index], pods)
        return [results[index] for index in range(len(documents))] + pruned

    # --- secrets and claims ---------------------------------------------------------------

    def play_support(self, documents: list[tuple[ResourceId, str]]) -> dict[int, ResourceResult]:
        results: dict[int, ResourceResult] = {}
        volumes = self.volumes()
        to_play: list[int] = []
        for index, (resource, _) in enumerate(documents):
            if resource.kind == "Secret":
                to_play.append(index)
            elif resource.kind == "PersistentVolumeClaim":
                if resource.name in volumes:
                    results[index] = ResourceResult(resource, "unchanged", "volume kept")
                else:
                    to_play.append(index)
        if not to_play:
            return results
        together = self.podman(
            "kube", "play", "-", stdin="---\n".join(documents[i][1] for i in to_play)
        )
        for index in to_play:
            resource, text = documents[index]
            done = together
            if not together.ok and together.returncode is not None:
                # played one by one, so that the failure is pinned on its own resource (a
                # podman that does not answer would time out once per resource: not retried)
                done = self.podman("kube", "play", "-", stdin=text)
            if not done.ok:
                results[index] = ResourceResult(resource, "failed", self.message(done))
            elif resource.kind == "Secret":
                results[index] = self.record(resource, text)
            else:
                results[index] = ResourceResult(resource, "applied", "volume created")
        return results

    def drop_changed_configmaps(self, documents: list[tuple[ResourceId, str]]) -> None:
        """Remove the volumes of ConfigMaps that changed, with the pods that mount them.

        ``kube play`` rewrites a ConfigMap volume key by key: a key removed from the ConfigMap
        would stay in it as a file. A changed ConfigMap changes every workload's hash, so all of
        them are played again anyway; they go down first, then the volume, and the plays make
        it afresh.
        """
        volumes = self.volumes()
        changed = [
            resource.name
            for resource, text in documents
            if resource.kind == "ConfigMap"
            and resource.name in volumes
            and self.state.get(_identity(resource), {}).get("hash") != _hash(text)
        ]
        if not changed:
            return
        for resource, _ in documents:
            entry = self.state.get(_identity(resource), {})
            document = entry.get("document")
            if (
                resource.kind in WORKLOAD_KINDS
                and isinstance(document, str)
                and self.down(document, entry.get("pods") or []) is None
            ):
                entry.pop("document")  # down already: play_workload need not do it again
        for name in changed:
            done = self.podman("volume", "rm", "--", name)
            if not done.ok:
                log.warning("podman: could not remove volume %s: %s", name, self.message(done))

    def record(self, resource: ResourceId, text: str) -> ResourceResult:
        """A ConfigMap or Secret: unchanged when its document is the one last applied."""
        digest = _hash(text)
        entry = self.state.setdefault(_identity(resource), {})
        unchanged = entry.get("hash") == digest
        entry["hash"] = digest
        return ResourceResult(resource, "unchanged" if unchanged else "applied")

    # --- workloads --------------------------------------------------------------------------

    def play_workload(
        self,
        resource: ResourceId,
        inputs: str,
        document: str,
        digest: str,
        pods: dict[str, dict[str, Any]],
    ) -> tuple[ResourceResult, list[str] | None]:
        """Play one workload unless it is unchanged; its result, and the ids of the pods the
        play made (None when it was not played)."""
        key = _identity(resource)
        entry = self.state.get(key, {})
        names = {pod["Name"] for pod in pods.values()}
        known = entry.get("pods") or []
        if entry.get("hash") == digest and known and all(name in names for name in known):
            return ResourceResult(resource, "unchanged"), None
        old = entry.get("document")
        if isinstance(old, str) and old != document:
            # --replace takes down the pods the new document names; the old one may name more
            # (replicas dropped since), so it goes down first
            failed = self.down(old, known)
            if failed is not None:
                log.warning(
                    "podman: could not take down the old %s before replaying it: %s",
                    resource.label(),
                    self.message(failed),
                )
        done = self.podman("kube", "play", "--replace", "-", stdin=inputs)
        # recorded whatever the outcome: a failed play may still have made pods, and prune
        # needs the document to take them down; an empty hash makes the next apply replay it
        self.state[key] = {"document": document, "hash": digest if done.ok else "", "pods": []}
        if done.ok:
            return ResourceResult(resource, "applied"), _pod_ids(done.stdout)
        return ResourceResult(resource, "failed", self.message(done)), _pod_ids(done.stdout)

    def take_down(self, resource: ResourceId) -> ResourceResult:
        entry = self.state.get(_identity(resource), {})
        document = entry.get("document")
        if not isinstance(document, str):
            # played before this state was kept: its name is all there is
            document = json.dumps(
                {
                    "apiVersion": resource.api_version,
                    "kind": resource.kind,
                    "metadata": {"name": resource.name},
                }
            )
        done = self.down(document, entry.get("pods") or [])
        if done is not None:
            return ResourceResult(resource, "failed", self.message(done))
        self.state.pop(_identity(resource), None)
        return ResourceResult(resource, "pruned", "pods removed")

    def down(self, document: str, pods: list[str]) -> applier_support.ToolOutput | None:
        """Take a workload's pods down; None when they are gone, else what failed."""
        done = self.podman("kube", "down", "-", stdin=document)
        if done.ok:
            return None
        if "no such pod" not in done.stderr:
            return done
        # some pod is gone already (kube down stops at it): remove the others by name
        if not pods:
            return None
        rest = self.podman("pod", "rm", "--force", "--ignore", *pods)
        return None if rest.ok else rest

    # --- what left the bundle ------------------------------------------------------------

    def remove_support(self, resource: ResourceId) -> ResourceResult:
        steps: list[tuple[str, ...]] = []
        # the name comes from the manifests: after "--", podman never reads it as an option
        # ("--all" would remove every secret); a name podman refuses names no secret
        if resource.kind == "Secret" and _PODMAN_NAME.fullmatch(resource.name):
            steps.append(("secret", "rm", "--", resource.name))
        if resource.kind in _SUPPORT_KINDS and resource.name in self.volumes():
            # kube down leaves the volumes of ConfigMaps, secrets and claims behind
            steps.append(("volume", "rm", "--", resource.name))
        for step in steps:
            done = self.podman(*step)
            if not done.ok and "no such" not in done.stderr:
                return ResourceResult(resource, "failed", self.message(done))
        self.state.pop(_identity(resource), None)
        removed = " and ".join(f"{step[0]} {step[-1]}" for step in steps)
        return ResourceResult(resource, "pruned", f"removed {removed}" if steps else "")

    # --- what podman has --------------------------------------------------------------------

    def volumes(self) -> set[str]:
        done = self.podman("volume", "ls", "--format", "{{.Name}}")
        return set(done.stdout.split()) if done.ok else set()

    def pods(self) -> dict[str, dict[str, Any]]:
        """Podman's pods by id (``pod ps`` JSON: Name, Status, Containers, ...)."""
        done = self.podman("pod", "ps", "--format", "json")
        try:
            listed = json.loads(done.stdout) if done.ok and done.stdout.strip() else []
        except ValueError:
            listed = []
        return {pod["Id"]: pod for pod in listed if isinstance(pod, dict) and "Id" in pod}

    def with_status(
        self, result: ResourceResult, pods: dict[str, dict[str, Any]]
    ) -> ResourceResult:
        names = self.state.get(_identity(result.resource), {}).get("pods") or []
        by_name = {pod["Name"]: pod for pod in pods.values()}
        states = [_pod_state(by_name[name]) for name in names if name in by_name]
        if not states:
            return result
        status = "pods: " + ", ".join(states)
        message = f"{result.message}; {status}" if result.message else status
        return ResourceResult(result.resource, result.action, self.redactor.clean(message))


def _pod_ids(stdout: str) -> list[str]:
    """The pods a ``kube play`` made: the line after each ``Pod:`` line of its output."""
    lines = stdout.splitlines()
    return [lines[i + 1].strip() for i, line in enumerate(lines[:-1]) if line.strip() == "Pod:"]


def _pod_state(pod: dict[str, Any]) -> str:
    """``web-pod-0 Running``, and for a pod not running, its containers that are not either."""
    text = f"{pod.get('Name')} {pod.get('Status')}"
    if pod.get("Status") != "Running":
        stopped = [
            f"{container.get('Names')} {container.get('Status')}"
            for container in pod.get("Containers") or []
            if container.get("Id") != pod.get("InfraId") and container.get("Status") != "running"
        ]
        if stopped:
            text += f" ({', '.join(stopped)})"
    return text


def _hash(*texts: str) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _load_state(root: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((root / STATE_FILE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.warning(
            "podman: ignoring unreadable %s (%s): workloads will be replayed", STATE_FILE, error
        )
        return {}
    resources = data.get("resources") if isinstance(data, dict) else None
    if not isinstance(resources, dict):
        return {}
    return {key: value for key, value in resources.items() if isinstance(value, dict)}


def _save_state(root: Path, state: dict[str, dict[str, Any]]) -> None:
    """Replaced atomically: a crash leaves the old state or the new one."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = json.dumps({"version": 1, "resources": state}, indent=1, sort_keys=True) + "\n"
    write_atomically(root / STATE_FILE, data.encode(), 0o600)
