"""What the appliers share: running a tool, keeping Secret data out of messages, deciding what
to prune.

Position in the flow: protocol delivers a ``Bundle`` -> an applier (``applier_directory``,
``applier_podman``, ``applier_kubectl``) -> ``ApplyResult`` -> ``applied`` message. Every
applier runs its tool through ``run`` (an argv list, the manifests on stdin, a timeout, the
environment it was given: never a shell string), passes every message through a
``Redactor`` made from the bundle, and prunes what ``pick_prunes`` returns.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from rciots.agent.bundle import ApplyResult, Bundle, BundleError, ResourceId

__all__ = [
    "MESSAGE_LIMIT",
    "Prepared",
    "Redactor",
    "ToolMissing",
    "ToolOutput",
    "find_tool",
    "pick_prunes",
    "prepare",
    "run",
    "secret_values",
    "summary",
]

log = logging.getLogger(__name__)

# Results travel to the controller and into the status branch: a tool's whole stderr (a Go
# panic, a long list of errors) is cut to this many characters.
MESSAGE_LIMIT = 2000


class ToolMissing(Exception):
    """The applier's executable is not there (not on PATH, or not executable)."""


@dataclass(frozen=True)
class ToolOutput:
    """What one run of a tool gave; ``returncode`` is None when it was killed at its timeout."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    timeout: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def message(self) -> str:
        """What went wrong, in the tool's words (stderr, else stdout), or the timeout."""
        # "kubectl apply": the tool's name, not where it is installed
        command = " ".join([os.path.basename(self.argv[0]), *self.argv[1:2]])
        if self.returncode is None:
            return f"{command} timed out after {self.timeout:g} s"
        text = self.stderr.strip() or self.stdout.strip()
        return text or f"{command} exited with status {self.returncode}"


def find_tool(executable: str, env: Mapping[str, str]) -> str:
    """The full path of ``executable`` looked up on the PATH of ``env`` (the one the tool will
    run with); ToolMissing when it is not there."""
    found = shutil.which(executable, path=env.get("PATH", ""))
    if found is None:
        raise ToolMissing(f"{executable} not found on PATH (is it installed?)")
    return found


