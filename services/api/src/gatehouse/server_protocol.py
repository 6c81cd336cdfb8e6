"""uvicorn's httptools protocol with a size limit and a deadline on each request head.

``uvicorn.run(app, http=limited_http_protocol(...))``: uvicorn's ``http`` setting takes
a protocol class (``uvicorn.Config.load``), and instantiates it per connection with
``(config, server_state, app_state, _loop)``, so the limits are fixed on a subclass
made by ``limited_http_protocol``. ``LimitedHttpToolsProtocol`` itself has the defaults
and no extra headers (``--http gatehouse.server_protocol:LimitedHttpToolsProtocol``).
A made class exists in its process only: with ``reload`` or ``workers`` uvicorn pickles
its Config into a new process, which needs the module-level class (or "httptools").

Why: uvicorn bounds neither. httptools buffers a header by concatenating its pieces,
so a 200 MB header took 72 s and 469 MB, and a head sent a byte at a time kept its
connection (and the keep-alive timer, which each byte cancels) open for ever.

Responses the server writes itself carry ``extra_headers`` (the security headers):
uvicorn's 400 for an unparsable request, the 431 and 408 here, and uvicorn's 500 when
the ASGI app fails before responding. What this cannot decorate:

- Websocket handshakes. Once a request is an upgrade, uvicorn hands the connection to
  its websocket protocol (``transport.set_protocol``), which writes its own refusals
  with the websockets library's ``ServerProtocol.reject``: 403 when the app closes
  before accepting, 400 or 426 for an invalid handshake, 500 when the app fails before
  accepting. Those carry Date, Connection, Content-Length and Content-Type only, not
  even uvicorn's ``default_headers``. With ``ws="none"`` none of them exist: an upgrade
  request reaches the app as plain HTTP and gets the app's answer, with the
  middleware's headers. Gatehouse has no websocket route, so it serves with
  ``ws="none"``. An app that serves websockets can refuse with a denial response
  (``websocket.http.response.start``, which uvicorn supports) and set headers there.
- uvicorn's 503 for ``limit_concurrency``: its ``service_unavailable`` app is chosen
  inside ``on_headers_complete`` and runs with uvicorn's ``default_headers`` only.
  Gatehouse does not set ``limit_concurrency``.
- HSTS: the server sees the socket, not the trusted proxy's X-Forwarded-Proto, so only
  headers that hold for any scheme belong in ``extra_headers``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from .response_head import response_head

if TYPE_CHECKING:  # uvicorn's private typing module: for the checker only
    from uvicorn._types import ASGISendEvent

# 32 KiB for the request line and all header fields together: nginx's total
# (large_client_header_buffers 4 x 8k) and Cloudflare's; envoy allows 60 KiB, Node.js
# 16 KiB, Go 1 MB. Bearer tokens and cookies fit many times over, and a long query
# string of a search still fits.
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
# From a connection's first byte (or its opening) to the end of the request head.
# A client or proxy sends a head in one write; 10 s is what slowloris hardening guides
# give nginx's client_header_timeout (default 60 s). Node.js allows 60 s; envoy
# and Go have no default, which is the gap this closes.
DEFAULT_HEADER_TIMEOUT = 10.0

# Reasons given to ``on_refused``, for a metric's label.
HEADER_TOO_LARGE = "header_too_large"  # 431
HEADER_TIMEOUT = "header_timeout"  # 408: part of a head came, not all of it in time
IDLE = "idle"  # closed without a word: nothing of a request came in time
BAD_REQUEST = "bad_request"  # uvicorn's 400: the parser refused the request

PROBLEM_JSON = b"application/problem+json"
TEXT_PLAIN = b"text/plain; charset=utf-8"
HEADER_TOO_LARGE_BODY = (
    b'{"type":"about:blank","title":"Request Header Fields Too Large","status":431,'
    b'"detail":"the request line and header fields are too large"}'
)
HEADER_TIMEOUT_BODY = (
    b'{"type":"about:blank","title":"Request Timeout","status":408,'
    b'"detail":"the request head did not arrive in time"}'
)
INTERNAL_ERROR_BODY = b"Internal Server Error"  # uvicorn's own 500 body, kept as it is

# head_budget's two states besides "bytes the current head may still take".
_IN_BODY = -1
_STOPPED = -2  # refused, or handed to the websocket protocol: nothing more is parsed

_FIELD_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9a-z-]+")
_FIELD_VALUE = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")

RefusalObserver = Callable[[str], None]


@dataclass(frozen=True)
class HeadLimits:
    """What a ``LimitedHttpToolsProtocol`` class enforces, checked when it is made."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()
    on_refused: RefusalObserver | None = None

    def __post_init__(self) -> None:
        # The shortest request line and Host field take about 30 bytes.
        if self.max_header_bytes < 256:
            raise ValueError(f"max_header_bytes: {self.max_header_bytes} is below 256")
        if not self.header_timeout > 0:
            raise ValueError(f"header_timeout: {self.header_timeout} is not a positive number")
        for name, value in self.extra_headers:
            if not _FIELD_NAME.fullmatch(name):
                raise ValueError(f"extra_headers: {name!r} is not a lower-case field name")
            if not _FIELD_VALUE.fullmatch(value):
                raise ValueError(f"extra_headers: the value of {name!r} has control characters")


