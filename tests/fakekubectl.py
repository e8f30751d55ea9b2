"""A stand-in ``kubectl`` / ``oc`` for the kubectl applier's tests: there is no Kubernetes API
server on the test machines, so the applier is tested up to the process boundary.

``install(folder, name)`` writes this file as an executable ``folder/name`` run by the test's
Python. Each run appends ``{"tool", "argv", "stdin"}`` (stdin's bytes in base64) to the
JSON-lines file named by
``FAKE_KUBE_LOG``, and answers as kubectl does, for ``apply``, ``label`` and ``delete``, with
the output lines and exit status kubectl gives; ``FAKE_KUBE_SCRIPT`` (a JSON file) says what
fails::

    {"fail": {"apply": ["Kind/name"], "label": [...], "delete": [...]},
     "batch_only": ["Kind/name"],   # fails in a multi-document apply only (CRD not ready yet)
     "absent": ["name"],            # delete finds nothing (gone, or not labelled as ours)
     "no_type": ["Kind.group"],     # the cluster does not know that type
     "hang": ["apply"]}             # sleeps past any test timeout
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

KLOG = (
    'E1201 21:22:23.465987   24295 memcache.go:265] "Unhandled Error" '
    'err="couldn\'t get resource list for metrics.k8s.io/v1beta1"\n'
)


def install(folder: Path, name: str = "kubectl") -> Path:
    """This script as an executable ``name`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!{sys.executable}\n" + Path(__file__).read_text())
    path.chmod(0o755)
    return path


def records(log: Path) -> list[tuple[str, list[str], bytes]]:
    """Every run so far: tool name, argv after it, the bytes it read on stdin."""
    if not log.exists():
        return []
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    return [(run["tool"], run["argv"], base64.b64decode(run["stdin"])) for run in runs]


def _objects(text: str) -> list[tuple[str, str, str]]:
    """(type as kubectl prints it, name, whole document) per document of ``text``."""
    documents: list[list[str]] = [[]]
    for line in text.splitlines(keepends=True):
        if line.rstrip("\n") == "---":
            documents.append([])
        else:
            documents[-1].append(line)
    found = []
    for lines in documents:
        if not lines:
            continue
        fields = {"apiVersion": "", "kind": "", "name": ""}
        in_metadata = False
        for line in lines:
            if not line.startswith(" "):
                in_metadata = line.startswith("metadata:")
                key, _, value = line.partition(":")
                if key in ("apiVersion", "kind"):
                    fields[key] = value.strip()
            elif in_metadata and line.startswith("  name:") and not fields["name"]:
                fields["name"] = line.partition(":")[2].strip()
        group = fields["apiVersion"].rpartition("/")[0]
        kind = fields["kind"]
        found.append((f"{kind}.{group}" if group else kind, fields["name"], "".join(lines)))
    return found


def main() -> int:
    argv = sys.argv[1:]
    data = sys.stdin.buffer.read()
    with open(os.environ["FAKE_KUBE_LOG"], "a") as log:
        tool = os.path.basename(sys.argv[0])
        record = {"tool": tool, "argv": argv, "stdin": base64.b64encode(data).decode()}
        log.write(json.dumps(record) + "\n")
    stdin = data.decode()
    script_path = os.environ.get("FAKE_KUBE_SCRIPT")
    script: dict[str, Any] = json.loads(Path(script_path).read_text()) if script_path else {}
    fail = script.get("fail", {})
    verb = argv[0]
    if verb in script.get("hang", []):
        time.sleep(60)

    if verb in ("apply", "label"):
        objects = _objects(stdin)
        errors = []
        for kind, name, document in objects:
            short = f"{kind.partition('.')[0]}/{name}"
            batch_only = (
                verb == "apply" and short in script.get("batch_only", []) and len(objects) > 1
            )
            if short in fail.get(verb, []) or batch_only:
                if verb == "apply":
                    # a server that quotes the object back in its error, as some do
                    errors.append(
                        f'Error from server (Invalid): {kind} "{name}" is invalid: {document!r}'
                    )
                else:
                    errors.append(
                        f'Error from server (NotFound): {kind.lower()} "{name}" not found'
                    )
            else:
                done = "serverside-applied" if verb == "apply" else "labeled"
                print(f"{kind.lower()}/{name} {done}")
        if errors:
            sys.stderr.write(KLOG + "\n".join(errors) + "\n")
            return 1
        return 0

    if verb == "delete":
        kind = argv[argv.index("--") + 1]  # the type comes after "--", never read as an option
        name = next(a for a in argv if a.startswith("metadata.name=")).partition("=")[2]
        if kind in script.get("no_type", []):
            sys.stderr.write(f'error: the server doesn\'t have a resource type "{kind}"\n')
            return 1
        if f"{kind.partition('.')[0]}/{name}" in fail.get("delete", []):
            sys.stderr.write(
                f'Error from server (Forbidden): {kind.lower()} "{name}" is forbidden: '
                'User "system:serviceaccount:rciots:agent" cannot delete resource\n'
            )
            return 1
        if name in script.get("absent", []):
            sys.stderr.write("No resources found\n")
            return 0
        print(f'{kind.lower()} "{name}" deleted')
        return 0

    sys.stderr.write(f"error: unknown command {verb!r} for kubectl\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
