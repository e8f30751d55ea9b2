"""``rciots token create``: add a provisioning token to a fleet repo working tree.

The first step of enrolling devices: it writes ``tenants/<tenant>/tokens/<name>.yaml`` holding
only the hash of a new secret and prints the secret, once, for the person who will hand it to
devices. The user commits the file and opens a pull request; once merged, the controller's
enrollment API accepts the token. The secret goes to stdout alone so that scripts can capture
it; everything meant for people goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from rciots.controller import cmdargs, layout, tokens, worktree

__all__ = ["register", "run_create"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser(
        "token",
        help="manage provisioning tokens",
        description=(
            "Manage the provisioning tokens that devices present to enroll. These commands "
            "write files in the fleet repo working tree; you commit them and open the pull "
            "request."
        ),
    )
    actions = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="create a token: write its hash to the repo, print the secret once",
        description=(
            "Create a provisioning token. Writes tenants/TENANT/tokens/NAME.yaml with the "
            "sha256 hash of a new random secret, and prints the secret alone on stdout. The "
            "secret is shown only this once and is stored nowhere: keep it now. Then commit the "
            "file and open a pull request; the token works once the change is merged."
        ),
    )
    _add_create_arguments(create)
    create.set_defaults(func=run_create)


def _add_create_arguments(parser: argparse.ArgumentParser) -> None:
    cmdargs.add_repo_argument(parser)
    parser.add_argument("--tenant", required=True, help="tenant that owns the token")
    parser.add_argument(
        "--name", required=True, help="token name, also its file name (a DNS-1123 label)"
    )
    parser.add_argument(
        "--approval",
        choices=tokens.APPROVALS,
        default="manual",
        help="auto: devices get their identity at once; manual (default): each device waits "
        "until a pull request approves it (rciots device approve)",
    )
    parser.add_argument(
        "--expires",
        metavar="WHEN",
        help="stop accepting the token at this date (2027-12-31, meaning 00:00 UTC) or RFC 3339 "
        "time with zone (2027-12-31T18:00:00Z); default: never",
    )
    parser.add_argument(
        "--max-devices",
        type=_positive_count,
        metavar="N",
        help="enroll at most N devices with this token; default: no limit",
    )
    parser.add_argument(
        "--template",
        metavar="NAME",
        help="template given to devices this token enrolls (tenants/TENANT/templates/NAME/)",
    )
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label given to devices this token enrolls; repeat for more labels",
    )


def run_create(args: argparse.Namespace) -> int:
    try:
        token, relpath = _create(args, now=datetime.now(UTC))
    except (ValueError, worktree.WorktreeError) as error:
        return cmdargs.fail(error)
    print(token)
    print(
        f"wrote {relpath} (it holds only a hash of the token); commit it and open a pull "
        "request.\nThe token above is shown only this once and is stored nowhere: store it "
        "now, e.g. in your secret manager.",
        file=sys.stderr,
    )
    return 0


def _create(args: argparse.Namespace, *, now: datetime) -> tuple[str, str]:
    """Check everything, then write the file; return the token and the path written."""
    root: Path = args.repo
    cmdargs.require_dns_label("--tenant", args.tenant)
    cmdargs.require_dns_label("--name", args.name)
    if args.template is not None:
        cmdargs.require_dns_label("--template", args.template)
    labels = cmdargs.parse_labels(args.label)
    expires = _parse_expires(args.expires, now) if args.expires is not None else None
    worktree.require_repo(root)
    worktree.require_tenant(root, args.tenant)
    relpath = layout.token_file(args.tenant, args.name)
    if worktree.kind_of(root, relpath, verb="write") != "missing":
        raise ValueError(
            f"token {args.name!r} already exists: {relpath} (choose another --name or delete "
            "the file)"
        )
    if args.template is not None:
        worktree.require_template(root, args.tenant, args.template)
    token = tokens.generate_token()
    text = tokens.render_token_file(
        args.name,
        tokens.hash_token(token),
        approval=args.approval,
        expires=expires,
        max_devices=args.max_devices,
        template=args.template,
        labels=labels,
    )
    worktree.write_text(root, relpath, text, new=True)
    return token, relpath


def _parse_expires(text: str, now: datetime) -> datetime:
    try:
        return tokens.parse_expires(text, now)
    except ValueError as error:
        raise ValueError(f"bad --expires {text!r}: {error}") from None


def _positive_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return count
