"""Hostile requests over raw sockets to a real ``python -m gatehouse``.

Nothing on the client side normalises what is sent: every case is the exact bytes on
the wire. For each: the status is the one the table says (4xx, or 2xx where the request
is in fact acceptable), never 5xx; the server stays up; the application recorded no 5xx
and logged no unhandled exception; and every response the application produced carries
the security headers. Some malformed requests never reach the application: uvicorn
answers them with a bare 400 (``Invalid HTTP request received.``, no ``x-request-id``),
which cannot carry the application's headers; for those only "4xx, not 5xx" is asserted.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.helpers import ApiServer

HOST = b"api.example.com"
TRUSTED_PEER = "127.0.10.1"  # inside FORWARDED_ALLOW_IPS=127.0.10.0/24
UVICORN_INVALID = b"Invalid HTTP request received."

OK = range(200, 300)
CLIENT_ERROR = range(400, 500)

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
}


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def from_uvicorn(self) -> bool:
        """uvicorn's own answer to an unparsable request: the app never saw it."""
        return self.header("x-request-id") is None and self.body.startswith(UVICORN_INVALID)


@dataclass
class Case:
    name: str
    raw: bytes
    expect: range
    source: str | None = None  # local address to connect from (proxy trust)
    check: Callable[[Response], None] | None = None
    # True: uvicorn must answer (the app never sees it); False: the app must; None: either.
    by_uvicorn: bool | None = False
    extra: dict[str, object] = field(default_factory=dict)


