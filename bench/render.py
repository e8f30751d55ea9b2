"""Benchmark: the in-process renderer against one `kubectl kustomize` process per device.

A realistic fleet: one template (Deployment, Service, ServiceAccount, Role, RoleBinding, PVC,
a configMapGenerator and a secretGenerator) and N device overlays, each with namespace,
nameSuffix, labels, annotations, images, replicas, a generator merge, one strategic-merge
and one JSON 6902 patch. It reports, measured in the same run:

1. one `rciots kustomize build` process over a kustomization listing all N overlays, per
   device, against `kubectl kustomize` run once per device on a sample: the ratio of CPU time
   (user and system, all threads: the cost) and of wall time;
2. in-process builds of every device overlay one by one with a shared base cache, as the
   controller does: per-device time and peak memory, for N and for --many devices;
3. that the outputs agree byte for byte with kubectl on the sampled devices.

Run: .venv/bin/python bench/render.py [--devices 1000] [--many 10000] [--sample 20]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from rciots.controller.render import engine

TEMPLATE = {
    "kustomization.yaml": """\
resources:
- deployment.yaml
- service.yaml
- serviceaccount.yaml
- role.yaml
- rolebinding.yaml
- pvc.yaml
configMapGenerator:
- name: app-settings
  literals:
  - LOG_LEVEL=info
  - BROKER=mqtt://broker:1883
  files:
  - app.conf
secretGenerator:
- name: app-credentials
  literals:
  - username=device
  - password=change-me
""",
    "app.conf": "listen 8080\nworkers 2\ncache /data/cache\n",
    "deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: collector
  labels: {app: collector}
spec:
  replicas: 1
  selector:
    matchLabels: {app: collector}
  template:
    metadata:
      labels: {app: collector}
    spec:
      serviceAccountName: collector
      containers:
      - name: collector
        image: registry.example.com/edge/collector:1.4.2
        ports:
        - {containerPort: 8080, protocol: TCP, name: http}
        envFrom:
        - configMapRef: {name: app-settings}
        env:
        - name: PASSWORD
          valueFrom: {secretKeyRef: {name: app-credentials, key: password}}
        volumeMounts:
        - {name: data, mountPath: /data}
        resources:
          limits: {cpu: 200m, memory: 128Mi}
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: collector-data}
""",
    "service.yaml": """\
apiVersion: v1
kind: Service
metadata: {name: collector}
spec:
  selector: {app: collector}
  ports:
  - {port: 80, targetPort: http}
""",
    "serviceaccount.yaml": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: collector}\n",
    "role.yaml": """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: collector}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list]
""",
    "rolebinding.yaml": """\
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: collector}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: collector}
subjects:
- {kind: ServiceAccount, name: collector}
""",
    "pvc.yaml": """\
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: collector-data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
""",
}


def device_overlay(number: int) -> str:
    name = f"d{number:05d}"
    return f"""\
resources:
- ../../templates/collector
namespace: {name}
nameSuffix: -{name}
labels:
- pairs:
    device: {name}
    site: site-{number % 40}
  includeSelectors: false
commonAnnotations:
  rciots.io/device: {name}
images:
- name: registry.example.com/edge/collector
  newTag: 1.4.{number % 7}
replicas:
- name: collector
  count: {1 + number % 3}
configMapGenerator:
- name: app-settings
  behavior: merge
  literals:
  - DEVICE_ID={name}
patches:
- patch: |-
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: collector
    spec:
      template:
        spec:
          containers:
          - name: collector
            resources:
              limits:
                memory: {64 + number % 4 * 32}Mi
- target:
    kind: Service
  patch: |-
    - op: add
      path: /metadata/labels
      value:
        exposed: "{str(number % 2 == 0).lower()}"
"""


def fleet_snapshot(devices: int) -> dict[str, bytes]:
    snapshot = {f"templates/collector/{n}": t.encode() for n, t in TEMPLATE.items()}
    for number in range(devices):
        snapshot[f"devices/d{number:05d}/kustomization.yaml"] = device_overlay(number).encode()
    listing = "".join(f"- ../devices/d{n:05d}\n" for n in range(devices))
    snapshot["all/kustomization.yaml"] = f"resources:\n{listing}".encode()
    return snapshot


