"""Request size and time limits in a real uvicorn process, attacked over raw sockets.

The server is uvicorn with ``LimitedHttpToolsProtocol`` and a tiny app behind
``SecurityHeadersMiddleware`` and ``RequestBodyMiddleware``, in Gatehouse's order,
with limits and timeouts small enough for the suite to take seconds. Every loop here
is bounded in bytes and time; everything goes to 127.0.0.1.

A server that closes while the client still sends may reset the connection; on Linux
what reached the client before the reset stays readable, so "closed" below means the
end of the stream or a reset, after the whole response.
"""

from __future__ import annotations

import select
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import pytest

from gatehouse.middleware.security_headers import SecurityHeadersMiddleware
from tests.helpers import PYTHON, free_port, stop_process, wait_until

MAX_HEADER_BYTES = 8 * 1024
HEADER_TIMEOUT = 1.0
MAX_BODY_BYTES = 16 * 1024
BODY_TIMEOUT = 1.0

SERVER = f"""
import sys

import uvicorn

from gatehouse.middleware.request_body import RequestBodyMiddleware
from gatehouse.middleware.security_headers import SecurityHeadersMiddleware
from gatehouse.server_protocol import limited_http_protocol


async def app(scope, receive, send):
    if scope["path"] == "/boom":
        raise RuntimeError("fails before responding")
    size = 0
    more = scope["method"] == "POST"
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"received %d bytes" % size
    await send({{
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
    }})
    await send({{"type": "http.response.body", "body": body}})


edge = SecurityHeadersMiddleware(
    RequestBodyMiddleware(app, max_body_bytes={MAX_BODY_BYTES}, body_timeout={BODY_TIMEOUT})
)
uvicorn.run(
    edge,
    host="127.0.0.1",
    port=int(sys.argv[1]),
    http=limited_http_protocol(
        max_header_bytes={MAX_HEADER_BYTES},
        header_timeout={HEADER_TIMEOUT},
        extra_headers=edge.blocks.api,
    ),
    ws="none",
    server_header=False,
    access_log=False,
    lifespan="off",
    log_level="warning",
)
"""

# What SecurityHeadersMiddleware adds for a plain-http API path, in its order; the
# values a browser acts on are spelled out so that the test can tell them apart.
SECURITY_HEADERS = [
    (name.decode(), value.decode()) for name, value in SecurityHeadersMiddleware(None).blocks.api
]
assert ("x-content-type-options", "nosniff") in SECURITY_HEADERS
assert ("x-frame-options", "DENY") in SECURITY_HEADERS
assert ("content-security-policy", "default-src 'none'; frame-ancestors 'none'") in SECURITY_HEADERS
assert ("cache-control", "no-store") in SECURITY_HEADERS


def status_line(code: int) -> str:
    return f"HTTP/1.1 {code} {HTTPStatus(code).phrase}"


def problem(code: int, title: str, detail: str) -> bytes:
    return (
        f'{{"type":"about:blank","title":"{title}","status":{code},"detail":"{detail}"}}'.encode()
    )


