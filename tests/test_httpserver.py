"""httpserver.Server, a real uvicorn on loopback, driven over raw sockets: a client that does
not send a whole request head in time is disconnected, whatever it sent before; a request
that arrived in time is never cut, however long its answer takes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import fastapi
from fastapi.responses import PlainTextResponse, StreamingResponse

from rciots.controller import httpserver
from tests import aio

DEADLINE = 0.5  # the test server's head deadline
WITHIN = 5.0  # how long a test waits for what should come at DEADLINE


def app() -> fastapi.FastAPI:
    made = fastapi.FastAPI()

    @made.get("/ok", response_class=PlainTextResponse)
    async def ok() -> str:
        return "ok\n"

    @made.get("/slow", response_class=PlainTextResponse)
    async def slow() -> str:
        await asyncio.sleep(3 * DEADLINE)
        return "slow\n"

    @made.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[str]:
            for index in range(4):
                yield f"part {index}\n"
                await asyncio.sleep(DEADLINE)

        return StreamingResponse(parts(), media_type="text/plain")

    return made


def serve(test: Callable[[int], Awaitable[None]]) -> None:
    async def main() -> None:
        server = await httpserver.Server.start(app(), "127.0.0.1", 0, head_timeout=DEADLINE)
        try:
            await test(server.port)
        finally:
            await server.stop()

    aio.run(main(), timeout=60)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (TimeoutError if it does not
    within WITHIN)."""
    return await asyncio.wait_for(reader.read(), WITHIN)


GET_OK = b"GET /ok HTTP/1.1\r\nHost: test\r\n\r\n"


def test_a_client_that_sends_nothing_is_disconnected() -> None:
    async def test(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert await until_closed(reader) == b""
        finally:
            writer.close()

    serve(test)


def test_a_request_head_that_never_ends_is_disconnected() -> None:
    async def test(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            # a slow client keeps sending a little, so that no idle timer would ever fire
            writer.write(b"POST /ok HTTP/1.1\r\nHost: test\r\n")
            for index in range(3):
                await asyncio.sleep(DEADLINE / 5)
                writer.write(f"X-Slow-{index}: 1\r\n".encode())
            assert await until_closed(reader) == b""
        finally:
            writer.close()

    serve(test)


def test_after_an_answer_the_next_head_has_the_deadline_too() -> None:
    async def test(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(GET_OK)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WITHIN)
            assert head.startswith(b"HTTP/1.1 200")
            assert await asyncio.wait_for(reader.readexactly(3), WITHIN) == b"ok\n"
            # the keep-alive timer stops at the first byte of the next request; its head
            # must still come whole in time
            writer.write(b"GET /ok HTTP/1.1\r\n")
            assert await until_closed(reader) == b""
        finally:
            writer.close()

    serve(test)


def test_a_request_that_came_in_time_is_answered_however_long_it_takes() -> None:
    async def test(port: int) -> None:
        for path, expected in (
            (b"/slow", b"slow\n"),
            (b"/stream", b"part 3\n"),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n" % path)
                answer = await until_closed(reader)
                assert answer.startswith(b"HTTP/1.1 200")
                assert expected in answer
            finally:
                writer.close()

    serve(test)


def test_keep_alive_requests_in_time_are_all_answered() -> None:
    async def test(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(3):
                writer.write(GET_OK)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WITHIN)
                assert head.startswith(b"HTTP/1.1 200")
                assert await asyncio.wait_for(reader.readexactly(3), WITHIN) == b"ok\n"
                await asyncio.sleep(DEADLINE / 2)
        finally:
            writer.close()

    serve(test)
