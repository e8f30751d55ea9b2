"""``rciots device approve|disable|enable``: change a device's file in a fleet repo working tree.

A device enrolled with a manual token waits until ``tenants/<tenant>/devices/<name>/device.yaml``
approves it on the main branch; disabling a device there makes the controller refuse and
disconnect it. These commands create or edit that file in place, keeping everything people
wrote in it (comments, order, quoting), and leave committing and the pull request to the user.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from rciots.controller import cmdargs, layout, names, worktree, yamledit

__all__ = ["register", "run_approve", "run_disable", "run_enable"]

_AFTER = "commit it and open a pull request"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    device = commands.add_parser(
        "device",
        help="approve, disable or enable devices",
        description=(
            "Change tenants/TENANT/devices/NAME/device.yaml in the fleet repo working tree. "
            "Comments and formatting in the file are kept. You commit the change and open the "
            "pull request; the controller acts on it once merged."
        ),
    )
    actions = device.add_subparsers(dest="device_command", metavar="ACTION", required=True)
    _add_approve(actions)
    _add_switch(actions, "disable", run_disable, "refuse and disconnect the device")
    _add_switch(actions, "enable", run_enable, "let a disabled device connect again")


def _add_approve(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    approve = actions.add_parser(
        "approve",
        help="approve a device (create or update its device.yaml)",
        description=(
            "Approve a device: create tenants/TENANT/devices/NAME/device.yaml (approved and "
            "enabled) or set spec.approved: true in the existing file, with the template, "
            "labels and description given. Commit the file and open a pull request; the "
            "device gets its identity once the change is merged."
        ),
    )
    _add_common(approve)
    approve.add_argument(
        "--template",
        metavar="NAME",
        help="template the device runs (tenants/TENANT/templates/NAME/); not allowed when the "
        "device has its own kustomization.yaml",
    )
    approve.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set metadata.labels KEY to VALUE (fleets select devices by label); repeatable",
    )
    approve.add_argument("--description", metavar="TEXT", help="set spec.description")
    approve.set_defaults(func=run_approve)


def _add_switch(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    func: Callable[[argparse.Namespace], int],
    purpose: str,
) -> None:
    enabled = "true" if name == "enable" else "false"
    parser = actions.add_parser(
        name,
        help=f"{purpose} (spec.enabled: {enabled})",
        description=(
            f"{purpose[0].upper()}{purpose[1:]}: set spec.enabled: {enabled} in "
            "tenants/TENANT/devices/NAME/device.yaml, changing nothing else in the file. Commit "
            "it and open a pull request; the controller acts once the change is merged."
        ),
    )
    _add_common(parser)
    parser.set_defaults(func=func)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device", metavar="TENANT/NAME", help="the device, e.g. acme/gw-01")
    cmdargs.add_repo_argument(parser)


def run_approve(args: argparse.Namespace) -> int:
    return _run(args, _approve)


def run_disable(args: argparse.Namespace) -> int:
    return _run(args, lambda args: _switch(args, enabled=False))


def run_enable(args: argparse.Namespace) -> int:
    return _run(args, lambda args: _switch(args, enabled=True))


def _run(args: argparse.Namespace, action: Callable[[argparse.Namespace], str]) -> int:
    try:
        message = action(args)
    except (ValueError, worktree.WorktreeError) as error:
        return cmdargs.fail(error)
    print(message, file=sys.stderr)
    return 0


def _approve(args: argparse.Namespace) -> str:
    tenant, name = _parse_device(args.device)
    template: str | None = args.template
    if template is not None:
        cmdargs.require_dns_label("--template", template)
    labels = cmdargs.parse_labels(args.label)
    root = _tenant_repo(args.repo, tenant)
    if template is not None:
        _require_no_overlay(root, tenant, name)
        worktree.require_template(root, tenant, template)
    relpath = layout.device_file(tenant, name)
    if worktree.kind_of(root, relpath, verb="write") == "missing":
        text = _new_device(name, labels, template, args.description)
        worktree.write_text(root, relpath, text, new=True)
        return f"approved {relpath} (new file); {_AFTER}"
    spec: dict[str, yamledit.Scalar] = {"approved": True}
    if template is not None:
        spec["template"] = template
    if args.description is not None:
        spec["description"] = args.description
    return _update(root, relpath, spec, labels, done="approved")


def _switch(args: argparse.Namespace, *, enabled: bool) -> str:
    tenant, name = _parse_device(args.device)
    root = _tenant_repo(args.repo, tenant)
    relpath = layout.device_file(tenant, name)
    if worktree.kind_of(root, relpath, verb="write") == "missing":
        raise ValueError(
            f"device {args.device!r} does not exist: {relpath} is missing (approve it first "
            f"with `rciots device approve {tenant}/{name}`)"
        )
    done = "enabled" if enabled else "disabled"
    return _update(root, relpath, {"enabled": enabled}, {}, done=done)


def _parse_device(text: str) -> tuple[str, str]:
    tenant, slash, name = text.partition("/")
    if not slash or "/" in name:
        raise ValueError(f"bad device {text!r}: write it as TENANT/NAME, e.g. acme/gw-01")
    for part, value in (("tenant", tenant), ("device name", name)):
        if not names.is_dns_label(value):
            raise ValueError(f"bad {part} {value!r} in {text!r}: {names.DNS_LABEL_HINT}")
    return tenant, name


def _tenant_repo(root: Path, tenant: str) -> Path:
    worktree.require_repo(root)
    worktree.require_tenant(root, tenant)
    return root


def _require_no_overlay(root: Path, tenant: str, name: str) -> None:
    overlay = worktree.has_overlay(root, tenant, name)
    if overlay is not None:
        raise ValueError(
            f"device {tenant}/{name} has its own overlay {overlay}: leave out --template and "
            "choose its bases in that file"
        )


def _new_device(
    name: str, labels: dict[str, str], template: str | None, description: str | None
) -> str:
    metadata: dict[str, object] = {"name": name}
    if labels:
        metadata["labels"] = labels
    spec: dict[str, object] = {"approved": True, "enabled": True}
    if template is not None:
        spec["template"] = template
    if description is not None:
        spec["description"] = description
    document = {
        "apiVersion": layout.API_VERSION,
        "kind": "Device",
        "metadata": metadata,
        "spec": spec,
    }
    return yamledit.render(document)


def _update(
    root: Path,
    relpath: str,
    spec: dict[str, yamledit.Scalar],
    labels: dict[str, str],
    *,
    done: str,
) -> str:
    """Edit the existing file in place; write it only if something changed."""
    old = worktree.read_text(root, relpath)
    new = _edit(relpath, old, ("spec",), spec)
    if labels:
        new = _edit(relpath, new, ("metadata", "labels"), dict(labels))
    if new == old:
        return f"{relpath} is already {done}; nothing to commit"
    worktree.write_text(root, relpath, new, new=False)
    return f"{done} {relpath}; {_AFTER}"


def _edit(
    relpath: str, text: str, path: tuple[str, ...], values: dict[str, yamledit.Scalar]
) -> str:
    try:
        return yamledit.set_fields(text, path, values)
    except ValueError as error:
        raise ValueError(f"{relpath}: {error} (fix the file, then run this again)") from None
