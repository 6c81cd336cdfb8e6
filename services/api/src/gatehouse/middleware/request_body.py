from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problem import problem_body, send_problem
from .request_head import RequestHead

# 1 MiB, nginx's client_max_body_size default. Gatehouse takes JSON documents of a few
# hundred bytes; envoy has no default (its buffer filter makes the operator choose),
# and its per-connection buffer limit is also 1 MiB. A route that takes more says so.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# The whole body, from the app's first receive(): 1 MiB in 30 s is 35 kB/s, below a
# mobile uplink. nginx's client_body_timeout (60 s) is per read, so a body trickled a
# byte a minute never ends there; a deadline for the whole body does.
DEFAULT_BODY_TIMEOUT = 30.0

# Reasons given to ``on_refused``, for a metric's label.
TOO_LARGE = "too_large"
TIMEOUT = "timeout"
BAD_LENGTH = "bad_length"

# A request's own limit in bytes, from its scope (before routing); None: the default.
BodyLimitLookup = Callable[[Scope], int | None]
RefusalObserver = Callable[[str], None]


# Every refusal closes the connection: the rest of the body is not read.
CLOSE = ((b"connection", b"close"),)
BAD_LENGTH_BODY = problem_body(400, "Bad Request", "invalid Content-Length or Transfer-Encoding")
TIMEOUT_BODY = problem_body(408, "Request Timeout", "the request body did not arrive in time")


class _BodyRefused(Exception):
    """Raised out of the app's receive(): the body is over its limit or late."""


class RouteBodyLimits:
    """Body limits per route template, matched before routing as the router would.

    The same approach as the rate limiter's ``RouteTable``: a static path is one dict
    lookup, a templated one is tried against the route's own regex in declaration
    order. Paths no listed route matches get None (the middleware's default).
    """

    def __init__(self, routes: Iterable[BaseRoute], limits: Mapping[str, int]) -> None:
        by_template = {route.path: route for route in routes if isinstance(route, Route)}
        unknown = sorted(set(limits) - set(by_template))
        if unknown:
            raise ValueError(
                f"body limits: no such route {', '.join(unknown)} "
                f"(routes: {', '.join(sorted(by_template))})"
            )
        for template, limit in limits.items():
            if limit < 0:
                raise ValueError(f"body limits: {template}: {limit} is not a size in bytes")
        self.static: dict[str, int] = {}
        self.templated: list[tuple[re.Pattern[str], int]] = []
        for template, route in by_template.items():
            if template not in limits:
                continue
            if route.param_convertors:
                self.templated.append((route.path_regex, limits[template]))
            else:
                self.static[template] = limits[template]

    def __call__(self, scope: Scope) -> int | None:
        path: str = scope["path"]
        limit = self.static.get(path)
        if limit is not None:
            return limit
        for pattern, templated_limit in self.templated:
            if pattern.match(path):
                return templated_limit
        return None


class _LimitedBody:
    """One request's body: counted, and due before a deadline.

    The refusal is decided in receive(), but answered by the middleware once the app
    has given up: whatever the app sends meanwhile (its 400 for an unreadable body,
    Starlette's 500 for the exception) is dropped, so the client gets one response.
    """

    __slots__ = (
        "deadline",
        "done",
        "limit",
        "receive_",
        "received",
        "refused",
        "send_",
        "started",
        "timeout",
    )

    def __init__(self, receive: Receive, send: Send, limit: int, timeout: float) -> None:
        self.receive_ = receive
        self.send_ = send
        self.limit = limit
        self.timeout = timeout
        self.received = 0
        self.deadline = -1.0
        self.done = False  # the last body message arrived: receive() is plain again
        self.refused: str | None = None
        self.started = False  # a response went out to the client

    async def receive(self) -> Message:
        if self.refused is not None:
            raise _BodyRefused(self.refused)
        if self.done:  # what is left is http.disconnect, which may take as long as it likes
            return await self.receive_()
        if self.deadline < 0:
            self.deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self.receive_()
        except TimeoutError:
            self.refused = TIMEOUT
            raise _BodyRefused(TIMEOUT) from None
        if message["type"] != "http.request":
            return message
        self.received += len(message.get("body", b""))
        if self.received > self.limit:
            # The message that crossed the limit is not handed on, and nothing more is
            # read: the server stops reading once its small buffer is full.
            self.refused = TOO_LARGE
            raise _BodyRefused(TOO_LARGE)
        if not message.get("more_body", False):
            self.done = True
        return message

    async def send(self, message: Message) -> None:
        if self.refused is not None and not self.started:
            return  # the refusal is the response
        if message["type"] == "http.response.start":
            self.started = True
        await self.send_(message)