def request(
    method: bytes = b"GET",
    target: bytes = b"/search?q=lamp",
    headers: list[bytes] | None = None,
    body: bytes = b"",
    host: bytes | None = HOST,
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """One request, byte for byte; ``Connection: close`` so the server ends the exchange."""
    lines = [method + b" " + target + b" " + version]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += headers or []
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def json_post(body: bytes, headers: list[bytes] | None = None) -> bytes:
    return request(
        b"POST",
        b"/items",
        [b"Content-Type: application/json", b"Content-Length: %d" % len(body), *(headers or [])],
        body,
    )


def client_ip_is(expected: str) -> Callable[[Response], None]:
    def check(response: Response) -> None:
        assert json.loads(response.body)["client_ip"] == expected

    return check


XFF_1000 = b", ".join(b"10.%d.%d.1" % (i // 250, i % 250) for i in range(1000))
XFF_GARBAGE = b"garbage, ;;;, <script>, 999.999.999.999, , ::::, 1.2.3.4:80, [::1]:443, unknown"
XFF_IPV6 = b"2001:db8::1, fe80::1%eth0, ::ffff:10.0.0.1, 2001:db8::2"

CASES: list[Case] = [
    # --- a sane baseline ---
    Case("baseline-search", request(), OK),
    # --- header sizes and counts ---
    Case("header-value-8kb", request(headers=[b"X-Junk: " + b"a" * 8_000]), OK),
    Case("header-value-100kb", request(headers=[b"X-Junk: " + b"a" * 100_000]), OK),
    Case("headers-1000", request(headers=[b"X-H-%d: v" % i for i in range(1000)]), OK),
    Case("headers-1000-same-name", request(headers=[b"X-Same: v"] * 1000), OK),
    Case("request-id-10kb", request(headers=[b"X-Request-ID: " + b"r" * 10_000]), OK),
    Case(
        "request-id-markup", request(headers=[b"X-Request-ID: <script>alert('x')</script>\xff"]), OK
    ),
    Case(
        "header-value-del-byte",
        request(headers=[b"X-Request-ID: a\x7fb"]),
        CLIENT_ERROR,
        by_uvicorn=True,
    ),
    # --- malformed header lines ---
    Case("header-without-colon", request(headers=[b"NoColonHere"]), CLIENT_ERROR, by_uvicorn=True),
    Case("header-name-with-space", request(headers=[b"X Bad: 1"]), CLIENT_ERROR, by_uvicorn=True),
    Case(
        "header-space-before-colon", request(headers=[b"X-Bad : 1"]), CLIENT_ERROR, by_uvicorn=True
    ),
    Case("header-name-non-ascii", request(headers=[b"X-\xff: 1"]), CLIENT_ERROR, by_uvicorn=True),
    Case("header-value-nul", request(headers=[b"X-Bad: a\x00b"]), CLIENT_ERROR, by_uvicorn=True),
    Case(
        "header-value-control-bytes",
        request(headers=[b"X-Bad: \x01\x02\x1b"]),
        CLIENT_ERROR,
        by_uvicorn=True,
    ),
    Case("header-value-latin1", request(headers=[b"X-Latin: caf\xe9"]), OK),
    Case(
        "header-obs-fold", request(headers=[b"X-Folded: a", b"  b"]), CLIENT_ERROR, by_uvicorn=True
    ),
    Case(
        "bare-lf-line-endings",
        b"GET /search?q=lamp HTTP/1.1\nHost: api.example.com\nConnection: close\n\n",
        CLIENT_ERROR,
        by_uvicorn=True,
    ),
    # --- X-Forwarded-For ---
    Case(
        "xff-1000-hops-untrusted-peer",
        request(b"GET", b"/whoami", [b"X-Forwarded-For: " + XFF_1000]),
        OK,
        check=client_ip_is("127.0.0.1"),
    ),
    Case(
        "xff-1000-hops-trusted-peer",
        request(b"GET", b"/whoami", [b"X-Forwarded-For: " + XFF_1000]),
        OK,
        source=TRUSTED_PEER,
        check=client_ip_is("10.3.249.1"),
    ),
    Case(
        "xff-garbage-untrusted-peer",
        request(b"GET", b"/whoami", [b"X-Forwarded-For: " + XFF_GARBAGE]),
        OK,
        check=client_ip_is("127.0.0.1"),
    ),
    Case(
        "xff-garbage-trusted-peer",
        request(b"GET", b"/search?q=lamp", [b"X-Forwarded-For: " + XFF_GARBAGE]),
        OK,
        source=TRUSTED_PEER,
    ),
    Case(
        "xff-ipv6-trusted-peer",
        request(b"GET", b"/whoami", [b"X-Forwarded-For: " + XFF_IPV6]),
        OK,
        source=TRUSTED_PEER,
        check=client_ip_is("2001:db8::2"),
    ),
    Case(
        "xff-ipv6-untrusted-peer",
        request(b"GET", b"/whoami", [b"X-Forwarded-For: " + XFF_IPV6]),
        OK,
        check=client_ip_is("127.0.0.1"),
    ),
    Case(
        "xff-empty-trusted-peer",
        request(b"GET", b"/search?q=lamp", [b"X-Forwarded-For: "]),
        OK,
        source=TRUSTED_PEER,
    ),
    Case(
        "xff-100kb-trusted-peer",
        request(b"GET", b"/search?q=lamp", [b"X-Forwarded-For: " + b"1.2.3.4," * 12_500]),
        OK,
        source=TRUSTED_PEER,
    ),
    Case(
        "xfp-garbage-trusted-peer",
        request(b"GET", b"/whoami", [b"X-Forwarded-Proto: javascript"]),
        OK,
        source=TRUSTED_PEER,
    ),
    Case(
        "xff-many-header-lines-trusted-peer",
        request(b"GET", b"/search?q=lamp", [b"X-Forwarded-For: 10.0.0.%d" % i for i in range(200)]),
        OK,
        source=TRUSTED_PEER,
    ),
    # --- Host ---
    Case("host-empty", request(host=b""), CLIENT_ERROR),
    Case("host-missing", request(host=None), CLIENT_ERROR),
    Case("host-missing-http10", request(host=None, version=b"HTTP/1.0"), CLIENT_ERROR),
    Case("host-foreign", request(host=b"evil.example"), CLIENT_ERROR),
    Case("host-allowed-upper-case-with-port", request(host=b"API.EXAMPLE.COM:8443"), OK),
    Case(
        "host-two-first-foreign",
        request(host=b"evil.example", headers=[b"Host: api.example.com"]),
        CLIENT_ERROR,
    ),
    Case(
        "host-two-first-allowed",
        request(headers=[b"Host: evil.example"]),
        CLIENT_ERROR,
    ),
    Case("host-very-long", request(host=b"a" * 10_000 + b".example.com"), CLIENT_ERROR),
    Case("host-with-userinfo", request(host=b"user:pw@api.example.com"), CLIENT_ERROR),
    Case("host-with-path", request(host=b"api.example.com/evil"), CLIENT_ERROR),
    Case("host-non-ascii", request(host=b"\xe4pi.example.com"), CLIENT_ERROR),
    Case("host-trailing-dot", request(host=b"api.example.com."), CLIENT_ERROR),
    Case("host-ipv6-literal", request(host=b"[::1]:8000"), CLIENT_ERROR),
    Case(
        "host-port-with-userinfo-of-another-host",
        request(host=b"api.example.com:@evil.example"),
        CLIENT_ERROR,
    ),
    # --- query strings and paths ---
    # A 100 kB request target is refused by uvicorn's parser before the app runs.
    Case(
        "query-100kb-one-value",
        request(target=b"/search?q=" + b"a" * 100_000),
        CLIENT_ERROR,
        by_uvicorn=True,
    ),
    Case(
        "query-100kb-many-pairs",
        request(target=b"/whoami?" + b"a=1&" * 25_000),
        CLIENT_ERROR,
        by_uvicorn=True,
    ),
    Case("query-30kb-one-value", request(target=b"/search?q=" + b"a" * 30_000), CLIENT_ERROR),
    Case("query-30kb-many-pairs", request(target=b"/whoami?" + b"a=1&" * 7_500), OK),
    Case("query-bad-percent", request(target=b"/search?q=%zz%%41%"), OK),
    Case("query-percent-invalid-utf8", request(target=b"/search?q=%ff%fe"), OK),
    Case("query-percent-surrogate", request(target=b"/search?q=%ed%a0%80"), OK),
    Case("path-bad-percent", request(target=b"/items/%zz"), CLIENT_ERROR),
    Case("path-percent-invalid-utf8", request(target=b"/items/%ff"), CLIENT_ERROR),
    Case("path-percent-nul", request(target=b"/items/%00"), CLIENT_ERROR),
    Case("path-lone-percent", request(target=b"/%"), CLIENT_ERROR),
    Case("path-raw-non-ascii", request(target=b"/items/\xff\xfe"), CLIENT_ERROR, by_uvicorn=True),
    Case("path-dot-segments", request(target=b"/../../etc/passwd"), CLIENT_ERROR),
    Case("path-100kb", request(target=b"/items/" + b"1" * 100_000), CLIENT_ERROR, by_uvicorn=True),
    Case("path-30kb-digits", request(target=b"/items/" + b"1" * 30_000), CLIENT_ERROR),
    Case("path-huge-negative-id", request(target=b"/items/-" + b"9" * 5_000), CLIENT_ERROR),
    Case("target-absolute-form", request(target=b"http://evil.example/search?q=a"), OK),
    Case("target-asterisk", request(b"OPTIONS", b"*"), CLIENT_ERROR),
    Case("target-no-slash", request(target=b"search?q=a"), CLIENT_ERROR, by_uvicorn=True),
    # --- methods ---
    Case("method-propfind", request(b"PROPFIND", b"/items"), CLIENT_ERROR),
    Case("method-trace", request(b"TRACE", b"/search?q=a"), CLIENT_ERROR),
    Case(
        "method-connect", request(b"CONNECT", b"api.example.com:443"), CLIENT_ERROR, by_uvicorn=True
    ),
    Case("method-lowercase-get", request(b"get"), CLIENT_ERROR, by_uvicorn=True),
    Case("method-100-char-token", request(b"X" * 100), CLIENT_ERROR, by_uvicorn=True),
    Case("method-patch", request(b"PATCH", b"/items/1"), CLIENT_ERROR),
    # FastAPI routes HEAD nowhere (Starlette's Route would add it to GET routes): 405.
    Case("method-head", request(b"HEAD"), CLIENT_ERROR),
    Case("method-options-without-origin", request(b"OPTIONS", b"/items"), CLIENT_ERROR),
    # httptools parses an "HTTP/2.0" request line like HTTP/1.1: a fine request.
    Case("version-http-2", request(version=b"HTTP/2.0"), OK),
    Case("version-garbage", request(version=b"HTTP/9.x"), CLIENT_ERROR, by_uvicorn=True),
    Case(
        "tls-client-hello",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
        CLIENT_ERROR,
        by_uvicorn=True,
    ),
    # --- JSON bodies to POST /items ---
    Case("json-valid", json_post(b'{"name": "lamp"}'), OK),
    Case("json-malformed", json_post(b'{"name": '), CLIENT_ERROR),
    Case("json-deep-arrays", json_post(b"[" * 100_000), CLIENT_ERROR),
    Case("json-deep-objects", json_post(b'{"a":' * 50_000), CLIENT_ERROR),
    Case("json-huge-5mb", json_post(b'{"name": "' + b"a" * 5_000_000 + b'"}'), CLIENT_ERROR),
    Case(
        "json-huge-integer",
        json_post(b'{"name": "a", "quantity": ' + b"9" * 5_000 + b"}"),
        CLIENT_ERROR,
    ),
    Case("json-nan", json_post(b'{"name": "a", "quantity": NaN}'), CLIENT_ERROR),
    Case("json-invalid-utf8", json_post(b'{"name": "\xff\xfe"}'), CLIENT_ERROR),
    Case(
        "json-lone-surrogate-escape",
        json_post(b'{"name": "\\ud800"}'),
        CLIENT_ERROR,
        extra={"or_ok": True},
    ),
    Case("json-wrong-type", json_post(b'["name", "lamp"]'), CLIENT_ERROR),
    Case(
        "json-as-text-plain",
        request(
            b"POST",
            b"/items",
            [b"Content-Type: text/plain", b"Content-Length: 16"],
            b'{"name": "lamp"}',
        ),
        CLIENT_ERROR,
    ),
    # --- Content-Length ---
    Case(
        "content-length-shorter-than-body",
        request(
            b"POST",
            b"/items",
            [b"Content-Type: application/json", b"Content-Length: 5"],
            b'{"name": "lamp"}',
        ),
        CLIENT_ERROR,
    ),
    Case(
        "content-length-longer-than-body",
        request(
            b"POST",
            b"/items",
            [b"Content-Type: application/json", b"Content-Length: 500"],
            b'{"name": "lamp"}',
        ),
        CLIENT_ERROR,
        extra={"half_close": True},
        by_uvicorn=None,
    ),
    Case(
        "content-length-negative",
        request(b"POST", b"/items", [b"Content-Length: -1"]),
        CLIENT_ERROR,
        by_uvicorn=True,
    ),
    Case(
        "content-length-not-a-number",
        request(b"POST", b"/items", [b"Content-Length: abc"]),
        CLIENT_ERROR,
        by_uvicorn=True,
    ),
    Case(
        "content-length-overflow",
        request(b"POST", b"/items", [b"Content-Length: 99999999999999999999999"]),
        CLIENT_ERROR,
        by_uvicorn=True,
    ),
    Case(
        "content-length-twice-different",
        request(b"POST", b"/items", [b"Content-Length: 2", b"Content-Length: 3"], b"{}"),
        CLIENT_ERROR,
        by_uvicorn=True,
    ),
    Case("content-length-on-get", request(headers=[b"Content-Length: 4"], body=b"abcd"), OK),
    # --- Transfer-Encoding ---
    Case(
        "te-chunked-valid",
        request(
            b"POST",
            b"/items",
            [b"Content-Type: application/json", b"Transfer-Encoding: chunked"],
            b'10\r\n{"name": "lamp"}\r\n0\r\n\r\n',
        ),
        OK,
    ),
    Case(
        "te-chunked-bad-size",
        request(
            b"POST",
            b"/items",
            [b"Content-Type: application/json", b"Transfer-Encoding: chunked"],
            b"zz\r\nabc\r\n0\r\n\r\n",
        ),
        CLIENT_ERROR,
        by_uvicorn=True,
    ),
    Case(
        "te-and-content-length",
        request(
            b"POST",
            b"/items",
            [
                b"Content-Type: application/json",
                b"Content-Length: 4",
                b"Transfer-Encoding: chunked",
            ],
            b"0\r\n\r\n",
        ),
        CLIENT_ERROR,
        by_uvicorn=True,
    ),
    Case(
        "te-unknown-coding",
        request(b"POST", b"/items", [b"Transfer-Encoding: xchunked"], b"abc"),
        CLIENT_ERROR,
        by_uvicorn=True,
    ),
    Case(
        "te-chunked-not-last",
        request(b"POST", b"/items", [b"Transfer-Encoding: chunked, gzip"], b"0\r\n\r\n"),
        CLIENT_ERROR,
        by_uvicorn=True,
    ),
    Case(
        "te-gzip-chunked",
        request(
            b"POST",
            b"/items",
            [b"Content-Type: application/json", b"Transfer-Encoding: gzip, chunked"],
            b"3\r\nabc\r\n0\r\n\r\n",
        ),
        CLIENT_ERROR,
    ),
    Case(
        "te-chunked-twice",
        request(
            b"POST",
            b"/items",
            [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
            b"0\r\n\r\n",
        ),
        CLIENT_ERROR,
        by_uvicorn=True,
    ),
    Case(
        "te-chunked-truncated",
        request(
            b"POST",
            b"/items",
            [b"Content-Type: application/json", b"Transfer-Encoding: chunked"],
            b'ff\r\n{"na',
        ),
        CLIENT_ERROR,
        extra={"half_close": True},
        by_uvicorn=None,
    ),
    # --- upgrades ---
    Case(
        "upgrade-h2c",
        request(
            headers=[
                b"Connection: Upgrade, HTTP2-Settings",
                b"Upgrade: h2c",
                b"HTTP2-Settings: AAMAAABkAAQAAP__",
            ]
        ),
        OK,
    ),
    Case(
        "upgrade-websocket-no-key",
        request(target=b"/search?q=a", headers=[b"Upgrade: websocket", b"Connection: Upgrade"]),
        OK,  # no Sec-WebSocket-Key: uvicorn serves it as the plain GET it also is
    ),
]


def exchange(server: ApiServer, case: Case, timeout: float = 10.0) -> Response | None:
    """Send the case's bytes, read until the server closes; None if it sent nothing."""
    with socket.create_connection(
        (server.host, server.port),
        timeout=timeout,
        source_address=(case.source, 0) if case.source else None,
    ) as sock:
        # The server may answer and close before reading everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(case.raw)
        if case.extra.get("half_close"):
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", lines[0])
    assert match, f"not an HTTP response: {data[:200]!r}"
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower().decode("latin-1"), value.strip().decode("latin-1")))
    return Response(int(match.group(1)), headers, body)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    api = ApiServer(
        {
            "APP_ALLOWED_ORIGINS": "https://app.example.com",
            "APP_TRUSTED_HOSTS": "api.example.com",
            "FORWARDED_ALLOW_IPS": "127.0.10.0/24",
            "APP_RATE_LIMIT_DEFAULT": "1000000/minute",
            "APP_RATE_LIMIT_SEARCH": "1000000/minute",
            "APP_LOG_LEVEL": "info",
        }
    )
    api.start(log_dir=tmp_path_factory.mktemp("hostile"))
    yield api
    api.stop()


def server_errors_recorded(server: ApiServer) -> list[str]:
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    return [
        line
        for line in metrics.splitlines()
        if line.startswith("gatehouse_http_requests_total") and re.search(r'status="5\d\d"', line)
    ]


def _params() -> list[object]:
    params = []
    for case in CASES:
        marks = []
        if "xfail" in case.extra:
            marks.append(pytest.mark.xfail(strict=True, reason=str(case.extra["xfail"])))
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


@pytest.mark.parametrize("case", _params())
def test_hostile_request(server: ApiServer, case: Case) -> None:
    log_before = len(server.log())
    errors_before = server_errors_recorded(server)
    response = exchange(server, case)
    sent = case.raw[:300]

    assert response is not None or case.extra.get("half_close"), f"no response to {sent!r}"
    if response is not None:
        assert response.status < 500, f"{response.status} to {sent!r}: {response.body[:300]!r}"
        allowed = case.expect
        if case.extra.get("or_ok"):
            allowed = range(200, 500)
        assert response.status in allowed, (
            f"{response.status} (expected {allowed.start}..{allowed.stop - 1}) to {sent!r}: "
            f"{response.body[:300]!r}"
        )
        if case.by_uvicorn is True:
            assert response.from_uvicorn, f"expected uvicorn's own 400, got {response}"
        elif case.by_uvicorn is False:
            assert not response.from_uvicorn, f"uvicorn answered, not the app: {response.body!r}"
        if not response.from_uvicorn:
            assert response.header("x-request-id"), f"a response without the edge: {response}"
            for name, value in SECURITY_HEADERS.items():
                assert response.header(name) == value, (
                    f"{name} on {response.status}: {response.headers}"
                )
            assert response.header("server") is None
        if case.check is not None:
            case.check(response)

    # The server is still up, recorded no 5xx and logged no unhandled exception.
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    assert server_errors_recorded(server) == errors_before, "the app recorded a 5xx"
    new_log = server.log()[log_before:]
    assert "unhandled exception" not in new_log and "Traceback" not in new_log, new_log[-3000:]


def test_which_cases_uvicorn_answers(server: ApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    """A summary for the reader (-s): the cases the application never saw."""
    answered_by_uvicorn = []
    for case in CASES:
        response = exchange(server, case)
        if response is not None and response.from_uvicorn:
            answered_by_uvicorn.append(case.name)
    with capsys.disabled():
        print(f"\nanswered by uvicorn before the app: {', '.join(answered_by_uvicorn)}")
    assert "header-without-colon" in answered_by_uvicorn
