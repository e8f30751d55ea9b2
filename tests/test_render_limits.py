"""The renderer against hostile or broken input: each fails fast with the file named; and
what the controller relies on: the tenant root fence, recorded inputs, the shared cache."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from rciots.controller import render
from rciots.controller.render import engine

RCIOTS = Path(sys.executable).parent / "rciots"
CONFIGMAP = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  a: b\n"


def bomb() -> bytes:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(8)
    ]
    header = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: boom\ndata:\n"
    return (header + "".join(f"  {line}\n" for line in lines)).encode()


def failure(snapshot: dict[str, bytes], entry: str = "", root: str = "") -> render.RenderError:
    started = time.perf_counter()
    with pytest.raises(render.RenderError) as caught:
        render.build(snapshot, entry, root=root)
    assert time.perf_counter() - started < 1.0
    return caught.value


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bomb(), "after alias expansion"),
        (b"a: " + b"[" * 200_000, "nesting deeper than 64 levels"),
        (b"a: b\n" * 300_000, "over the limit of 1048576"),
        (b"---\na: 1\n" * 1001, "more than 1000 documents"),
        (
            b"kind: ConfigMap\nmetadata: {name: x}\ndata: !!python/object:os.system {}\n",
            "is not allowed",
        ),
    ],
)
def test_hostile_resource_files_fail_fast_naming_the_file(content: bytes, message: str) -> None:
    snapshot = {"kustomization.yaml": b"resources:\n- evil.yaml\n", "evil.yaml": content}
    error = failure(snapshot)
    assert error.path == "evil.yaml"
    assert message in error.message


def test_hostile_kustomization_fails_naming_it() -> None:
    error = failure({"kustomization.yaml": bomb()})
    assert error.path == "kustomization.yaml"


def test_nothing_outside_the_root_is_read() -> None:
    snapshot = {
        "tenants/a/devices/d/kustomization.yaml": b"resources:\n- ../../../b/templates/t\n",
        "tenants/b/templates/t/kustomization.yaml": b"resources:\n- cm.yaml\n",
        "tenants/b/templates/t/cm.yaml": CONFIGMAP,
    }
    error = failure(snapshot, "tenants/a/devices/d", root="tenants/a")
    assert error.path == "tenants/a/devices/d/kustomization.yaml"
    assert "outside the allowed root tenants/a/" in error.message
    # without the fence, kustomize's own rules allow a base elsewhere
    assert render.build(snapshot, "tenants/a/devices/d").resources[0]["metadata"]["name"] == "app"


def test_inputs_record_every_file_read() -> None:
    snapshot = {
        "overlay/kustomization.yaml": b"resources:\n- ../base\npatches:\n- path: p.yaml\n",
        "overlay/p.yaml": CONFIGMAP.replace(b"a: b", b"a: c"),
        "overlay/unused.yaml": b"x: 1\n",
        "base/kustomization.yaml": b"resources:\n- cm.yaml\n",
        "base/cm.yaml": CONFIGMAP,
    }
    rendered = render.build(snapshot, "overlay")
    assert rendered.inputs == {
        "overlay/kustomization.yaml",
        "overlay/p.yaml",
        "base/kustomization.yaml",
        "base/cm.yaml",
    }
    assert "  a: c\n" in rendered.yaml


def test_cache_shares_a_base_and_notices_a_change() -> None:
    snapshot = {
        "d1/kustomization.yaml": b"resources:\n- ../base\nnamePrefix: one-\n",
        "d2/kustomization.yaml": b"resources:\n- ../base\nnamePrefix: two-\n",
        "base/kustomization.yaml": b"resources:\n- cm.yaml\n",
        "base/cm.yaml": CONFIGMAP,
    }
    cache = engine.Cache()
    first = engine.build(snapshot, "d1", cache=cache)
    second = engine.build(snapshot, "d2", cache=cache)
    assert first.yaml.replace("one-", "two-") == second.yaml
    assert second.inputs >= {"base/kustomization.yaml", "base/cm.yaml"}
    changed = {**snapshot, "base/cm.yaml": CONFIGMAP.replace(b"a: b", b"a: z")}
    assert "  a: z\n" in engine.build(changed, "d1", cache=cache).yaml


def test_cli_refuses_symlinks(tmp_path: Path) -> None:
    (tmp_path / "secret.yaml").write_bytes(CONFIGMAP)
    app = tmp_path / "app"
    app.mkdir()
    (app / "kustomization.yaml").write_text("resources:\n- cm.yaml\n")
    (app / "cm.yaml").symlink_to(tmp_path / "secret.yaml")
    done = subprocess.run(
        [RCIOTS, "kustomize", "build", "app"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == "rciots: error: app/cm.yaml: symbolic links are never followed\n"


def test_cli_prints_what_build_renders(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n- cm.yaml\nnamePrefix: p-\n")
    (tmp_path / "cm.yaml").write_bytes(CONFIGMAP)
    done = subprocess.run(
        [RCIOTS, "kustomize", "build", "."], cwd=tmp_path, capture_output=True, check=True
    )
    snapshot = {
        "kustomization.yaml": (tmp_path / "kustomization.yaml").read_bytes(),
        "cm.yaml": CONFIGMAP,
    }
    assert done.stdout == render.build(snapshot, "").yaml.encode()
