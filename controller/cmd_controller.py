"""``rciots controller``: run the controller on a fleet repo until stopped.

The entry point of the long-running process: reads its options (secrets only from files or
the environment, never from the command line, where any user could see them with ``ps``),
sets up logging, and runs ``service.Controller`` until SIGINT or SIGTERM; on the way out it
writes what is pending to the status branch.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

# light enough for the option defaults (pygit2, no web server); ``service`` is imported when
# the command runs
from rciots.controller import (
    cmdargs,
    gitsource,
    ratelimit,
    redaction,
    sourceloop,
    statusbranch,
    statuswriter,
)

if TYPE_CHECKING:
    from rciots.controller import connector, service

__all__ = ["register", "run"]

log = logging.getLogger(__name__)

_PASSWORD_ENV = "RCIOTS_GIT_PASSWORD"  # noqa: S105 (the name of a variable)
_WEBHOOK_ENV = "RCIOTS_WEBHOOK_SECRET"
_ADMIN_ENV = "RCIOTS_ADMIN_TOKEN"


def register(commands: Any) -> None:
    register_with(commands, os.environ)


def register_with(commands: Any, environ: Mapping[str, str]) -> None:
    parser = commands.add_parser(
        "controller",
        help="run the controller: follow a fleet repo, render every device, write status",
        description=(
            "Follow the fleet repo at SOURCE (a URL: file://, git://, http(s)://, ssh://; or a "
            "local path): fetch its branch on a jittered poll interval and whenever a push "
            "webhook arrives, render every device the new commit affects, and commit device "
            "status to a separate branch of the same repo (pushed when SOURCE is remote). "
            "Runs until interrupted (Ctrl-C or SIGTERM), then writes pending status."
        ),
        epilog=(
            f"Secrets: the Git password or access token comes from --password-file or "
            f"${_PASSWORD_ENV}; the webhook secret from --webhook-secret-file or "
            f"${_WEBHOOK_ENV}. See docs/controller.md and docs/webhooks.md."
        ),
    )
    parser.add_argument("source", metavar="SOURCE", help="the fleet repo: a URL or a path")
    parser.add_argument(
        "--branch",
        default=gitsource.DEFAULT_BRANCH,
        help=f"the branch to follow (default {gitsource.DEFAULT_BRANCH})",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".rciots-state"),
        metavar="DIR",
        help="the controller's own files, such as its Git mirror (default ./.rciots-state)",
    )
    parser.add_argument(
        "--worktree",
        action="store_true",
        help="development: SOURCE is a local working tree; follow its files as saved "
        "(no commit needed) and keep the status branch in its repository",
    )
    parser.add_argument(
        "--poll-interval",
        type=_positive,
        default=sourceloop.DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between fetches, jittered by {sourceloop.DEFAULT_JITTER:.0%}% "
        f"(default {sourceloop.DEFAULT_INTERVAL:g})",
    )
    parser.add_argument("--username", help="user name for HTTPS (default: 'git' with a token)")
    parser.add_argument("--password-file", type=Path, metavar="FILE", help="HTTPS password/token")
    parser.add_argument("--ssh-key", type=Path, metavar="FILE", help="SSH private key")
    parser.add_argument("--ca-bundle", type=Path, metavar="FILE", help="extra CAs for HTTPS")
    cmdargs.add_policy_argument(parser)
    parser.add_argument(
        "--status-branch",
        default=statusbranch.DEFAULT_BRANCH,
        help=f"the branch status is committed to (default {statusbranch.DEFAULT_BRANCH})",
    )
    parser.add_argument(
        "--status-window",
        type=_positive,
        default=statuswriter.DEFAULT_WINDOW,
        metavar="SECONDS",
        help="status changes are batched into one commit per window "
        f"(default {statuswriter.DEFAULT_WINDOW:g})",
    )
    parser.add_argument(
        "--webhook-secret-file",
        type=Path,
        metavar="FILE",
        help="enables the push webhook at /hooks/git with this shared secret",
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="where the HTTP endpoints listen: the status page and its API, /healthz, /readyz, "
        "/metrics, and the webhook; 'off' for none (default 127.0.0.1:8080)",
    )
    page = parser.add_argument_group("status page", "the read-only web page (docs/status-page.md)")
    page.add_argument(
        "--admin-token-file",
        type=Path,
        metavar="FILE",
        help=f"the admin credential (sees every tenant); or ${_ADMIN_ENV}; default: made on "
        "first start in STATE-DIR/admin-token, readable by its owner only",
    )
    page.add_argument(
        "--repo-web-url",
        metavar="URL",
        help="a commit's web page, {revision} replaced by the commit id, to link revisions "
        "to (such as https://git.example.com/edge/fleet/commit/{revision})",
    )
    enroll = parser.add_argument_group(
        "enrollment", "the private CA and the HTTPS endpoint devices enroll at (docs/enrollment.md)"
    )
    enroll.add_argument(
        "--enroll-listen",
        default="0.0.0.0:8443",  # devices must reach it; "off" turns it off
        metavar="HOST:PORT",
        help="where POST /v1/enroll listens, over HTTPS; 'off' for no enrollment "
        "(default 0.0.0.0:8443)",
    )
    enroll.add_argument(
        "--server-name",
        action="append",
        metavar="NAME",
        help="a DNS name or IP address devices reach the controller at, for its server "
        "certificate; repeat for several (default: localhost, 127.0.0.1 and this host's name)",
    )
    enroll.add_argument(
        "--connector-url",
        metavar="URL",
        help="the connector URL enrolled devices are told "
        "(default wss://FIRST-SERVER-NAME:PORT/v1/connect, PORT that of --connect-listen)",
    )
    enroll.add_argument(
        "--ca-dir",
        type=Path,
        metavar="DIR",
        help="the CA's files (root.pem, device-ca.pem/.key, server.pem/.key, root.key); "
        "created there on first start when empty (default STATE-DIR/ca)",
    )
    enroll.add_argument(
        "--device-cert-days",
        type=_positive_int,
        default=90,
        metavar="DAYS",
        help="lifetime of device certificates (default 90)",
    )
    enroll.add_argument(
        "--pending-days",
        type=_positive,
        default=7,
        metavar="DAYS",
        help="pending enrollments expire after this long without approval (default 7)",
    )
    enroll.add_argument(
        "--max-pending-per-token",
        type=_positive_int,
        default=100,
        metavar="N",
        help="at most this many enrollments wait for approval per token (default 100)",
    )
    enroll.add_argument(
        "--enroll-rate",
        type=_positive,
        default=ratelimit.ClientLimits.rate,
        metavar="PER-SECOND",
        help="enrollment requests per second per client address, on average "
        f"(default {ratelimit.ClientLimits.rate:g}; bursts of --enroll-burst)",
    )
    enroll.add_argument(
        "--enroll-burst",
        type=_positive,
        default=ratelimit.ClientLimits.burst,
        metavar="N",
        help=f"requests a client may send at once (default {ratelimit.ClientLimits.burst:g})",
    )
    agents = parser.add_argument_group(
        "agents", "the connector, where enrolled agents connect (docs/protocol.md)"
    )
    agents.add_argument(
        "--connect-listen",
        default="0.0.0.0:8444",  # devices must reach it; "off" turns it off
        metavar="HOST:PORT",
        help="where agents connect: WebSocket over mutual TLS at /v1/connect; 'off' for none "
        "(default 0.0.0.0:8444)",
    )
    agents.add_argument(
        "--agent-status-interval",
        type=_positive_int,
        default=30,
        metavar="SECONDS",
        help="how often connected agents send their status (default 30)",
    )
    parser.set_defaults(func=run)
    cmdargs.options_from_environment(parser, environ)


def reference() -> str:
    """The configuration reference of ``rciots controller`` (docs/configuration.md), with
    the defaults the code has (no environment applied)."""
    commands = argparse.ArgumentParser().add_subparsers()
    register_with(commands, environ={})
    return cmdargs.reference_markdown(commands.choices["controller"])


def _repo_web_url(text: str | None) -> str | None:
    if text is None:
        return None
    if not text.startswith(("https://", "http://")) or "{revision}" not in text:
        raise ValueError(
            "--repo-web-url takes an http(s) URL holding {revision}, such as "
            f"https://git.example.com/edge/fleet/commit/{{revision}}, not {text!r}"
        )
    return text


def _admin_token(path: Path | None) -> str | None:
    from rciots.controller import auth

    if path is not None:
        return auth.read_admin_token(path)
    return os.environ.get(_ADMIN_ENV, "").strip() or None


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return int(text)


def _server_names(given: list[str] | None) -> tuple[str, ...]:
    if given:
        return tuple(dict.fromkeys(given))
    return tuple(dict.fromkeys(["localhost", "127.0.0.1", socket.gethostname()]))


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _secret(path: Path | None, variable: str, what: str) -> str | None:
    if path is not None:
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the {what} file {path}: {exc.strerror}") from None
        if not text:
            raise ValueError(f"the {what} file {path} is empty")
        return text
    return os.environ.get(variable) or None


def _listen(
    text: str, option: str = "--listen", example: str = "127.0.0.1:8080"
) -> tuple[str, int] | None:
    """HOST:PORT of a listen option; None for 'off'."""
    if text == "off":
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{option} takes HOST:PORT, such as {example}, not {text!r}")
    return host.strip("[]"), int(port)


def _agents(args: argparse.Namespace) -> connector.ConnectorSettings:
    from rciots.controller import connector

    return connector.ConnectorSettings(
        listen=_listen(args.connect_listen, "--connect-listen", "0.0.0.0:8444"),
        status_interval=args.agent_status_interval,
    )


def _enrollment(args: argparse.Namespace) -> service.EnrollmentSettings:
    from rciots.controller import service

    return service.EnrollmentSettings(
        listen=_listen(args.enroll_listen, "--enroll-listen", "0.0.0.0:8443"),
        server_names=_server_names(args.server_name),
        connector_url=args.connector_url,
        ca_dir=args.ca_dir,
        device_lifetime=timedelta(days=args.device_cert_days),
        pending_ttl=timedelta(days=args.pending_days),
        max_pending_per_token=args.max_pending_per_token,
        limits=ratelimit.ClientLimits(rate=args.enroll_rate, burst=args.enroll_burst),
    )


def run(args: argparse.Namespace) -> int:
    from rciots.controller import castore, registry, service, statuspage

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        password = _secret(args.password_file, _PASSWORD_ENV, "password")
        webhook_secret = _secret(args.webhook_secret_file, _WEBHOOK_ENV, "webhook secret")
        settings = service.Settings(
            source=args.source,
            state_dir=args.state_dir,
            branch=args.branch,
            worktree=args.worktree,
            poll_interval=args.poll_interval,
            credentials=gitsource.Credentials(
                username=args.username, password=password, ssh_private_key=args.ssh_key
            ),
            ca_bundle=args.ca_bundle,
            policy=cmdargs.policy_check(args.policy),
            status_branch=args.status_branch,
            status_window=args.status_window,
            webhook_secret=webhook_secret.encode() if webhook_secret else None,
            listen=_listen(args.listen),
            enrollment=_enrollment(args),
            agents=_agents(args),
            page=statuspage.PageSettings(
                admin_token=_admin_token(args.admin_token_file),
                repo_web_url=_repo_web_url(args.repo_web_url),
            ),
        )
        if args.worktree and not Path(args.source).is_dir():
            raise ValueError(f"--worktree needs a local directory, and {args.source} is none")
    except ValueError as exc:
        return cmdargs.fail(exc)
    try:
        asyncio.run(_serve(settings))
    except (
        OSError,
        gitsource.SourceError,
        statusbranch.StatusBranchError,
        castore.CaStoreError,
        registry.RegistryError,
    ) as exc:
        print(f"rciots: error: {redaction.redact(str(exc))}", file=sys.stderr)
        return 1
    return 0


async def _serve(settings: service.Settings) -> None:
    from rciots.controller import service

    controller = service.Controller(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await controller.start()
    if controller.enrollment_port is not None and settings.enrollment.listen is not None:
        log.info(
            "enrollment at https://%s:%d/v1/enroll; devices trust %s",
            settings.enrollment.listen[0],
            controller.enrollment_port,
            controller.ca_dir / "root.pem",
        )
    if controller.http_port is not None and settings.listen is not None:
        log.info(
            "status page at http://%s:%d/ (health /healthz, /readyz; metrics /metrics)",
            settings.listen[0],
            controller.http_port,
        )
    if controller.connector is not None and settings.agents.listen is not None:
        log.info(
            "agents connect at wss://%s:%d/v1/connect",
            settings.agents.listen[0],
            controller.connector.port,
        )
    log.info("controller running on %s; stop with Ctrl-C", redaction.redact(settings.source))
    try:
        await stopping.wait()
    finally:
        log.info("stopping: writing pending status")
        try:
            await controller.stop()
        except Exception as exc:  # the next start writes every device's status again
            log.error("pending status not written: %s", redaction.redact(str(exc)))
