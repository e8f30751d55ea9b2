"""The enrollment endpoint: ``POST /v1/enroll`` over HTTPS, where devices get their identity.

Position in the flow: agent (HTTPS) -> **enroll_endpoint** (limits, body, shape) ->
``enrollment.Enroller`` (decide, sign, record) -> registry. This module owns only HTTP: the
client's rate limit (429 with Retry-After), a failure limit per client (token guessing is slow),
the body cap (413) and deadline (408), the request's shape (422 naming the field), and the
wording of answers (``{"error": why}`` on failure). What the answers mean is ``enrollment``'s;
the enroller runs in a worker thread (it signs, and writes the registry synchronously).

Request body (JSON)::

    {"token": "rciots-pt-...", "name": "gw-01", "csr": "-----BEGIN CERTIFICATE REQUEST-----...",
     "labels": {"site": "lyon"}, "system": {"os": "rhel-9.4", "arch": "aarch64"}}

Neither the provisioning token nor the device token is ever logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from rciots.controller import enrollment, fleet, httpbody, names, ratelimit

__all__ = ["PATH", "enroll_router"]

log = logging.getLogger(__name__)

PATH = "/v1/enroll"
_MAX_TOKEN_CHARS = 256
_MAX_CSR_CHARS = 16 * 1024
_MAX_LABELS = 64
_MAX_SYSTEM_ENTRIES = 32
_MAX_SYSTEM_CHARS = 256


class _Invalid(ValueError):
    pass


def enroll_router(
    enroller: enrollment.Enroller,
    model: Callable[[], fleet.FleetModel],
    *,
    limits: ratelimit.ClientLimits | None = None,
    on_answer: Callable[[enrollment.Answer], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    monotonic: Callable[[], float] = time.monotonic,
) -> APIRouter:
    """A router with ``POST /v1/enroll``. ``model`` gives the current fleet model; ``on_answer``
    hears every answer (for metrics and for waking the reconciler after an enrollment)."""
    limits = limits or ratelimit.ClientLimits()
    requests = ratelimit.RateLimiter(limits.rate, limits.burst)
    failures = ratelimit.RateLimiter(limits.failure_rate, limits.failure_burst)

    async def enroll(request: Request) -> JSONResponse:
        address = request.client.host if request.client else "unknown"
        now = monotonic()
        # every request takes from the client's request bucket; a client whose failure bucket
        # is empty (token guessing, a broken agent in a loop) is held back until it refills
        wait = ratelimit.retry_after(requests.take(address, now)) or ratelimit.retry_after(
            failures.peek(address, now)
        )
        if wait is not None:
            log.info("enrollment from %s: rate limited for %d s", address, wait)
            return _answer(429, {"error": "too many requests; try again later"}, wait)
        try:
            body = await httpbody.read_capped(request, limits.max_body_bytes, limits.body_timeout)
            parsed = _parse(body, address)
        except httpbody.BodyRefused as refused:
            failures.take(address, now)
            response = _answer(refused.status, {"error": refused.reason})
            if refused.unread:
                response.headers["Connection"] = "close"  # the rest is never read
            return response
        except _Invalid as invalid:
            failures.take(address, now)
            return _answer(422, {"error": str(invalid)})
        # in a worker thread: signing and the registry's synchronous write (an fsync) would
        # otherwise hold up every agent session and page request on the event loop
        answer = await asyncio.to_thread(enroller.enroll, parsed, model(), clock())
        if answer.status >= 400:
            failures.take(address, now)
        _log(answer, parsed, address)
        if on_answer is not None:
            on_answer(answer)
        return _answer(answer.status, answer.body, answer.retry_after)

    router = APIRouter()
    router.add_api_route(
        PATH,
        enroll,
        methods=["POST"],
        response_class=JSONResponse,
        response_model=None,
        summary="Enroll a device with a provisioning token and a CSR",
        name="enroll",
    )
    return router


def _answer(
    status: int, body: Mapping[str, object], retry_after: int | None = None
) -> JSONResponse:
    response = JSONResponse(dict(body), status_code=status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _log(answer: enrollment.Answer, request: enrollment.Request, address: str) -> None:
    if answer.outcome in ("enrolled", "re-enrolled"):
        log.info(
            "%s %s/%s as %s from %s",
            answer.outcome,
            answer.body["tenant"],
            request.name,
            answer.body["deviceId"],
            address,
        )
    elif answer.outcome == "pending":
        log.info("enrollment of %r from %s waits for approval", request.name, address)
    else:
        log.info(
            "enrollment of %r from %s refused (%d): %s",
            request.name,
            address,
            answer.status,
            answer.body.get("error"),
        )


def _parse(body: bytes, address: str) -> enrollment.Request:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python goes
        raise _Invalid("the body is not JSON") from None
    try:
        # a "\ud800" escape decodes to a lone surrogate: no hash, answer or log can encode it
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise _Invalid("the body holds text that is not Unicode (a lone surrogate)") from None
    if not isinstance(data, dict):
        raise _Invalid("the body must be a JSON object")
    unknown = sorted(set(data) - {"token", "name", "csr", "labels", "system"})
    if unknown:
        raise _Invalid(f"unknown field(s): {', '.join(unknown)}")
    token = _text(data, "token", _MAX_TOKEN_CHARS)
    name = _text(data, "name", 63)
    csr = _text(data, "csr", _MAX_CSR_CHARS)
    labels = _map(data, "labels", _MAX_LABELS, 63)
    for key, value in labels.items():
        if not names.is_label_key(key) or not names.is_label_value(value):
            raise _Invalid(f"labels: {key}={value} is not a valid Kubernetes label")
    system = _map(data, "system", _MAX_SYSTEM_ENTRIES, _MAX_SYSTEM_CHARS)
    return enrollment.Request(token, name, csr.encode(), address, labels, system)


def _text(data: Mapping[str, object], key: str, limit: int) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise _Invalid(f"{key}: a non-empty string is required")
    if len(value) > limit:
        raise _Invalid(f"{key}: longer than {limit} characters")
    return value


def _map(data: Mapping[str, object], key: str, entries: int, chars: int) -> dict[str, str]:
    value = data.get(key, {})
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _Invalid(f"{key}: an object of strings is required")
    if len(value) > entries:
        raise _Invalid(f"{key}: more than {entries} entries")
    for k, v in value.items():
        if len(k) > 253 or len(v) > chars:
            raise _Invalid(f"{key}: {k[:40]!r} is too long")
    return dict(value)