def write_tree(snapshot: dict[str, bytes], top: Path) -> None:
    for path, data in snapshot.items():
        target = top / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(argv: list[str], cwd: Path) -> tuple[float, float, bytes]:
    """Wall seconds, CPU seconds (user + system, all threads) and stdout of one process."""
    cpu = children_cpu()
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, check=True)
    return time.perf_counter() - started, children_cpu() - cpu, done.stdout


def in_process(snapshot: dict[str, bytes], devices: int) -> dict[str, float]:
    """CPU time of building every device one by one (one core: the process is single
    threaded), then, in a second pass under tracemalloc (which slows Python down), the peak
    memory the builds allocate beyond the snapshot."""
    cache = engine.Cache()
    started = time.process_time()
    total_bytes = 0
    for number in range(devices):
        total_bytes += len(engine.build(snapshot, f"devices/d{number:05d}", cache=cache).yaml)
    cpu = time.process_time() - started
    cache = engine.Cache()
    tracemalloc.start()
    for number in range(min(devices, 1000)):
        engine.build(snapshot, f"devices/d{number:05d}", cache=cache)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "devices": devices,
        "cpu_seconds": round(cpu, 2),
        "ms_per_device": round(cpu / devices * 1000, 3),
        "peak_build_mib": round(peak / 2**20, 2),
        "output_mib": round(total_bytes / 2**20, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--many", type=int, default=10000)
    parser.add_argument("--sample", type=int, default=20)
    args = parser.parse_args()
    kubectl = shutil.which("kubectl")
    rciots = Path(sys.executable).parent / "rciots"
    report: dict[str, object] = {}
    snapshot = fleet_snapshot(args.devices)
    with tempfile.TemporaryDirectory() as scratch:
        top = Path(scratch)
        write_tree(snapshot, top)
        print(f"one rciots process over {args.devices} overlays, 3 runs ...", file=sys.stderr)
        # medians of three: this machine's timings vary by a fifth between runs
        runs = [run([str(rciots), "kustomize", "build", "all"], top) for _ in range(3)]
        ours_wall = statistics.median(r[0] for r in runs) / args.devices
        ours_cpu = statistics.median(r[1] for r in runs) / args.devices
        report["rciots_ms_per_device_wall"] = round(ours_wall * 1000, 3)
        report["rciots_ms_per_device_cpu"] = round(ours_cpu * 1000, 3)
        if kubectl:
            sample = [round(i * args.devices / args.sample) for i in range(args.sample)]
            walls, cpus, mismatches = [], [], 0
            print(f"kubectl kustomize once per device, {len(sample)} devices ...", file=sys.stderr)
            for number in sample:
                device = f"devices/d{number:05d}"
                wall, cpu, theirs = run([kubectl, "kustomize", device], top)
                walls.append(wall)
                cpus.append(cpu)
                if engine.build(snapshot, device).yaml.encode() != theirs:
                    mismatches += 1
            their_wall, their_cpu = statistics.median(walls), statistics.median(cpus)
            report["kubectl_ms_per_device_wall"] = round(their_wall * 1000, 1)
            report["kubectl_ms_per_device_cpu"] = round(their_cpu * 1000, 1)
            # "costs less per device": CPU time is the cost; wall time is shown beside it
            report["ratio_cpu"] = round(their_cpu / ours_cpu, 1)
            report["ratio_wall"] = round(their_wall / ours_wall, 1)
            identical = f"{len(sample) - mismatches}/{len(sample)}"
            report["sampled_devices_identical_to_kubectl"] = identical
        else:
            report["kubectl"] = "not installed: no ratio"
    print(f"in-process, {args.devices} devices one by one ...", file=sys.stderr)
    report["in_process"] = in_process(snapshot, args.devices)
    print(f"in-process, {args.many} devices one by one ...", file=sys.stderr)
    report["in_process_many"] = in_process(fleet_snapshot(args.many), args.many)
    report["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