def run(
    argv: Sequence[str], *, env: Mapping[str, str], timeout: float, stdin: str = ""
) -> ToolOutput:
    """Run a tool to its end or its timeout, with ``stdin`` as its standard input.

    The argv is passed as a list, never through a shell; manifests only ever go through stdin.
    A tool that outlives ``timeout`` is killed and reported (returncode None), not raised.
    """
    log.debug("running %s", " ".join(argv))
    try:
        done = subprocess.run(
            list(argv),
            input=stdin.encode(),
            capture_output=True,
            env=dict(env),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        # subprocess.run has killed and reaped the child by now
        return ToolOutput(tuple(argv), None, _text(expired.stdout), _text(expired.stderr), timeout)
    except (FileNotFoundError, PermissionError) as error:
        raise ToolMissing(f"cannot run {argv[0]}: {error.strerror}") from None
    return ToolOutput(tuple(argv), done.returncode, _text(done.stdout), _text(done.stderr), timeout)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return data.decode(errors="replace")


def pick_prunes(
    previous: Sequence[ResourceId],
    desired: Iterable[ResourceId],
    key: Callable[[ResourceId], Hashable],
) -> list[ResourceId]:
    """The resources of ``previous`` whose ``key`` no desired resource has, in reverse order
    (what was applied last goes first, so that a Namespace goes after what it holds).

    ``key`` says when two ids are the same object for the applier's tool: never the apiVersion
    alone (an object keeps its identity when its version moves from v1beta1 to v1, and pruning
    it then would delete what was just applied).
    """
    kept = {key(resource) for resource in desired}
    prunes: list[ResourceId] = []
    seen: set[Hashable] = set()
    for resource in reversed(previous):
        identity = key(resource)
        if identity not in kept and identity not in seen:
            seen.add(identity)
            prunes.append(resource)
    return prunes


# --- Secret data out of messages --------------------------------------------------------

_TOP_KEY = re.compile(r"^([A-Za-z0-9_]+):")
_ENTRY = re.compile(r"^(\s+)(?:\"[^\"]*\"|'[^']*'|[^\s:][^:]*?):(?:\s+(.*))?$")
# a value shorter than this is only hidden where it stands alone, so that a secret "a" does not
# turn every "a" of a message into stars
_SHORT = 4


def secret_values(documents: Iterable[tuple[ResourceId, str]]) -> frozenset[str]:
    """Every value under ``data`` and ``stringData`` of the Secret documents, as written and,
    for ``data``, base64-decoded: the texts that must never appear in a message.

    Text-level reading of the block style kustomize prints (the agent has no YAML library):
    ``  key: value`` entries, quoted or plain, and ``|``/``>`` block scalars.
    """
    values: set[str] = set()
    for resource, text in documents:
        if resource.kind == "Secret":
            values.update(_values_of(text))
    return frozenset(value for value in values if value.strip())


def _values_of(text: str) -> set[str]:
    values: set[str] = set()
    section = ""
    block: list[str] | None = None
    block_indent = 0
    for line in text.splitlines():
        if block is not None:
            if not line.strip() or len(line) - len(line.lstrip(" ")) >= block_indent:
                block.append(line[block_indent:])
                continue
            _add_block(values, block)
            block = None
        top = _TOP_KEY.match(line)
        if top:
            section = top.group(1)
            continue
        if section not in ("data", "stringData"):
            continue
        entry = _ENTRY.match(line)
        if not entry:
            continue
        value = (entry.group(2) or "").strip()
        if value[:1] in ("|", ">"):
            block = []
            block_indent = len(entry.group(1)) + 2
            continue
        value = _unquote(value)
        values.add(value)
        if section == "data":
            values.update(_decoded(value))
    if block is not None:
        _add_block(values, block)
    return values


def _add_block(values: set[str], block: list[str]) -> None:
    values.add("\n".join(block).strip("\n"))
    values.update(line.strip() for line in block)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _decoded(value: str) -> set[str]:
    try:
        text = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return set()
    return {text, text.strip(), *(line.strip() for line in text.splitlines())}


class Redactor:
    """Cleans a tool's message before it goes into a result: Secret values out, length capped."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        # longest first, so that a value holding a shorter one is hidden whole
        ordered = sorted({v for v in values if v}, key=len, reverse=True)
        patterns = [
            re.escape(value)
            if len(value) >= _SHORT
            else rf"(?<![\w+/=]){re.escape(value)}(?![\w+/=])"
            for value in ordered
        ]
        self._pattern = re.compile("|".join(patterns)) if patterns else None

    @classmethod
    def for_documents(cls, documents: Iterable[tuple[ResourceId, str]]) -> Redactor:
        return cls(secret_values(documents))

    def clean(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub("***", text)
        text = text.strip()
        if len(text) > MESSAGE_LIMIT:
            text = text[: MESSAGE_LIMIT - 4].rstrip() + " ..."
        return text


@dataclass(frozen=True)
class Prepared:
    """What an apply of a checked bundle runs with."""

    tool: str  # the tool's path
    env: dict[str, str]
    redactor: Redactor


def prepare(
    bundle: Bundle, executable: str, env: Mapping[str, str] | None
) -> Prepared | ApplyResult:
    """The tool, environment and redactor to apply ``bundle`` with; or, when the bundle is
    inconsistent or the tool missing, the result that says so."""
    try:
        bundle.check()
    except BundleError as error:
        return ApplyResult(bundle.digest, error=str(error))
    environment = dict(os.environ if env is None else env)
    try:
        tool = find_tool(executable, environment)
    except ToolMissing as error:
        return ApplyResult(bundle.digest, error=str(error))
    return Prepared(tool, environment, Redactor.for_documents(bundle.documents()))


def summary(result: ApplyResult) -> str:
    """``2 applied, 1 pruned``: how a log line sums up a result."""
    if result.error:
        return f"error: {result.error}"
    counts: dict[str, int] = {}
    for outcome in result.resources:
        counts[outcome.action] = counts.get(outcome.action, 0) + 1
    text = ", ".join(f"{count} {action}" for action, count in sorted(counts.items()))
    return text or "nothing to do"
