"""RequestBodyMiddleware alone, around tiny ASGI apps, driven by hand-made receive/send.

Each exchange records what the app received and every message that went out, so a
test asserts the whole response (status, every header, body) and that nothing else
was sent: a refusal must replace the app's answer, never follow it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.routing import Route

from gatehouse.middleware.request_body import RequestBodyMiddleware, RouteBodyLimits

pytestmark = pytest.mark.anyio

Message = dict[str, Any]

TOO_LARGE_16 = (
    b'{"type":"about:blank","title":"Content Too Large","status":413,'
    b'"detail":"the request body is limited to 16 bytes"}'
)
BODY_TIMEOUT = (
    b'{"type":"about:blank","title":"Request Timeout","status":408,'
    b'"detail":"the request body did not arrive in time"}'
)
BAD_LENGTH = (
    b'{"type":"about:blank","title":"Bad Request","status":400,'
    b'"detail":"invalid Content-Length or Transfer-Encoding"}'
)


def refusal(status: int, body: bytes) -> list[Message]:
    return [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        },
        {"type": "http.response.body", "body": body},
    ]


def ok(body: bytes) -> list[Message]:
    return [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        },
        {"type": "http.response.body", "body": body},
    ]


def scope(
    method: str = "POST", path: str = "/upload", headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"host", b"api.example.com"), *(headers or [])],
    }


def length(n: int | str) -> tuple[bytes, bytes]:
    return (b"content-length", str(n).encode())


CHUNKED = (b"transfer-encoding", b"chunked")


class Exchange:
    """The server's side: body messages to hand out, then silence (or a late disconnect)."""

    def __init__(self, *bodies: bytes, disconnect_after: float | None = None) -> None:
        self.messages: list[Message] = [
            {"type": "http.request", "body": body, "more_body": i < len(bodies) - 1}
            for i, body in enumerate(bodies)
        ]
        self.disconnect_after = disconnect_after
        self.receives = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.receives += 1
        if self.messages:
            return self.messages.pop(0)
        if self.disconnect_after is not None:
            await asyncio.sleep(self.disconnect_after)
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()  # a client that stopped sending
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        self.sent.append(message)


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def echo(scope: Any, receive: Any, send: Any) -> None:
    body = await read_body(receive)
    for message in ok(body):
        await send(message)


async def fastapi_like(scope: Any, receive: Any, send: Any) -> None:
    """FastAPI turns any failure to read a body into its own 400 and answers normally."""
    try:
        body = await read_body(receive)
    except Exception:
        detail = b'{"detail":"There was an error parsing the body"}'
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-length", str(len(detail)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": detail})
        return
    for message in ok(body):
        await send(message)


async def starlette_like(scope: Any, receive: Any, send: Any) -> None:
    """Starlette's ServerErrorMiddleware answers 500 to an exception, then re-raises it."""
    try:
        await echo(scope, receive, send)
    except Exception:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"Internal Server Error"})
        raise


class Recorder:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)


async def test_a_declared_length_over_the_limit_is_refused_without_reading():
    called = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope)

    refused = Recorder()
    middleware = RequestBodyMiddleware(app, max_body_bytes=16, on_refused=refused)
    exchange = Exchange(b"x" * 200)
    await middleware(scope(headers=[length(200_000_000)]), exchange.receive, exchange.send)
    assert exchange.sent == refusal(413, TOO_LARGE_16)
    assert exchange.receives == 0
    assert called == []
    assert refused.reasons == ["too_large"]


async def test_a_declared_length_of_a_hundred_digits_is_too_large_not_an_error():
    exchange = Exchange(b"x")
    middleware = RequestBodyMiddleware(echo, max_body_bytes=16)
    await middleware(scope(headers=[length("9" * 100)]), exchange.receive, exchange.send)
    assert exchange.sent == refusal(413, TOO_LARGE_16)
    assert exchange.receives == 0


@pytest.mark.parametrize("app", [echo, fastapi_like, starlette_like], ids=lambda app: app.__name__)
async def test_a_streamed_body_over_the_limit_is_refused_and_the_app_answer_dropped(app):
    refused = Recorder()
    middleware = RequestBodyMiddleware(app, max_body_bytes=16, on_refused=refused)
    # Five more messages wait after the one that crosses the limit: none is read.
    exchange = Exchange(b"a" * 10, b"b" * 7, *[b"c" * 10] * 5)
    await middleware(scope(headers=[CHUNKED]), exchange.receive, exchange.send)
    assert exchange.sent == refusal(413, TOO_LARGE_16)
    assert exchange.receives == 2
    assert len(exchange.messages) == 5
    assert refused.reasons == ["too_large"]


