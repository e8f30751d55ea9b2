"""Reading a request body with a size cap, for every endpoint that takes one.

Position in the flow: HTTP endpoints (webhook, enrollment) -> **httpbody** -> their parsers.
A declared ``Content-Length`` over the cap is refused (413) before a byte is read; otherwise the
body is read from the stream and refused as soon as it passes the cap (chunked uploads too), so
an oversized request never sits in memory whole.
"""

from __future__ import annotations

from fastapi import Request
from starlette.requests import ClientDisconnect

__all__ = ["BodyRefused", "read_capped"]


class BodyRefused(Exception):
    """The body was not read: ``status`` (400 or 413) and ``reason`` say why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BodyRefused(400, "the Content-Length header is not a number")
        if int(declared) > limit:
            raise BodyRefused(413, f"the body is larger than {limit} bytes")
    received = bytearray()
    try:
        async for chunk in request.stream():
            received += chunk
            if len(received) > limit:
                raise BodyRefused(413, f"the body is larger than {limit} bytes")
    except ClientDisconnect:
        raise BodyRefused(400, "the client went away before sending the whole body") from None
    return bytes(received)
