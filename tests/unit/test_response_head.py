"""Gatehouse's response-head writer against uvicorn's, byte for byte.

``server_protocol``'s request cycle writes a response's head with ``response_head``
(compiled in the image) instead of uvicorn's per-field loop. Both cycles get the same
messages here, on recording transports, and must leave the same bytes, the same framing
state (chunked or a length, keep-alive) and the same error: on chosen heads (what
Gatehouse's answers carry, Content-Length repeated or bad, Transfer-Encoding,
Connection, HEAD, 204 and 304, a closing connection, control characters, separators
in a name, fields that are not bytes) and on arbitrary ones (hypothesis). A head with a
Content-Length waits for its body and leaves with it in one write: whatever follows it
(a body too short or too long, in pieces, not bytes, a second start, a client gone)
must still come out as uvicorn's two writes would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, RequestResponseCycle

from gatehouse.response_head import NAME_REFUSED, VALUE_REFUSED, holds_any, response_head
from gatehouse.server_protocol import _ServerMadeCycle

DEFAULT_HEADERS = [(b"date", b"Mon, 07 Dec 2026 21:00:00 GMT")]
GATEHOUSE_ANSWER = [
    (b"content-type", b"application/json"),
    (b"content-length", b"42"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-request-id", b"0123456789abcdef0123456789abcdef"),
    (b"x-ratelimit-limit", b"1000000"),
    (b"x-ratelimit-remaining", b"999999"),
    (b"x-ratelimit-reset", b"60"),
    (b"ratelimit-policy", b'"search";q=1000000;w=60'),
    (b"ratelimit", b'"search";r=999999;t=60'),
    (b"vary", b"Origin"),
]


class RecordingTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def make_cycle(cls: type[RequestResponseCycle], method: str, keep_alive: bool) -> Any:
    transport = RecordingTransport()
    scope: Any = {"type": "http", "method": method, "path": "/", "http_version": "1.1"}
    return cls(
        scope,
        transport,  # type: ignore[arg-type]
        FlowControl(transport),  # type: ignore[arg-type]
        logging.getLogger("test"),
        logging.getLogger("test.access"),
        False,
        list(DEFAULT_HEADERS),
        asyncio.Event(),
        False,
        keep_alive,
        lambda: None,
    )


def outcome(
    cls: type[RequestResponseCycle],
    status: int,
    fields: Sequence[Any],
    method: str = "GET",
    keep_alive: bool = True,
    body: bytes = b"",
) -> tuple[object, ...]:
    """What a cycle did with a response start (then a body): bytes, state, error."""
    cycle = make_cycle(cls, method, keep_alive)

    async def answer() -> str:
        try:
            await cycle.send({"type": "http.response.start", "status": status, "headers": fields})
            await cycle.send({"type": "http.response.body", "body": body, "more_body": False})
        except Exception as error:
            return f"{type(error).__name__}: {error}"
        return ""

    error = asyncio.run(answer())
    return (
        b"".join(cycle.transport.written),
        cycle.response_started,
        cycle.response_complete,
        cycle.chunked_encoding,
        cycle.expected_content_length,
        cycle.keep_alive,
        error,
    )


def assert_same(
    status: int, fields: Sequence[Any], method: str = "GET", keep_alive: bool = True
) -> tuple[object, ...]:
    ours = outcome(_ServerMadeCycle, status, fields, method, keep_alive, b"x" * 42)
    theirs = outcome(RequestResponseCycle, status, fields, method, keep_alive, b"x" * 42)
    assert ours == theirs
    return ours


def test_a_gatehouse_answer_is_written_here_and_as_uvicorn_writes_it() -> None:
    head = response_head(b"HTTP/1.1 200 OK\r\n", [*DEFAULT_HEADERS, *GATEHOUSE_ANSWER], True, True)
    assert head is not None, "the usual answer took uvicorn's path: nothing gained"
    assert head[1] == 42
    written, started, complete, chunked, length, keep_alive, error = assert_same(
        200, GATEHOUSE_ANSWER
    )
    assert written.startswith(b"HTTP/1.1 200 OK\r\ndate: ") and written.endswith(
        b"\r\n\r\n" + b"x" * 42
    )
    # The length was counted down by the body sent.
    assert (started, complete, chunked, length, keep_alive, error) == (
        True,
        True,
        False,
        0,
        True,
        "",
    )


@pytest.mark.parametrize(
    ("status", "fields", "method", "keep_alive"),
    [
        (200, [(b"Content-Type", b"text/plain")], "GET", True),  # no length: chunked
        (200, [(b"content-type", b"text/plain")], "HEAD", True),  # HEAD: not chunked
        (204, [], "GET", True),
        (304, [(b"etag", b'"x"')], "GET", True),
        (200, [(b"content-length", b"42")], "GET", False),  # closing: connection: close
        (200, [(b"content-length", b"42"), (b"content-length", b"7")], "GET", True),
        (200, [(b"content-length", b"7"), (b"content-length", b"nope")], "GET", True),
        (200, [(b"content-length", b"nope")], "GET", True),
        (200, [(b"content-length", b" +4_2 ")], "GET", True),  # int() takes it, so uvicorn does
        (200, [(b"content-length", b"\xff")], "GET", True),
        (200, [(b"transfer-encoding", b"chunked")], "GET", True),
        (200, [(b"content-length", b"42"), (b"Transfer-Encoding", b"chunked")], "GET", True),
        (200, [(b"transfer-encoding", b"gzip"), (b"content-length", b"42")], "GET", True),
        (200, [(b"connection", b"close"), (b"content-length", b"42")], "GET", True),
        (200, [(b"Connection", b"keep-alive, Close")], "GET", False),
        (200, [(b"x-a", b"line\r\nx-injected: 1")], "GET", True),
        (200, [(b"x-a", b"tab\tis allowed")], "GET", True),
        (200, [(b"x a", b"1")], "GET", True),
        (200, [(b"x-a:", b"1")], "GET", True),
        (200, [(b"content-length", b"4\n2")], "GET", True),  # the value error, not int's
        (200, [(b"x-ok", b"1"), (b"x(bad", b"\x00")], "GET", True),
        (200, [("x-str", "not bytes")], "GET", True),
        (200, [(b"x-a", "str value")], "GET", True),
        (200, [(b"x-a", b"1", b"extra")], "GET", True),
        (200, (("x-tuple", b"of tuples"),), "GET", True),
        (200, ((b"x-tuple", b"of tuples"), (b"content-length", b"42")), "GET", True),
        (599, [(b"content-length", b"42")], "GET", True),
    ],
)
def test_heads_uvicorn_frames_or_refuses_come_out_the_same(
    status: int, fields: Sequence[Any], method: str, keep_alive: bool
) -> None:
    assert_same(status, fields, method, keep_alive)


def test_a_generator_of_fields_is_read_once_and_written_whole() -> None:
    def fields() -> Any:
        yield (b"content-length", b"42")
        yield (b"x-a", b"1")

    ours = outcome(_ServerMadeCycle, 200, fields(), body=b"x" * 42)
    theirs = outcome(RequestResponseCycle, 200, fields(), body=b"x" * 42)
    assert ours == theirs and b"x-a: 1\r\n" in ours[0]  # type: ignore[operator]


FIELD_BYTES = st.binary(max_size=12) | st.sampled_from(
    [b"content-length", b"Content-Length", b"transfer-encoding", b"connection", b"x-a", b"42"]
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from([200, 204, 304, 404, 429]),
    fields=st.lists(st.tuples(FIELD_BYTES, FIELD_BYTES), max_size=6),
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    keep_alive=st.booleans(),
)
@example(status=200, fields=[(b"content-length", b"0")], method="GET", keep_alive=True)
def test_any_head_comes_out_the_same(
    status: int, fields: list[tuple[bytes, bytes]], method: str, keep_alive: bool
) -> None:
    assert_same(status, fields, method, keep_alive)


@hypothesis_settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=64))
@example(data=b"")
@example(data=bytes(range(256)))
def test_the_refused_bytes_find_what_uvicorns_expressions_find(data: bytes) -> None:
    assert holds_any(data, NAME_REFUSED) == bool(HEADER_RE.search(data))
    assert holds_any(data, VALUE_REFUSED) == bool(HEADER_VALUE_RE.search(data))


@pytest.mark.parametrize("byte", range(256))
def test_each_byte_is_refused_where_uvicorn_refuses_it(byte: int) -> None:
    field = b"x" + bytes([byte]) + b"y"
    assert holds_any(field, NAME_REFUSED) == bool(HEADER_RE.search(field))
    assert holds_any(field, VALUE_REFUSED) == bool(HEADER_VALUE_RE.search(field))


# A head with a Content-Length is held for its body: one write for the usual answer.

GATEHOUSE_START: Any = {"type": "http.response.start", "status": 200, "headers": GATEHOUSE_ANSWER}


def body(data: Any, more_body: bool = False) -> Any:
    return {"type": "http.response.body", "body": data, "more_body": more_body}


def conversation(
    cls: type[RequestResponseCycle],
    messages: Sequence[Any],
    method: str = "GET",
    keep_alive: bool = True,
    disconnect_after_start: bool = False,
) -> tuple[Any, tuple[object, ...]]:
    """The cycle after ``messages``, and what it did: bytes, state, closing, error."""
    cycle = make_cycle(cls, method, keep_alive)
    completions: list[None] = []
    cycle.on_response = lambda: completions.append(None)

    async def answer() -> str:
        try:
            for number, message in enumerate(messages):
                await cycle.send(message)
                if number == 0 and disconnect_after_start:
                    cycle.disconnected = True
        except Exception as error:
            return f"{type(error).__name__}: {error}"
        return ""

    error = asyncio.run(answer())
    return cycle, (
        b"".join(cycle.transport.written),
        cycle.response_started,
        cycle.response_complete,
        cycle.chunked_encoding,
        cycle.expected_content_length,
        cycle.message_event.is_set(),
        cycle.transport.closed,
        len(completions),
        error,
    )


def test_an_answer_in_one_body_message_leaves_in_one_write() -> None:
    messages = [GATEHOUSE_START, body(b"x" * 42)]
    ours, ours_did = conversation(_ServerMadeCycle, messages)
    theirs, theirs_did = conversation(RequestResponseCycle, messages)
    assert ours_did == theirs_did
    assert len(ours.transport.written) == 1 and len(theirs.transport.written) == 2
    assert ours_did[5:8] == (True, False, 1)  # complete: the event set, kept open, told once


@pytest.mark.parametrize(
    ("messages", "method", "keep_alive"),
    [
        ([GATEHOUSE_START, body(b"x" * 42)], "GET", False),  # closed after it
        ([GATEHOUSE_START, {"type": "http.response.body", "body": b"x" * 42}], "GET", True),
        ([GATEHOUSE_START, body(b"x" * 41)], "GET", True),  # shorter than its length
        ([GATEHOUSE_START, body(b"x" * 43)], "GET", True),  # longer
        ([GATEHOUSE_START, body(b"")], "GET", True),
        ([GATEHOUSE_START, body(b"x" * 20, True), body(b"x" * 22)], "GET", True),
        ([GATEHOUSE_START, body(b"", True), body(b"x" * 42)], "GET", True),
        ([GATEHOUSE_START, body(b"x" * 42, True), body(b"")], "GET", True),
        ([GATEHOUSE_START, body(bytearray(b"x" * 42))], "GET", True),
        ([GATEHOUSE_START, body(memoryview(b"x" * 42))], "GET", True),
        ([GATEHOUSE_START, GATEHOUSE_START], "GET", True),  # a second start
        ([GATEHOUSE_START, body(b"x" * 42), body(b"y")], "GET", True),  # after the end
        ([GATEHOUSE_START, body(b"")], "HEAD", True),  # HEAD: the head alone, at once
        ([GATEHOUSE_START, body(b"x" * 42)], "HEAD", True),
    ],
)
def test_what_follows_a_held_head_comes_out_as_uvicorns(
    messages: list[Any], method: str, keep_alive: bool
) -> None:
    _, ours = conversation(_ServerMadeCycle, messages, method, keep_alive)
    _, theirs = conversation(RequestResponseCycle, messages, method, keep_alive)
    assert ours == theirs


def test_a_held_head_is_not_written_to_a_client_that_left() -> None:
    messages = [GATEHOUSE_START, body(b"x" * 42)]
    ours, ours_did = conversation(_ServerMadeCycle, messages, disconnect_after_start=True)
    theirs, theirs_did = conversation(RequestResponseCycle, messages, disconnect_after_start=True)
    # uvicorn wrote the head before it knew; here nothing is written, and neither fails.
    assert ours.transport.written == [] and len(theirs.transport.written) == 1
    assert ours_did[1:] == theirs_did[1:]


def test_a_head_without_a_body_to_hold_for_is_written_at_once() -> None:
    for status, fields in [(204, []), (200, [(b"content-length", b"0")])]:
        cycle = make_cycle(_ServerMadeCycle, "GET", True)
        start = {"type": "http.response.start", "status": status, "headers": fields}
        asyncio.run(cycle.send(start))
        assert len(cycle.transport.written) == 1, status


# Field names are checked once per process, and only so many are kept.


def test_the_checked_names_stay_bounded_and_every_head_still_comes_out_the_same() -> None:
    from gatehouse import response_head as module

    for number in range(module.CHECKED_NAMES_MAX + 50):
        assert_same(200, [(b"X-Invented-%d" % number, b"1"), (b"content-length", b"42")])
    assert len(module._checked_names) <= module.CHECKED_NAMES_MAX
    # A name refused once is refused again: it was never kept as checked.
    for _ in range(2):
        assert response_head(b"HTTP/1.1 200 OK\r\n", [(b"x a", b"1")], True, True) is None
    assert b"x a" not in module._checked_names


@pytest.mark.parametrize(
    "value", [b"ok\r\n", b"\n", b"a\x00", b"\x7f", b"\x1f", b"tab\tok", b"", b"\x80\xff"]
)
def test_a_value_is_judged_wherever_it_stands_in_the_head(value: bytes) -> None:
    for position in range(3):
        fields = [(b"x-a", b"1"), (b"x-b", b"2")]
        fields.insert(position, (b"x-v", value))
        for keep_alive in (True, False):
            assert_same(200, fields, keep_alive=keep_alive)
            assert_same(200, [*fields, (b"content-length", b"42")], keep_alive=keep_alive)


@pytest.mark.parametrize(
    ("fields", "keep_alive", "may_chunk"),
    [
        ([(b"content-type", b"text/plain")], True, True),  # chunked
        ([(b"content-type", b"text/plain")], False, True),  # chunked, closing
        ([(b"content-type", b"text/plain")], True, False),  # HEAD, 204, 304
        ([(b"Content-Length", b"42"), (b"x-a", b"tab\there")], False, True),
        ([(b"x-a", b"\x80\xff 8-bit"), (b"content-length", b"0")], True, True),
        ([], True, True),
        (GATEHOUSE_ANSWER, False, True),
    ],
)
def test_heads_without_a_refused_byte_are_written_here(
    fields: list[tuple[bytes, bytes]], keep_alive: bool, may_chunk: bool
) -> None:
    # Falling back to uvicorn would write the same bytes: this is what says it did not.
    status_line = b"HTTP/1.1 200 OK\r\n"
    assert response_head(status_line, [*DEFAULT_HEADERS, *fields], keep_alive, may_chunk)
