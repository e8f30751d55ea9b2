"""The ``kubectl`` / ``oc`` applier: server-side apply, a label on what we manage, prune by
inventory.

Position in the flow: protocol delivers a ``Bundle`` -> **kubectl applier** -> ``ApplyResult``
-> ``applied`` message.

One apply runs, with the manifests on stdin and never through a shell:

1. ``kubectl apply --server-side --field-manager=rciots-agent --force-conflicts -f -`` with the
   whole bundle. kubectl applies every object it can and prints one line per object it applied
   (``deployment.apps/web serverside-applied``); those lines, matched in order, say which
   resources went through. When the batch fails after applying some, each resource it did not
   report is applied alone, so that the failure is pinned on the resource it belongs to.
2. ``kubectl label --overwrite -f - rciots.io/managed-by=rciots-agent`` over the applied
   documents: the agent has no YAML library to add the label to the manifests themselves, and
   the label lets prune (and people) tell our objects from others.
3. For each resource of the previous inventory that left the bundle, ``kubectl delete -n NS
   -l rciots.io/managed-by=rciots-agent --field-selector metadata.name=NAME --wait=false --
   KIND.GROUP``: only objects of our own inventory, and only while they carry our label.

``oc`` takes the same arguments. Tested up to the process boundary (there is no API server on
the test machines): see docs/appliers.md.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rciots.agent import applier_support
from rciots.agent.bundle import (
    ApplyResult,
    Bundle,
    ResourceAction,
    ResourceId,
    ResourceResult,
)

__all__ = ["DEFAULT_TIMEOUT", "FIELD_MANAGER", "MANAGED_LABEL", "KubectlApplier", "type_of"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0
FIELD_MANAGER = "rciots-agent"
MANAGED_LABEL = "rciots.io/managed-by=rciots-agent"

# "deployment.apps/web serverside-applied", "configmap/cfg labeled", "x/y not labeled"
_LINE = re.compile(r"^(?P<type>[^/\s]+)/(?P<name>\S+) (?P<verb>.+)$")
# a type the API server can have: a kind (lower-cased, a DNS-1035 label, as for a CRD's kind),
# then its group, a DNS subdomain
_TYPE = re.compile(r"[A-Za-z](?:[-A-Za-z0-9]*[A-Za-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
# client-go's own log lines (klog), which kubectl writes to stderr around its real message
_KLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [^\]]*\] .*$\n?", re.MULTILINE)


def type_of(resource: ResourceId) -> str:
    """How kubectl names a resource's type on its command line and in its output: ``Kind.group``,
    or ``Kind`` for the core group (the version is left out: an object stays reachable when the
    cluster no longer serves the version it was applied with)."""
    return f"{resource.kind}.{resource.group}" if resource.group else resource.kind


def _identity(resource: ResourceId) -> tuple[str, str, str, str]:
    # no namespace means the context's namespace, mostly "default": taking the two as the same
    # object can only leave an object behind, never delete one that is still desired
    return (resource.group, resource.kind, resource.namespace or "default", resource.name)


@dataclass
class KubectlApplier:
    """Applies through ``executable`` (``kubectl`` or ``oc``, a name on PATH or a path)."""

    executable: str = "kubectl"
    env: Mapping[str, str] | None = None
    timeout: float = DEFAULT_TIMEOUT
    field_manager: str = FIELD_MANAGER
    label: str = MANAGED_LABEL
    kind: str = "kubectl"  # how logs name it: "kubectl" or "oc"

    def apply(self, bundle: Bundle, previous: Sequence[ResourceId]) -> ApplyResult:
        prepared = applier_support.prepare(bundle, self.executable, self.env)
        if isinstance(prepared, ApplyResult):
            return prepared
        run = _Run(prepared.tool, prepared.env, self.timeout, prepared.redactor)
        try:
            results = self._apply(run, bundle) + self._prune(run, bundle, previous)
        except applier_support.ToolMissing as error:
            return ApplyResult(bundle.digest, error=str(error))
        result = ApplyResult(bundle.digest, tuple(results))
        log.info("%s: %s (%s)", self.kind, bundle.digest, applier_support.summary(result))
        return result

    def _apply(self, run: _Run, bundle: Bundle) -> list[ResourceResult]:
        documents = bundle.documents()
        if not documents:
            return []
        apply = [
            "apply",
            "--server-side",
            f"--field-manager={self.field_manager}",
            "--force-conflicts",
            "-f",
            "-",
        ]
        batch = run(apply, bundle.manifests)
        reported = _match_lines(batch.stdout, [resource for resource, _ in documents])
        # Applying alone what the batch did not apply pins each failure on its resource. Not
        # when the batch applied nothing at all, or timed out: a cluster that refuses us or
        # does not answer would do the same once per resource.
        retry = batch.returncode is not None and bool(reported)
        outcomes: list[ResourceResult] = []
        for index, (resource, text) in enumerate(documents):
            verb = reported.get(index)
            if verb is not None or batch.ok:
                # server-side apply says "serverside-applied" whether or not anything changed
                action: ResourceAction = "unchanged" if verb == "unchanged" else "applied"
                outcomes.append(ResourceResult(resource, action))
            elif not retry:
                outcomes.append(ResourceResult(resource, "failed", run.message(batch)))
            else:
                alone = run(apply, text)
                if alone.ok:
                    outcomes.append(ResourceResult(resource, "applied"))
                else:
                    outcomes.append(ResourceResult(resource, "failed", run.message(alone)))
        return self._label(run, documents, outcomes)

    def _label(
        self, run: _Run, documents: list[tuple[ResourceId, str]], outcomes: list[ResourceResult]
    ) -> list[ResourceResult]:
        applied = [i for i, outcome in enumerate(outcomes) if outcome.ok]
        if not applied:
            return outcomes
        texts = [documents[i][1] for i in applied]
        done = run(["label", "--overwrite", "-f", "-", self.label], "---\n".join(texts))
        if done.ok:
            return outcomes
        labelled = _match_lines(done.stdout, [documents[i][0] for i in applied])
        message = "applied, but not labelled as managed (prune will leave it): "
        for position, index in enumerate(applied):
            if position not in labelled:
                outcomes[index] = ResourceResult(
                    outcomes[index].resource, "failed", message + run.message(done)
                )
        return outcomes

    def _prune(
        self, run: _Run, bundle: Bundle, previous: Sequence[ResourceId]
    ) -> list[ResourceResult]:
        outcomes: list[ResourceResult] = []
        for resource in applier_support.pick_prunes(previous, bundle.resources, _identity):
            if not _TYPE.fullmatch(type_of(resource)):
                # Kubernetes has no such type, so there is no such object: nothing to delete
                outcomes.append(
                    ResourceResult(resource, "pruned", f"no type {type_of(resource)!r} can exist")
                )
                continue
            argv = ["delete"]
            if resource.namespace:
                argv += ["-n", resource.namespace]
            argv += [
                "-l",
                self.label,
                "--field-selector",
                f"metadata.name={resource.name}",
                "--wait=false",
                # the type comes from the manifests: after "--", kubectl never reads it as an
                # option ("--raw=/api/..." would delete any path, past the label)
                "--",
                type_of(resource),
            ]
            done = run(argv, "")
            if done.ok:
                deleted = done.stdout.strip()
                message = deleted or "nothing to delete (gone already, or not labelled as ours)"
                outcomes.append(ResourceResult(resource, "pruned", message))
            elif "doesn't have a resource type" in done.stderr:
                # the kind itself is gone (its CRD was removed), and every object of it with it
                outcomes.append(
                    ResourceResult(resource, "pruned", f"the cluster has no {type_of(resource)}")
                )
            else:
                outcomes.append(ResourceResult(resource, "failed", run.message(done)))
        return outcomes


@dataclass(frozen=True)
class _Run:
    """Runs the tool with the applier's environment and timeout; cleans its messages."""

    tool: str
    env: Mapping[str, str]
    timeout: float
    redactor: applier_support.Redactor

    def __call__(self, arguments: list[str], stdin: str) -> applier_support.ToolOutput:
        return applier_support.run(
            [self.tool, *arguments], env=self.env, timeout=self.timeout, stdin=stdin
        )

    def message(self, output: applier_support.ToolOutput) -> str:
        return self.redactor.clean(_KLOG.sub("", output.message()))


def _match_lines(stdout: str, resources: Sequence[ResourceId]) -> dict[int, str]:
    """Which of ``resources`` kubectl's output lines name, by position, with the verb.

    kubectl prints ``kind.group/name verb`` in the order it handled the objects, without the
    namespace: a line goes to the first resource of that type and name not matched yet.
    """
    matched: dict[int, str] = {}
    for line in stdout.splitlines():
        found = _LINE.match(line.strip())
        if not found:
            continue
        for index, resource in enumerate(resources):
            if (
                index not in matched
                and type_of(resource).lower() == found["type"].lower()
                and resource.name == found["name"]
            ):
                matched[index] = found["verb"]
                break
    return matched