async def test_an_app_that_keeps_receiving_after_the_refusal_keeps_being_refused():
    attempts = []

    async def stubborn(scope: Any, receive: Any, send: Any) -> None:
        for _ in range(3):
            try:
                await receive()
            except Exception as error:
                attempts.append(type(error).__name__)
        for message in ok(b"done"):
            await send(message)

    middleware = RequestBodyMiddleware(stubborn, max_body_bytes=4)
    exchange = Exchange(b"12345", b"6")
    await middleware(scope(headers=[CHUNKED]), exchange.receive, exchange.send)
    assert attempts == ["_BodyRefused", "_BodyRefused", "_BodyRefused"]
    assert exchange.receives == 1
    assert exchange.sent[0]["status"] == 413


@pytest.mark.parametrize(
    ("headers", "bodies"),
    [
        ([length(16)], [b"0123456789abcdef"]),
        ([length(16)], [b"01234567", b"89abcdef"]),
        ([CHUNKED], [b"0123456789", b"abcdef", b""]),
    ],
    ids=["declared", "declared-in-two", "chunked"],
)
async def test_a_body_exactly_at_the_limit_is_accepted(headers, bodies):
    middleware = RequestBodyMiddleware(echo, max_body_bytes=16)
    exchange = Exchange(*bodies)
    await middleware(scope(headers=headers), exchange.receive, exchange.send)
    assert exchange.sent == ok(b"0123456789abcdef")


async def test_one_byte_over_the_limit_is_refused():
    middleware = RequestBodyMiddleware(echo, max_body_bytes=16)
    exchange = Exchange(b"0123456789", b"abcdefg")
    await middleware(scope(headers=[CHUNKED]), exchange.receive, exchange.send)
    assert exchange.sent == refusal(413, TOO_LARGE_16)


ROUTES = [
    Route("/upload", echo, methods=["POST"]),
    Route("/items/{item_id:int}", echo, methods=["PUT"]),
    Route("/items", echo, methods=["POST"]),
]


@pytest.mark.parametrize(
    ("path", "size", "status"),
    [
        ("/upload", 64, 200),  # the route's own limit, above the default
        ("/upload", 65, 413),
        ("/items/7", 4, 200),  # a templated route, below the default
        ("/items/7", 5, 413),
        ("/items/seven", 16, 200),  # not the template (int): the default
        ("/items", 16, 200),  # a route without its own limit: the default
        ("/items", 17, 413),
        ("/elsewhere", 17, 413),
    ],
)
async def test_a_route_may_have_its_own_limit(path, size, status):
    limits = RouteBodyLimits(ROUTES, {"/upload": 64, "/items/{item_id:int}": 4})
    middleware = RequestBodyMiddleware(echo, max_body_bytes=16, limit_for=limits)
    exchange = Exchange(b"x" * size)
    await middleware(scope(path=path, headers=[length(size)]), exchange.receive, exchange.send)
    assert exchange.sent[0]["status"] == status
    if status == 200:
        assert exchange.sent == ok(b"x" * size)


async def test_a_route_limit_applies_to_a_streamed_body_too():
    limits = RouteBodyLimits(ROUTES, {"/items/{item_id:int}": 4})
    middleware = RequestBodyMiddleware(echo, max_body_bytes=16, limit_for=limits)
    exchange = Exchange(b"abc", b"de")
    await middleware(scope(path="/items/3", headers=[CHUNKED]), exchange.receive, exchange.send)
    assert exchange.sent == refusal(
        413,
        b'{"type":"about:blank","title":"Content Too Large","status":413,'
        b'"detail":"the request body is limited to 4 bytes"}',
    )


def test_a_limit_for_an_unknown_route_fails_at_start_up():
    with pytest.raises(ValueError, match=r"no such route /uploads \(routes: /items, "):
        RouteBodyLimits(ROUTES, {"/uploads": 64})


def test_a_negative_limit_fails_at_start_up():
    with pytest.raises(ValueError, match="/upload: -1 is not a size in bytes"):
        RouteBodyLimits(ROUTES, {"/upload": -1})
    with pytest.raises(ValueError, match="max_body_bytes: -1 is not a size in bytes"):
        RequestBodyMiddleware(echo, max_body_bytes=-1)
    with pytest.raises(ValueError, match="body_timeout: 0 is not a positive number"):
        RequestBodyMiddleware(echo, body_timeout=0)


async def test_a_body_that_stalls_gets_408():
    refused = Recorder()
    middleware = RequestBodyMiddleware(
        fastapi_like, max_body_bytes=16, body_timeout=0.05, on_refused=refused
    )
    exchange = Exchange(b"abc", b"de")  # more_body=True on the last one: then nothing
    exchange.messages[-1]["more_body"] = True
    started = asyncio.get_running_loop().time()
    await middleware(scope(headers=[length(10)]), exchange.receive, exchange.send)
    elapsed = asyncio.get_running_loop().time() - started
    assert exchange.sent == refusal(408, BODY_TIMEOUT)
    assert refused.reasons == ["timeout"]
    assert 0.05 <= elapsed < 1.0