class BodyLimits:
    """Refuses request bodies over a size limit (413) or slower than a deadline (408).

    A declared Content-Length over the limit is refused before anything is read, so
    the server never asks for the body (no ``100 Continue``). A streamed (chunked) body
    is counted as the app receives it; once over the limit, or past ``body_timeout``
    seconds after the first receive(), receive() raises and the refusal replaces
    whatever the app answers, if no response has gone out yet. If one has (an app
    that streams its answer while reading), the response is cut short and uvicorn
    closes the connection. Every refusal closes the connection: the rest of the body
    is not read. An invalid Content-Length, two different ones, or one next to a
    Transfer-Encoding is a 400 (RFC 9112 6.3: a request-smuggling vector).

    Known limit: closing while the client still sends can make the kernel reset the
    connection, and a client may then see the reset rather than the 413 (nginx reads
    on for a while, ``lingering_close``; uvicorn has no equivalent).

    ``limit_for(scope)`` gives a route's own limit (None: ``max_body_bytes``). Only
    requests with a body (``RequestHead.has_body``) come here: the rest cost nothing.
    """

    def __init__(
        self,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        limit_for: BodyLimitLookup | None = None,
        on_refused: RefusalObserver | None = None,
    ) -> None:
        if max_body_bytes < 0:
            raise ValueError(f"max_body_bytes: {max_body_bytes} is not a size in bytes")
        if not body_timeout > 0:
            raise ValueError(f"body_timeout: {body_timeout} is not a positive number of seconds")
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.limit_for = limit_for
        self.on_refused = on_refused

    def limit(self, scope: Scope) -> int:
        """The body limit of this request's route."""
        if self.limit_for is not None:
            route_limit = self.limit_for(scope)
            if route_limit is not None:
                return route_limit
        return self.max_body_bytes

    def refusal(self, head: RequestHead, limit: int) -> tuple[int, bytes] | None:
        """The answer to a body refused from its head alone (invalid framing, or a
        declared length over ``limit``), counted; None when it may be read."""
        if not head.body_framing_valid:
            self._count(BAD_LENGTH)
            return 400, BAD_LENGTH_BODY
        if head.content_length > limit:
            self._count(TOO_LARGE)
            return 413, _too_large_body(limit)
        return None

    async def serve(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, limit: int
    ) -> None:
        """Run ``app`` with a receive() that enforces ``limit`` and the deadline."""
        body = _LimitedBody(receive, send, limit, self.body_timeout)
        try:
            await app(scope, body.receive, body.send)
        except Exception:
            # The app let the refusal through (or failed on its account): ours to answer.
            if body.refused is None:
                raise
        if body.refused is None:
            return
        self._count(body.refused)
        if body.started:
            # Too late for a status: returning with the response unfinished makes
            # uvicorn close the connection, which is all the client can still be told.
            return
        if body.refused == TOO_LARGE:
            await send_problem(send, 413, _too_large_body(limit), CLOSE)
        else:
            await send_problem(send, 408, TIMEOUT_BODY, CLOSE)

    def _count(self, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)


class RequestBodyMiddleware:
    """``BodyLimits`` as an ASGI layer of its own, for an app served without the edge
    (Gatehouse's edge calls ``BodyLimits`` itself)."""

    def __init__(self, app: ASGIApp, **limits: Any) -> None:
        self.app = app
        self.limits = BodyLimits(**limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            head = RequestHead(scope["headers"])
            if head.has_body:
                limit = self.limits.limit(scope)
                refused = self.limits.refusal(head, limit)
                if refused is not None:
                    await send_problem(send, *refused, CLOSE)
                    return
                await self.limits.serve(self.app, scope, receive, send, limit)
                return
        await self.app(scope, receive, send)


def _too_large_body(limit: int) -> bytes:
    return problem_body(413, "Content Too Large", f"the request body is limited to {limit} bytes")
