"""Reads and atomic writes in a fleet repo working tree that never follow symbolic links."""

from __future__ import annotations

from pathlib import Path

import pytest

from rciots.controller import worktree


def test_kind_of_missing_file_in_missing_folder(tmp_path: Path) -> None:
    assert worktree.kind_of(tmp_path, "tenants/acme/tenant.yaml") == "missing"


def test_kind_of_folder(tmp_path: Path) -> None:
    (tmp_path / "tenants").mkdir()
    assert worktree.kind_of(tmp_path, "tenants") == "directory"


def test_new_file_creates_its_folders(tmp_path: Path) -> None:
    worktree.write_text(tmp_path, "a/b/c.yaml", "x: 1\n", new=True)
    assert (tmp_path / "a/b/c.yaml").read_text() == "x: 1\n"


def test_new_file_never_replaces_an_existing_one(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("mine\n")
    with pytest.raises(worktree.WorktreeError, match=r"^c\.yaml already exists$"):
        worktree.write_text(tmp_path, "c.yaml", "x: 1\n", new=True)
    assert (tmp_path / "c.yaml").read_text() == "mine\n"


def test_replacing_needs_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(worktree.WorktreeError, match=r"^cannot write c\.yaml: it is not a regular"):
        worktree.write_text(tmp_path, "c.yaml", "x: 1\n", new=False)


def test_parent_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("")
    with pytest.raises(
        worktree.WorktreeError, match=r"^cannot write a/c\.yaml: a is not a directory$"
    ):
        worktree.write_text(tmp_path, "a/c.yaml", "x: 1\n", new=True)


def test_read_through_a_symlinked_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real/c.yaml").write_text("x: 1\n")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(
        worktree.WorktreeError, match=r"^refusing to read link/c\.yaml: link is a symbolic link"
    ):
        worktree.read_text(tmp_path, "link/c.yaml")


def test_text_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(
        worktree.WorktreeError,
        match=r"^cannot read c\.yaml: byte 9 is not UTF-8 \(save the file as UTF-8\)$",
    ):
        worktree.read_text(tmp_path, "c.yaml")


def test_has_overlay_names_the_kustomization(tmp_path: Path) -> None:
    (tmp_path / "tenants/acme/devices/gw-01").mkdir(parents=True)
    (tmp_path / "tenants/acme/devices/gw-01/Kustomization").write_text("{}\n")
    assert worktree.has_overlay(tmp_path, "acme", "gw-01") == (
        "tenants/acme/devices/gw-01/Kustomization"
    )
