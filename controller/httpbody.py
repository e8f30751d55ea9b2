"""Reading a request body with a size cap and a deadline, for every endpoint that takes one.

Position in the flow: HTTP endpoints (webhook, enrollment, the status page's login) ->
**httpbody** -> their parsers. A declared ``Content-Length`` over the cap is refused (413)
before a byte is read; otherwise the body is read from the stream and refused as soon as it
passes the cap (chunked uploads too), so an oversized request never sits in memory whole. A
body that has not come whole within the deadline is refused (408): a client that declares a
body and then sends it a byte at a time, or not at all, no longer holds its request (and its
connection) open for ever.
"""

from __future__ import annotations

import asyncio

from fastapi import Request
from starlette.requests import ClientDisconnect

__all__ = ["BODY_TIMEOUT", "BodyRefused", "read_capped"]

# seconds for a whole body: the largest taken (a webhook's 1 MiB) needs a small fraction of it
BODY_TIMEOUT = 60.0


class BodyRefused(Exception):
    """The body was not read: ``status`` (400, 408 or 413) and ``reason`` say why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    @property
    def unread(self) -> bool:
        """Part of the body may still be coming: the answer should close the connection."""
        return self.status in (408, 413)


async def read_capped(request: Request, limit: int, timeout: float = BODY_TIMEOUT) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BodyRefused(400, "the Content-Length header is not a number")
        if int(declared) > limit:
            raise BodyRefused(413, f"the body is larger than {limit} bytes")
    received = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                received += chunk
                if len(received) > limit:
                    raise BodyRefused(413, f"the body is larger than {limit} bytes")
    except ClientDisconnect:
        raise BodyRefused(400, "the client went away before sending the whole body") from None
    except TimeoutError:
        raise BodyRefused(408, f"the body did not come whole within {timeout:g} s") from None
    return bytes(received)