def server_made(code: int, content_type: str, body: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Headers (after Date) and body of a response the protocol writes itself."""
    return [
        *SECURITY_HEADERS,
        ("content-type", content_type),
        ("content-length", str(len(body))),
        ("connection", "close"),
    ], body


def app_refusal(body: bytes) -> list[tuple[str, str]]:
    """Headers (after Date) of a refusal from RequestBodyMiddleware, via the edge."""
    return [
        ("content-type", "application/problem+json"),
        ("content-length", str(len(body))),
        ("connection", "close"),
        *SECURITY_HEADERS,
    ]


HEADER_TOO_LARGE = server_made(
    431,
    "application/problem+json",
    b'{"type":"about:blank","title":"Request Header Fields Too Large","status":431,'
    b'"detail":"the request line and header fields are too large"}',
)
HEADER_TIMEOUT_RESPONSE = server_made(
    408,
    "application/problem+json",
    b'{"type":"about:blank","title":"Request Timeout","status":408,'
    b'"detail":"the request head did not arrive in time"}',
)
INVALID_REQUEST = server_made(400, "text/plain; charset=utf-8", b"Invalid HTTP request received.")
TOO_LARGE_BODY = problem(
    413, "Content Too Large", f"the request body is limited to {MAX_BODY_BYTES} bytes"
)
BODY_TIMEOUT_BODY = problem(408, "Request Timeout", "the request body did not arrive in time")


@dataclass
class Response:
    status_line: str
    headers: list[tuple[str, str]]  # in order, without Date
    body: bytes


class Client:
    """One raw connection to the server; reads responses framed by Content-Length."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""
        self.closed = False

    def send(self, data: bytes) -> bool:
        """False once the server has closed (or reset) the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def _fill(self, deadline: float) -> bool:
        if self.closed:
            return False
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    def response(self, timeout: float = 5.0) -> Response:
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill(deadline):
                raise AssertionError(f"closed before a response head: {self.buffer!r}")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        first, *lines = head.decode("latin-1").split("\r\n")
        headers = [tuple(line.split(": ", 1)) for line in lines]
        assert headers[0][0] == "date"  # uvicorn's default header comes first
        length = int(dict(headers)["content-length"])
        while len(self.buffer) < length:
            if not self._fill(deadline):
                raise AssertionError(f"closed inside a response body: {self.buffer!r}")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Response(first, [(k, v) for k, v in headers[1:]], body)  # type: ignore[misc]

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True if the server ends the connection within ``timeout`` with nothing more."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._fill(deadline):
                return self.buffer == b""
        return False

    def trickle(self, data: bytes, interval: float, stop_after: float) -> float:
        """Send ``data`` a byte at a time until ``stop_after`` s or the server answers.

        Returns when sending started. The bytes come faster than any timeout here, so
        only a deadline on the whole head or body can end this.
        """
        started = time.monotonic()
        for byte in data:
            if time.monotonic() - started > stop_after or not self.send(bytes([byte])):
                break
            readable, _, _ = select.select([self.sock], [], [], interval)
            if readable:
                break
        return started

    def close(self) -> None:
        self.sock.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def get(path: bytes = b"/", headers: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: api.example.com\r\n" + headers + b"\r\n"


def post(body: bytes, headers: bytes = b"") -> bytes:
    return (
        b"POST /upload HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: %d\r\n" % len(body)
        + headers
        + b"\r\n"
        + body
    )


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]

    def connect(self) -> Client:
        return Client(self.port)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("request-limits") / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [PYTHON, "-c", SERVER, str(port)], stdout=log, stderr=subprocess.STDOUT
        )

    def accepting() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log_path.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    try:
        wait_until(accepting, what=f"uvicorn on port {port}")
        yield Server(port, process)
    finally:
        stop_process(process)


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    connection = server.connect()
    yield connection
    connection.close()


def test_a_64_kib_header_gets_431_with_the_security_headers_and_is_closed(client):
    started = time.monotonic()
    client.send(get(headers=b"X-Junk: " + b"a" * 64 * 1024 + b"\r\n"))
    response = client.response()
    assert response.status_line == "HTTP/1.1 431 Request Header Fields Too Large"
    assert (response.headers, response.body) == HEADER_TOO_LARGE
    assert client.wait_closed()
    assert time.monotonic() - started < 1.0


def test_an_endless_header_is_cut_off_without_growing_the_server(server, client):
    """Without the limit a 200 MB header took 72 s and 469 MB; here 64 MiB are offered."""
    warm = server.connect()  # the first requests allocate what every request reuses
    for _ in range(3):
        warm.send(get())
        assert warm.response().status_line == "HTTP/1.1 200 OK"
    warm.close()
    before = rss_kib(server.process.pid)
    started = time.monotonic()
    client.send(get()[:-2] + b"X-Endless: ")
    sent = 0
    block = b"a" * 65536
    while sent < 64 * 1024 * 1024 and time.monotonic() - started < 10 and client.send(block):
        sent += len(block)
    response = client.response()
    elapsed = time.monotonic() - started
    assert response.status_line == "HTTP/1.1 431 Request Header Fields Too Large"
    assert (response.headers, response.body) == HEADER_TOO_LARGE
    assert client.wait_closed()
    # The server stopped reading at the limit: the client could only fill the socket
    # buffers before its writes failed.
    assert sent < 16 * 1024 * 1024
    assert elapsed < 3.0
    assert rss_kib(server.process.pid) - before < 8 * 1024


def test_a_header_sent_a_byte_at_a_time_gets_408_at_the_deadline(client):
    request = get(headers=b"X-Slow: " + b"s" * 1000 + b"\r\n")
    # The connection opens when the client is made: the deadline runs from there.
    started = client.trickle(request, interval=0.05, stop_after=HEADER_TIMEOUT * 3)
    response = client.response()
    elapsed = time.monotonic() - started
    assert response.status_line == "HTTP/1.1 408 Request Timeout"
    assert (response.headers, response.body) == HEADER_TIMEOUT_RESPONSE
    assert client.wait_closed()
    assert HEADER_TIMEOUT * 0.9 <= elapsed < HEADER_TIMEOUT + 1.0


def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(server):
    started = time.monotonic()
    connection = server.connect()
    try:
        assert connection.wait_closed(timeout=HEADER_TIMEOUT + 3)  # and without a word
        elapsed = time.monotonic() - started
    finally:
        connection.close()
    assert HEADER_TIMEOUT * 0.9 <= elapsed < HEADER_TIMEOUT + 1.0


def test_a_200_mb_body_announced_by_content_length_is_refused_unread(client):
    started = time.monotonic()
    # Only the head is sent: a server that waited for the body would never answer.
    client.send(
        b"POST /upload HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 200000000\r\n\r\n"
    )
    response = client.response()
    assert response.status_line == status_line(413)
    assert response.headers == app_refusal(TOO_LARGE_BODY)
    assert response.body == TOO_LARGE_BODY
    assert client.wait_closed()
    assert time.monotonic() - started < 1.0


def test_a_chunked_body_over_the_limit_is_refused(client):
    chunk = b"%x\r\n%s\r\n" % (4096, b"c" * 4096)
    # Five chunks: the fifth crosses 16 KiB. No final chunk: the client would go on.
    client.send(
        b"POST /upload HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunk * 5
    )
    response = client.response()
    assert response.status_line == status_line(413)
    assert response.headers == app_refusal(TOO_LARGE_BODY)
    assert response.body == TOO_LARGE_BODY
    assert client.wait_closed()


def test_a_chunked_body_at_the_limit_is_accepted(client):
    chunk = b"%x\r\n%s\r\n" % (4096, b"c" * 4096)
    client.send(
        b"POST /upload HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunk * 4
        + b"0\r\n\r\n"
    )
    response = client.response()
    assert response.status_line == "HTTP/1.1 200 OK"
    assert response.body == b"received 16384 bytes"


def test_a_body_trickling_slower_than_the_deadline_gets_408(client):
    client.send(b"POST /upload HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 1000\r\n\r\n")
    started = client.trickle(b"t" * 1000, interval=0.05, stop_after=BODY_TIMEOUT * 3)
    response = client.response()
    elapsed = time.monotonic() - started
    assert response.status_line == "HTTP/1.1 408 Request Timeout"
    assert response.headers == app_refusal(BODY_TIMEOUT_BODY)
    assert response.body == BODY_TIMEOUT_BODY
    assert client.wait_closed()
    assert BODY_TIMEOUT * 0.9 <= elapsed < BODY_TIMEOUT + 1.0


@pytest.mark.parametrize(
    "request_line",
    [b"GET /\x01 HTTP/1.1", b"GET / HTTP/9.x", b"NOT A REQUEST"],
    ids=["control-character", "bad-version", "garbage"],
)
def test_a_malformed_request_line_gets_400_with_the_security_headers(client, request_line):
    client.send(request_line + b"\r\nHost: api.example.com\r\n\r\n")
    response = client.response()
    assert response.status_line == "HTTP/1.1 400 Bad Request"
    assert (response.headers, response.body) == INVALID_REQUEST
    assert client.wait_closed()


def test_uvicorns_own_500_carries_the_security_headers(client):
    client.send(get(b"/boom"))
    response = client.response()
    assert response.status_line == "HTTP/1.1 500 Internal Server Error"
    assert response.headers == [
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", "21"),
        ("connection", "close"),
        *SECURITY_HEADERS,
    ]
    assert response.body == b"Internal Server Error"


def test_normal_requests_go_on_on_one_kept_alive_connection(client):
    """Each request's head has the whole limit again, and a body at the limit passes."""
    near_limit = b"X-Big: " + b"b" * (MAX_HEADER_BYTES - 200) + b"\r\n"
    for request, body in [
        (get(), b"received 0 bytes"),
        (get(headers=near_limit), b"received 0 bytes"),
        (post(b"p" * MAX_BODY_BYTES), b"received 16384 bytes"),
        (get(headers=near_limit), b"received 0 bytes"),
        (post(b"q" * 10, near_limit), b"received 10 bytes"),
    ]:
        client.send(request)
        response = client.response()
        assert response.status_line == "HTTP/1.1 200 OK"
        assert response.headers == [
            ("content-type", "text/plain"),
            ("content-length", str(len(body))),
            *SECURITY_HEADERS,
        ]
        assert response.body == body
    assert not client.closed


def test_a_later_request_on_a_kept_alive_connection_is_limited_too(client):
    for _ in range(2):
        client.send(post(b"x" * 100))
        assert client.response().body == b"received 100 bytes"
    client.send(get(headers=b"X-Junk: " + b"a" * 64 * 1024 + b"\r\n"))
    response = client.response()
    assert response.status_line == "HTTP/1.1 431 Request Header Fields Too Large"
    assert (response.headers, response.body) == HEADER_TOO_LARGE
    assert client.wait_closed()


def test_a_later_request_trickled_on_a_kept_alive_connection_gets_408(client):
    """The deadline runs from the request's first byte, not from the connection's opening."""
    client.send(get())
    assert client.response().body == b"received 0 bytes"
    time.sleep(HEADER_TIMEOUT * 0.6)  # idle, below uvicorn's keep-alive timeout (5 s)
    started = client.trickle(get(headers=b"X-Slow: " + b"s" * 1000 + b"\r\n"), 0.05, 3.0)
    response = client.response()
    elapsed = time.monotonic() - started
    assert response.status_line == "HTTP/1.1 408 Request Timeout"
    assert (response.headers, response.body) == HEADER_TIMEOUT_RESPONSE
    assert client.wait_closed()
    assert HEADER_TIMEOUT * 0.9 <= elapsed < HEADER_TIMEOUT + 1.0


def test_the_unread_rest_of_an_answered_body_cannot_hold_the_connection(client):
    """The app answers this GET without reading its body: uvicorn discards the rest as
    it comes, and each byte cancels uvicorn's keep-alive timer."""
    client.send(get())
    assert client.response().body == b"received 0 bytes"
    client.send(
        b"GET /ignore-body HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 1000\r\n\r\nabc"
    )
    assert client.response().body == b"received 0 bytes"
    started = time.monotonic()
    while time.monotonic() - started < HEADER_TIMEOUT * 4 and client.send(b"x"):
        readable, _, _ = select.select([client.sock], [], [], 0.05)
        if readable:
            break
    assert client.wait_closed()  # without a word: the request had its response
    assert time.monotonic() - started < HEADER_TIMEOUT + 1.0


def test_pipelined_requests_are_all_answered(client):
    client.send(get() + post(b"x" * 100) + get(headers=b"X-Last: 1\r\n"))
    bodies = [client.response().body for _ in range(3)]
    assert bodies == [b"received 0 bytes", b"received 100 bytes", b"received 0 bytes"]


def test_a_websocket_upgrade_reaches_the_app_as_plain_http(client):
    """With ws="none" no websocket refusal exists: the app answers, with its headers."""
    client.send(
        get(
            b"/ws",
            b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        )
    )
    response = client.response()
    assert response.status_line == "HTTP/1.1 200 OK"
    assert response.headers == [
        ("content-type", "text/plain"),
        ("content-length", "16"),
        *SECURITY_HEADERS,
    ]