async def _written() -> None:
    """What the cycle's send returns for a head it wrote at once: nothing left to do."""


class _ServerMadeCycle(RequestResponseCycle):
    """uvicorn's request cycle; its own 500 (the app failed before responding) is decorated,
    and the response's head is written by ``response_head`` when it can be.

    A head with a Content-Length is held until the body's message and written with it:
    an answer in one body message (what Starlette's responses send) leaves in one
    transport write, one system call and one TCP segment, not two. Any other message
    after the head writes the head first and goes to uvicorn's own code.
    """

    extra_headers: ClassVar[tuple[tuple[bytes, bytes], ...]] = ()
    held_head: bytes | None = None

    # Not a coroutine: uvicorn's own send is returned to be awaited, so a body costs no
    # second coroutine; a message written here returns an awaitable that is done.
    def send(self, message: ASGISendEvent) -> Coroutine[Any, Any, None]:
        held = self.held_head
        if held is not None:
            self.held_head = None
            return self._send_after_held_head(held, message)
        if (
            message["type"] == "http.response.start"
            and not self.response_started
            and not (self.flow.write_paused or self.disconnected or self.access_log)
        ):
            status = message["status"]
            status_line = STATUS_LINE.get(status)
            fields = message.get("headers", ())
            # A one-shot iterable is left to uvicorn: it must still be there if it is.
            if status_line is not None and isinstance(fields, (list, tuple)):
                may_chunk = self.scope["method"] != "HEAD" and status not in (204, 304)
                try:
                    head = response_head(
                        status_line, [*self.default_headers, *fields], self.keep_alive, may_chunk
                    )
                except (TypeError, ValueError):  # uvicorn raises its own error for it
                    head = None
                if head is not None:
                    self.response_started = True
                    self.waiting_for_100_continue = False
                    data, content_length = head
                    if content_length >= 0:
                        self.expected_content_length = content_length
                        self.chunked_encoding = False
                    elif may_chunk:
                        self.chunked_encoding = True
                    if content_length > 0 and may_chunk:  # a body follows: written with it
                        self.held_head = data
                    else:
                        self.transport.write(data)
                    return _written()
        return RequestResponseCycle.send(self, message)

    def _send_after_held_head(
        self, head: bytes, message: ASGISendEvent
    ) -> Coroutine[Any, Any, None]:
        if (
            message["type"] == "http.response.body"
            and not message.get("more_body", False)
            and not (self.flow.write_paused or self.disconnected)
        ):
            body = message.get("body", b"")
            if type(body) is bytes and len(body) == self.expected_content_length:
                # The whole body in one message, as long as the head said: what uvicorn
                # does for it, in one write.
                self.transport.write(head + body)
                self.expected_content_length = 0
                self.response_complete = True
                self.message_event.set()
                if not self.keep_alive:
                    self.transport.close()
                self.on_response()
                return _written()
        if not self.disconnected:  # uvicorn writes nothing more to a client that left
            self.transport.write(head)
        return RequestResponseCycle.send(self, message)

    async def send_500_response(self) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", TEXT_PLAIN),
                    (b"content-length", b"%d" % len(INTERNAL_ERROR_BODY)),
                    (b"connection", b"close"),
                    *self.extra_headers,
                ],
            }
        )
        await self.send(
            {"type": "http.response.body", "body": INTERNAL_ERROR_BODY, "more_body": False}
        )


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that refuses a head over ``max_header_bytes`` (431) or slower
    than ``header_timeout`` (408), and decorates the responses it writes itself.

    Bytes are counted as they arrive, before the parser sees them, from a request's first
    byte until its head is complete; the parser is never given more than the limit, so
    an oversized head is never buffered. A read that ends one head and starts another
    (pipelining) is counted towards the first: the next head may then exceed the limit
    by less than one read. The deadline runs from the connection's opening, or from a
    request's first byte on a kept-alive connection, until its head is complete. A
    connection that sends nothing is closed silently at the deadline (no 408: browsers
    open connections ahead of use and retry on one), one that sent part of a head gets
    a 408. The rest of a body the app answered without reading also has that long:
    uvicorn discards it, and each byte cancels uvicorn's keep-alive timer.

    A refusal while a response is still being written (pipelined requests) would land
    in the middle of it: the connection is then closed after that response instead.

    The callbacks every request runs call their base class by name, not through
    ``super()``: on Python 3.11 that builds no super object, once per callback.
    """

    limits: ClassVar[HeadLimits] = HeadLimits()
    cycle_class: ClassVar[type[RequestResponseCycle]] = _ServerMadeCycle

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = self.limits
        self.max_header_bytes = limits.max_header_bytes
        self.header_timeout = limits.header_timeout
        self.on_refused = limits.on_refused
        self.head_budget = limits.max_header_bytes
        self.header_timer: asyncio.TimerHandle | None = None

    # Connection events

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        budget = self.head_budget
        if budget < 0:  # a body: RequestBodyMiddleware counts it
            if budget == _IN_BODY:
                super().data_received(data)
            return
        while len(data) > budget:
            # The head may end in this read, or not before the limit: the parser gets no
            # more than the head may still take, and says by its callbacks which it was.
            self.head_budget = 0
            super().data_received(data[:budget])
            if self.head_budget == 0:
                self._refuse(431, HEADER_TOO_LARGE, PROBLEM_JSON, HEADER_TOO_LARGE_BODY)
                return
            if self.head_budget == _STOPPED or self.transport.is_closing():
                return
            data = data[budget:]
            budget = self.head_budget
            if budget < 0:
                super().data_received(data)
                return
        self.head_budget = budget - len(data)
        HttpToolsProtocol.data_received(self, data)
        if self.header_timer is None and 0 <= self.head_budget < self.max_header_bytes:
            # Part of a head on a kept-alive connection: its deadline starts now. A head
            # that arrives whole (the usual case) costs no timer.
            self._start_header_timer()

    def handle_websocket_upgrade(self) -> None:
        self.head_budget = _STOPPED  # the websocket protocol reads from here on
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's 400 for what its parser refuses, same body, with the extra headers.
        self._refuse(400, BAD_REQUEST, TEXT_PLAIN, msg.encode("ascii"))

    # Parser callbacks

    def on_headers_complete(self) -> None:
        self.head_budget = _IN_BODY
        self._cancel_header_timer()
        if self.url[:1] != b"/" and b"://" in self.url[:8]:
            self._host_from_target()
        HttpToolsProtocol.on_headers_complete(self)
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # uvicorn made it just now
            # Its own 500 then carries the extra headers: one store, no wrapper per request.
            cycle.__class__ = self.cycle_class

    def _host_from_target(self) -> None:
        """An absolute-form target (``GET http://evil.example/ HTTP/1.1``): its authority is
        the host the request is for, and the Host field is ignored (RFC 9112 3.2.2).

        uvicorn keeps only the path, so the host check would read a Host field that names
        another host than the one requested; here that field becomes the authority, and the
        host check judges what the request really asks for.
        """
        try:
            target = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            return  # uvicorn's own parsing refuses it with its 400
        host = target.host or b""
        if b":" in host:  # an IPv6 literal keeps its brackets in a Host field
            host = b"[" + host + b"]"
        authority = host if target.port is None else b"%s:%d" % (host, target.port)
        # The scope holds this very list: replace its items, not the list.
        self.headers[:] = [field for field in self.headers if field[0] != b"host"]
        self.headers.append((b"host", authority))

    def on_message_complete(self) -> None:
        self.head_budget = self.max_header_bytes  # what follows is the next request's head
        HttpToolsProtocol.on_message_complete(self)

    def on_response_complete(self) -> None:
        HttpToolsProtocol.on_response_complete(self)
        cycle = self.cycle
        if (
            cycle.more_body  # answered before its body ended: uvicorn discards the rest
            and cycle.response_complete
            and not self.pipeline
            and self.header_timer is None
            and not self.transport.is_closing()
        ):
            self._start_header_timer()

    # The deadline and refusals

    def _start_header_timer(self) -> None:
        self.header_timer = self.loop.call_later(self.header_timeout, self._header_time_up)

    def _cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_time_up(self) -> None:
        self.header_timer = None
        budget = self.head_budget
        if budget == _STOPPED or self.transport.is_closing():
            return
        if 0 <= budget < self.max_header_bytes:  # part of a head came
            self._refuse(408, HEADER_TIMEOUT, PROBLEM_JSON, HEADER_TIMEOUT_BODY)
            return
        self.head_budget = _STOPPED
        if self.on_refused is not None:
            self.on_refused(IDLE)
        self.transport.close()

    def _refuse(self, status: int, reason: str, content_type: bytes, body: bytes) -> None:
        self.head_budget = _STOPPED
        self._cancel_header_timer()
        if self.on_refused is not None:
            self.on_refused(reason)
        cycle = self.cycle
        if (
            cycle is not None
            and not cycle.response_complete
            and (cycle.response_started or self.pipeline)
        ):
            # A response is on its way out: a status line now would be read as part of
            # it. Finish it, then close; or close now if its request is still being
            # read, since nothing more of it will be.
            if cycle.more_body:
                self.transport.close()
            else:
                cycle.keep_alive = False
            return
        content = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *self.limits.extra_headers):
            content += [name, b": ", value, b"\r\n"]
        content += [
            b"content-type: ",
            content_type,
            b"\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body),
            body,
        ]
        self.transport.write(b"".join(content))
        self.transport.close()


def limited_http_protocol(
    *,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
    on_refused: RefusalObserver | None = None,
) -> type[LimitedHttpToolsProtocol]:
    """A ``LimitedHttpToolsProtocol`` class with these limits, for ``uvicorn.run(http=...)``.

    ``extra_headers`` go on every response the server writes itself (names are
    lower-cased). A bad value raises ValueError here, at start-up.
    """
    head_limits = HeadLimits(
        max_header_bytes=max_header_bytes,
        header_timeout=header_timeout,
        extra_headers=tuple((name.lower(), value) for name, value in extra_headers),
        on_refused=on_refused,
    )

    class ServerMadeCycle(_ServerMadeCycle):
        extra_headers = head_limits.extra_headers

    class ConfiguredProtocol(LimitedHttpToolsProtocol):
        limits = head_limits
        cycle_class = ServerMadeCycle

    return ConfiguredProtocol