async def test_the_deadline_is_for_the_whole_body_not_each_read():
    """Messages 10 ms apart never wait 100 ms each, yet the whole body takes longer.

    With a deadline per read, the 51st byte (after 0.5 s) would be refused as too large.
    """

    async def trickle() -> Message:
        await asyncio.sleep(0.01)
        return {"type": "http.request", "body": b"x", "more_body": True}

    exchange = Exchange()
    middleware = RequestBodyMiddleware(echo, max_body_bytes=50, body_timeout=0.1)
    await middleware(scope(headers=[length(50)]), trickle, exchange.send)
    assert exchange.sent == refusal(408, BODY_TIMEOUT)


async def test_waiting_for_the_disconnect_after_the_body_is_not_timed():
    """Starlette's StreamingResponse listens for http.disconnect while it streams."""

    async def listens(scope: Any, receive: Any, send: Any) -> None:
        body = await read_body(receive)
        message = await receive()  # arrives after 0.2 s, four times the body timeout
        reply = body + b" " + message["type"].encode()
        for out in ok(reply):
            await send(out)

    middleware = RequestBodyMiddleware(listens, max_body_bytes=16, body_timeout=0.05)
    exchange = Exchange(b"hello", disconnect_after=0.2)
    await middleware(scope(headers=[length(5)]), exchange.receive, exchange.send)
    assert exchange.sent == ok(b"hello http.disconnect")


@pytest.mark.parametrize(
    "headers",
    [
        [length("abc")],
        [length("-1")],
        [length("+5")],
        [length("5 ")],
        [length("0x10")],
        [length(""), length(5)],
        [length(5), length(6)],
        [length(5), CHUNKED],
        [CHUNKED, length(0)],
    ],
    ids=[
        "letters",
        "negative",
        "plus",
        "space",
        "hex",
        "empty-then-5",
        "two-different",
        "with-chunked",
        "chunked-with-zero",
    ],
)
async def test_an_invalid_content_length_is_400(headers):
    called = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope)

    refused = Recorder()
    middleware = RequestBodyMiddleware(app, on_refused=refused)
    exchange = Exchange(b"hello")
    await middleware(scope(headers=headers), exchange.receive, exchange.send)
    assert exchange.sent == refusal(400, BAD_LENGTH)
    assert called == []
    assert exchange.receives == 0
    assert refused.reasons == ["bad_length"]


async def test_the_same_content_length_twice_is_accepted():
    middleware = RequestBodyMiddleware(echo, max_body_bytes=16)
    exchange = Exchange(b"hello")
    await middleware(scope(headers=[length(5), length(5)]), exchange.receive, exchange.send)
    assert exchange.sent == ok(b"hello")


@pytest.mark.parametrize(
    ("method", "headers"),
    [("GET", []), ("GET", [length(0)]), ("DELETE", []), ("POST", [length(0)])],
)
async def test_a_request_without_a_body_reaches_the_app_untouched(method, headers):
    seen = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((receive, send))

    exchange = Exchange()
    middleware = RequestBodyMiddleware(app, max_body_bytes=0, limit_for=pytest.fail)
    await middleware(scope(method, headers=headers), exchange.receive, exchange.send)
    # The very callables the server gave: no wrapper, no limit lookup, no timer.
    assert seen == [(exchange.receive, exchange.send)]


async def test_other_scopes_pass_through():
    seen = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = RequestBodyMiddleware(app, limit_for=pytest.fail)
    await middleware({"type": "lifespan"}, Exchange().receive, Exchange().send)
    assert seen == ["lifespan"]


async def test_a_refusal_after_the_response_started_cuts_it_short():
    async def streams_first(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        body = await read_body(receive)  # raises: over the limit
        await send({"type": "http.response.body", "body": body})

    refused = Recorder()
    middleware = RequestBodyMiddleware(streams_first, max_body_bytes=4, on_refused=refused)
    exchange = Exchange(b"abc", b"def")
    await middleware(scope(headers=[CHUNKED]), exchange.receive, exchange.send)
    # No second status line; the response stays unfinished, so uvicorn closes the connection.
    assert exchange.sent == [{"type": "http.response.start", "status": 200, "headers": []}]
    assert refused.reasons == ["too_large"]


async def test_an_app_failure_of_its_own_is_not_mistaken_for_a_refusal():
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        await read_body(receive)
        raise RuntimeError("the app's own bug")

    middleware = RequestBodyMiddleware(broken, max_body_bytes=16)
    exchange = Exchange(b"hello")
    with pytest.raises(RuntimeError, match="the app's own bug"):
        await middleware(scope(headers=[length(5)]), exchange.receive, exchange.send)
    assert exchange.sent == []
