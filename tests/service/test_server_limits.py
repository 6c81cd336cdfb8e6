"""The request size and time limits as ``python -m gatehouse`` wires them, over raw sockets.

``tests/service/test_request_limits.py`` proves the protocol and the body middleware on a
small app of their own; this proves the service itself serves with them, configured by
its settings, counted in its metrics, with its security headers on every refusal.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import ApiServer

SECURITY_HEADERS = {
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"content-security-policy": b"default-src 'none'; frame-ancestors 'none'",
    b"cache-control": b"no-store",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    api = ApiServer(
        {
            "APP_ALLOWED_ORIGINS": "https://app.example.com",
            "APP_MAX_BODY_BYTES": "2000",
            "APP_MAX_BODY_BYTES_ROUTES": '{"/items/{item_id}": 50}',
            "APP_BODY_TIMEOUT": "1",
            "APP_MAX_HEADER_BYTES": "4096",
            "APP_HEADER_TIMEOUT": "1",
            "APP_RATE_LIMIT_DEFAULT": "1000000/minute",
        }
    )
    api.start(log_dir=tmp_path_factory.mktemp("limits"))
    yield api
    api.stop()


def _connect(server: ApiServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=10)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _status_and_headers(data: bytes) -> tuple[int, dict[bytes, bytes]]:
    head = data.partition(b"\r\n\r\n")[0].split(b"\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(head[0].split()[1]), headers


def _refusals(server: ApiServer) -> dict[str, float]:
    found = {}
    for line in httpx.get(f"{server.url}/metrics", timeout=5).text.splitlines():
        if line.startswith("gatehouse_request_refusals_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            found[reason] = float(line.rsplit(" ", 1)[1])
    return found


def _assert_security_headers(headers: dict[bytes, bytes]) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, (name, headers)


def test_a_head_over_the_limit_is_a_431_from_the_server(server: ApiServer) -> None:
    before = _refusals(server).get("header_too_large", 0)
    with _connect(server) as sock:
        sock.sendall(b"GET /search?q=x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
        status, headers = _status_and_headers(_read_all(sock))
    assert status == 431
    assert b"x-request-id" not in headers  # the app never saw it
    _assert_security_headers(headers)
    assert _refusals(server)["header_too_large"] == before + 1


def test_a_head_sent_slowly_is_a_408_after_the_header_timeout(server: ApiServer) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /search?q=x HTTP/1.1\r\nHost: a\r\n")
        started = time.monotonic()
        for _ in range(30):  # a byte every 0.1 s, never the end of the head
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
        data = _read_all(sock)
        waited = time.monotonic() - started
    status, headers = _status_and_headers(data)
    assert status == 408
    _assert_security_headers(headers)
    assert waited < 10  # ended by the server, not by the client's 30 bytes


def test_a_connection_that_sends_nothing_is_closed(server: ApiServer) -> None:
    with _connect(server) as sock:
        assert _read_all(sock) == b""  # closed without a word, before the 10 s socket timeout


def test_a_body_over_the_limit_is_a_413_before_it_is_read(server: ApiServer) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"POST /items HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200000000\r\n\r\n"
        )
        status, headers = _status_and_headers(_read_all(sock))
    assert status == 413
    assert headers[b"x-request-id"]  # answered by the edge, with its headers
    _assert_security_headers(headers)


def test_a_route_has_its_own_body_limit(server: ApiServer) -> None:
    body = b'{"name": "' + b"a" * 60 + b'"}'
    response = httpx.put(
        f"{server.url}/items/1",
        content=body,
        headers={"content-type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 413
    created = httpx.post(
        f"{server.url}/items",
        content=body,
        headers={"content-type": "application/json"},
        timeout=5,
    )
    assert created.status_code == 201  # the same body is fine where the default applies


def test_a_chunked_body_over_the_limit_is_a_413(server: ApiServer) -> None:
    chunk = b'{"name": "' + b"a" * 3000 + b'"}'
    with _connect(server) as sock:
        sock.sendall(
            b"POST /items HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % len(chunk)
            + chunk
            + b"\r\n0\r\n\r\n"
        )
        status, headers = _status_and_headers(_read_all(sock))
    assert status == 413
    _assert_security_headers(headers)


def test_a_body_slower_than_the_body_timeout_is_a_408(server: ApiServer) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"POST /items HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        data = _read_all(sock)
    status, headers = _status_and_headers(data)
    assert status == 408
    _assert_security_headers(headers)


def test_an_upgrade_request_is_plain_http_through_the_edge(server: ApiServer) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"GET /search?q=x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        sock.shutdown(socket.SHUT_WR)
        status, headers = _status_and_headers(_read_all(sock))
    assert status == 200
    assert headers[b"x-request-id"]
    _assert_security_headers(headers)
