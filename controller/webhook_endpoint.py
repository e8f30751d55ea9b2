"""The push webhook endpoint: an HTTP route that wakes the source when the tracked branch moves.

Where it sits: source (poll / **webhook** / watch) -> fleet model -> render -> desired ->
connector/status. A forge POSTs here on every push; a push to the tracked branch calls
``on_push``, which schedules an immediate fetch (the fetch itself, and every check of what was
fetched, belong to the source). The route is an ``APIRouter`` so that the controller mounts it
in the same FastAPI application as the status page.

Order of checks, cheapest and least trusting first: a declared ``Content-Length`` over the limit
is refused (413) before a byte of the body is read; the body is read from the stream and
refused as soon as it passes the limit (413, also for chunked uploads with no length); then
``webhooks.verify_push`` authenticates it (401) and only then parses it (400). Answers:
202 ``{"fetch": "scheduled", ...}`` for a push to the tracked branch, 200 ``{"ignored": why}``
for any other authenticated delivery, ``{"detail": why}`` with the error statuses.

Neither the secret nor the body is ever logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from rciots.controller import httpbody, webhooks

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_PATH", "webhook_router"]

log = logging.getLogger(__name__)

# GitHub caps payloads at 25 MB, but a push payload is a few KiB plus 2-3 KiB per listed commit
# (GitHub lists up to 2,048, GitLab 20); 1 MiB holds any push worth reading.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_PATH = "/hooks/git"


def webhook_router(
    secret: bytes,
    branch: str,
    on_push: Callable[[webhooks.PushEvent], None],
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    path: str = DEFAULT_PATH,
    body_timeout: float = httpbody.BODY_TIMEOUT,
) -> APIRouter:
    """A router with one route, ``POST path``, for GitHub, Gitea and GitLab push webhooks.

    ``on_push`` is called on the event loop for each authenticated push to ``branch``
    (including its deletion, which the fetch then reports); it must only schedule work, never
    block. ValueError for an empty ``secret`` or ``branch`` or a limit below one byte.
    """
    if not secret:
        raise ValueError(
            "the webhook secret is empty: set a long random secret (for example the output of "
            "`openssl rand -hex 32`) here and in the forge's webhook settings; an empty secret "
            "would let anyone trigger fetches"
        )
    if not branch:
        raise ValueError("the tracked branch is empty: name the branch the controller follows")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be at least 1, not {max_body_bytes}")
    if not path.startswith("/"):
        raise ValueError(f"the webhook path must start with '/', not {path!r}")

    async def receive(request: Request) -> JSONResponse:
        try:
            received = await httpbody.read_capped(request, max_body_bytes, body_timeout)
        except httpbody.BodyRefused as refused:
            if refused.status == 413:
                return _too_large(max_body_bytes)
            response = _refuse(refused.status, refused.reason)
            if refused.unread:
                response.headers["Connection"] = "close"  # the rest is never read
            return response
        try:
            event = webhooks.verify_push(request.headers, received, secret)
        except webhooks.WebhookRejected as rejected:
            return _refuse(rejected.status, rejected.reason)
        if event is None:
            log.debug("webhook: ignored a delivery that is no push")
            return JSONResponse({"ignored": "not a push event"})
        if event.branch is None:
            log.debug("webhook: ignored a push to %r", event.ref)
            return JSONResponse({"ignored": f"push to {event.ref}, which is no branch"})
        if event.branch != branch:
            log.debug("webhook: ignored a push to branch %r", event.branch)
            return JSONResponse(
                {"ignored": f"push to branch {event.branch}; this controller tracks {branch}"}
            )
        commit = "deleted" if event.deleted else (event.after or "unknown")[:12]
        log.info(
            "webhook: %s push to %r at %s, fetch scheduled", event.provider, event.branch, commit
        )
        try:
            on_push(event)
        except Exception:
            log.exception("webhook: could not schedule a fetch")
            return JSONResponse(
                {"detail": "the controller could not schedule a fetch; see its log"},
                status_code=500,
            )
        return JSONResponse(
            {
                "fetch": "scheduled",
                "provider": event.provider,
                "branch": event.branch,
                "after": event.after,
                "deleted": event.deleted,
            },
            status_code=202,
        )

    router = APIRouter()
    router.add_api_route(
        path,
        receive,
        methods=["POST"],
        response_class=JSONResponse,
        response_model=None,
        include_in_schema=False,
        name="git_push_webhook",
    )
    return router


def _refuse(status: int, reason: str) -> JSONResponse:
    # WARNING: a refused delivery is usually a misconfigured secret or content type, which a
    # human has to fix in the forge; the reason never carries the secret or the signature.
    log.warning("webhook: refused (%d): %s", status, reason)
    return JSONResponse({"detail": reason}, status_code=status)


def _too_large(limit: int) -> JSONResponse:
    response = _refuse(413, f"the body is larger than {limit} bytes")
    # the rest of the body is never read: the connection cannot carry another request
    response.headers["Connection"] = "close"
    return response
