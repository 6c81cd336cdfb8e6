"""Hostile requests over raw sockets to a real ``python -m gatehouse``.

Nothing on the client side normalises what is sent: every case is the exact bytes on
the wire. For each: the status is exactly the one the table says (a 4xx, or a 2xx where
the request is in fact acceptable; never a 5xx), or no response at all where the table
says None; the server stays up; the application recorded no 5xx and logged no unhandled
exception; and every response carries the security headers. Some requests never reach
the application: the server answers them itself (uvicorn's 400 ``Invalid HTTP request
received.`` for an unparsable one, Gatehouse's protocol's 431 for a head over the
limit), with no ``x-request-id`` but the same security headers, which are asserted on
every response. Where the status is not the obvious one, the case says why.
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

# An id the edge made: none of the cases sends one it keeps (plain, at most 128 characters).
MADE_REQUEST_ID = re.compile(r"[0-9a-f]{26}")

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "cache-control": "no-store",
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
    def from_server(self) -> bool:
        """The server's own answer (uvicorn's 400, the protocol's 431): the app never saw it."""
        return self.header("x-request-id") is None


@dataclass
class Case:
    name: str
    raw: bytes
    expect: int | None  # the exact status; None: the connection closes with no response
    source: str | None = None  # local address to connect from (proxy trust)
    check: Callable[[Response], None] | None = None
    # True: the server must answer (the app never sees it); False: the app must; None: either.
    by_server: bool | None = False
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


def allow_is(expected: str) -> Callable[[Response], None]:
    """A 405 must say which methods the resource takes (RFC 9110 15.5.6)."""

    def check(response: Response) -> None:
        assert response.header("allow") == expected, response.headers

    return check


XFF_1000 = b", ".join(b"10.%d.%d.1" % (i // 250, i % 250) for i in range(1000))
XFF_GARBAGE = b"garbage, ;;;, <script>, 999.999.999.999, , ::::, 1.2.3.4:80, [::1]:443, unknown"
XFF_IPV6 = b"2001:db8::1, fe80::1%eth0, ::ffff:10.0.0.1, 2001:db8::2"

CASES: list[Case] = [
    # --- a sane baseline ---
    Case("baseline-search", request(), 200),
    # --- header sizes and counts ---
    Case("header-value-8kb", request(headers=[b"X-Junk: " + b"a" * 8_000]), 200),
    # Over APP_MAX_HEADER_BYTES (32 KiB): refused before the parser buffers it.
    Case(
        "header-value-100kb",
        request(headers=[b"X-Junk: " + b"a" * 100_000]),
        431,
        by_server=True,
    ),
    Case("headers-1000", request(headers=[b"X-H-%d: v" % i for i in range(1000)]), 200),
    Case("headers-1000-same-name", request(headers=[b"X-Same: v"] * 1000), 200),
    # An id over 128 characters, or one with markup, is replaced, not refused.
    Case("request-id-10kb", request(headers=[b"X-Request-ID: " + b"r" * 10_000]), 200),
    Case(
        "request-id-markup",
        request(headers=[b"X-Request-ID: <script>alert('x')</script>\xff"]),
        200,
    ),
    # httptools refuses a DEL byte in a field value: uvicorn's 400.
    Case("header-value-del-byte", request(headers=[b"X-Request-ID: a\x7fb"]), 400, by_server=True),
    # --- malformed header lines: httptools refuses each head, uvicorn's 400 ---
    Case("header-without-colon", request(headers=[b"NoColonHere"]), 400, by_server=True),
    Case("header-name-with-space", request(headers=[b"X Bad: 1"]), 400, by_server=True),
    Case("header-space-before-colon", request(headers=[b"X-Bad : 1"]), 400, by_server=True),
    Case("header-name-non-ascii", request(headers=[b"X-\xff: 1"]), 400, by_server=True),
    Case("header-value-nul", request(headers=[b"X-Bad: a\x00b"]), 400, by_server=True),
    Case(
        "header-value-control-bytes", request(headers=[b"X-Bad: \x01\x02\x1b"]), 400, by_server=True
    ),
    # The exception: obs-text (RFC 9110 5.5) is allowed in a field value.
    Case("header-value-latin1", request(headers=[b"X-Latin: caf\xe9"]), 200),
    Case("header-obs-fold", request(headers=[b"X-Folded: a", b"  b"]), 400, by_server=True),
    Case(
        "bare-lf-line-endings",
        b"GET /search?q=lamp HTTP/1.1\nHost: api.example.com\nConnection: close\n\n",
        400,
        by_server=True,
    ),
    # --- X-Forwarded-For ---
    Case(
        "xff-1000-hops-untrusted-peer",
        request(b"GET", b"/whoami", [b"X-Forwarded-For: " + XFF_1000]),
        200,
        check=client_ip_is("127.0.0.1"),
    ),
    Case(
        "xff-1000-hops-trusted-peer",
        request(b"GET", b"/whoami", [b"X-Forwarded-For: " + XFF_1000]),
        200,
        source=TRUSTED_PEER,
        check=client_ip_is("10.3.249.1"),
    ),
    Case(
        "xff-garbage-untrusted-peer",
        request(b"GET", b"/whoami", [b"X-Forwarded-For: " + XFF_GARBAGE]),
        200,
        check=client_ip_is("127.0.0.1"),
    ),
    Case(
        "xff-garbage-trusted-peer",
        request(b"GET", b"/search?q=lamp", [b"X-Forwarded-For: " + XFF_GARBAGE]),
        200,
        source=TRUSTED_PEER,
    ),
    Case(
        "xff-ipv6-trusted-peer",
        request(b"GET", b"/whoami", [b"X-Forwarded-For: " + XFF_IPV6]),
        200,
        source=TRUSTED_PEER,
        check=client_ip_is("2001:db8::2"),
    ),
    Case(
        "xff-ipv6-untrusted-peer",
        request(b"GET", b"/whoami", [b"X-Forwarded-For: " + XFF_IPV6]),
        200,
        check=client_ip_is("127.0.0.1"),
    ),
    Case(
        "xff-empty-trusted-peer",
        request(b"GET", b"/search?q=lamp", [b"X-Forwarded-For: "]),
        200,
        source=TRUSTED_PEER,
    ),
    Case(
        "xff-100kb-trusted-peer",
        request(b"GET", b"/search?q=lamp", [b"X-Forwarded-For: " + b"1.2.3.4," * 12_500]),
        431,
        source=TRUSTED_PEER,
        by_server=True,
    ),
    Case(
        "xff-20kb-trusted-peer",
        request(b"GET", b"/search?q=lamp", [b"X-Forwarded-For: " + b"1.2.3.4," * 2_500]),
        200,
        source=TRUSTED_PEER,
    ),
    Case(
        "xfp-garbage-trusted-peer",
        request(b"GET", b"/whoami", [b"X-Forwarded-Proto: javascript"]),
        200,
        source=TRUSTED_PEER,
    ),
    Case(
        "xff-many-header-lines-trusted-peer",
        request(b"GET", b"/search?q=lamp", [b"X-Forwarded-For: 10.0.0.%d" % i for i in range(200)]),
        200,
        source=TRUSTED_PEER,
    ),
    # --- Origin: one, or the layers could judge different ones ---
    # Two Origin fields: the single-header rule's 400, whichever comes first.
    Case(
        "origin-two-refused-first",
        json_post(
            b'{"name": "x"}',
            [b"Origin: https://evil.example", b"Origin: https://app.example.com"],
        ),
        400,
    ),
    Case(
        "origin-two-allowed-first",
        json_post(
            b'{"name": "x"}',
            [b"Origin: https://app.example.com", b"Origin: https://evil.example"],
        ),
        400,
    ),
    Case(
        "origin-one-allowed",
        json_post(b'{"name": "x"}', [b"Origin: https://app.example.com"]),
        201,
    ),
    # --- Host ---
    # Every refused Host is the host allowlist's 400 (trusted_hosts), or for two
    # Host fields the single-header rule's 400 (RFC 9112 3.2), never a 404 or a redirect.
    Case("host-empty", request(host=b""), 400),
    Case("host-missing", request(host=None), 400),
    # HTTP/1.0 needs no Host, but a request without one names no host the allowlist has.
    Case("host-missing-http10", request(host=None, version=b"HTTP/1.0"), 400),
    Case("host-foreign", request(host=b"evil.example"), 400),
    Case("host-allowed-upper-case-with-port", request(host=b"API.EXAMPLE.COM:8443"), 200),
    Case(
        "host-two-first-foreign",
        request(host=b"evil.example", headers=[b"Host: api.example.com"]),
        400,
    ),
    Case(
        "host-two-first-allowed",
        request(headers=[b"Host: evil.example"]),
        400,
    ),
    Case("host-very-long", request(host=b"a" * 10_000 + b".example.com"), 400),
    Case("host-with-userinfo", request(host=b"user:pw@api.example.com"), 400),
    Case("host-with-path", request(host=b"api.example.com/evil"), 400),
    Case("host-non-ascii", request(host=b"\xe4pi.example.com"), 400),
    # The allowlist compares names exactly: "api.example.com." is not on it.
    Case("host-trailing-dot", request(host=b"api.example.com."), 400),
    Case("host-ipv6-literal", request(host=b"[::1]:8000"), 400),
    Case(
        "host-port-with-userinfo-of-another-host",
        request(host=b"api.example.com:@evil.example"),
        400,
    ),
    # --- query strings and paths ---
    # A 100 kB request target is over the head limit: the server's 431.
    Case(
        "query-100kb-one-value",
        request(target=b"/search?q=" + b"a" * 100_000),
        431,
        by_server=True,
    ),
    Case(
        "query-100kb-many-pairs",
        request(target=b"/whoami?" + b"a=1&" * 25_000),
        431,
        by_server=True,
    ),
    # Under the head limit, so the route sees it: q is at most 200 characters.
    Case("query-30kb-one-value", request(target=b"/search?q=" + b"a" * 30_000), 422),
    Case("query-30kb-many-pairs", request(target=b"/whoami?" + b"a=1&" * 7_500), 200),
    # A query that does not decode cleanly is still text: q is whatever it decodes to.
    Case("query-bad-percent", request(target=b"/search?q=%zz%%41%"), 200),
    Case("query-percent-invalid-utf8", request(target=b"/search?q=%ff%fe"), 200),
    Case("query-percent-surrogate", request(target=b"/search?q=%ed%a0%80"), 200),
    # uvicorn percent-decodes the path leniently (urllib's unquote: a bad escape stays as
    # it is, bad UTF-8 becomes U+FFFD), so these paths still match /items/{item_id} and
    # the segment fails the integer check: FastAPI's 422, not a 400 or a 404.
    Case("path-bad-percent", request(target=b"/items/%zz"), 422),
    Case("path-percent-invalid-utf8", request(target=b"/items/%ff"), 422),
    Case("path-percent-nul", request(target=b"/items/%00"), 422),
    # The same lenient decoding keeps "/%" as it is: a path no route has, so the
    # router's 404 (the server does not check percent-encodings, so no 400).
    Case("path-lone-percent", request(target=b"/%"), 404),
    # httptools refuses raw bytes over 0x7f in the target: uvicorn's 400.
    Case("path-raw-non-ascii", request(target=b"/items/\xff\xfe"), 400, by_server=True),
    # Dot segments are not resolved, and neither "/../../etc/passwd" nor "/etc/passwd" is
    # a route (nothing is served from files): 404.
    Case("path-dot-segments", request(target=b"/../../etc/passwd"), 404),
    Case(
        "path-100kb",
        request(target=b"/items/" + b"1" * 100_000),
        431,
        by_server=True,
    ),
    # The route matches any segment; an integer of 30,000 (or 5,000) digits is over
    # pydantic's size limit for one (int_parsing_size): a validation error, 422.
    Case("path-30kb-digits", request(target=b"/items/" + b"1" * 30_000), 422),
    Case("path-huge-negative-id", request(target=b"/items/-" + b"9" * 5_000), 422),
    # RFC 9112 3.2.2: an origin server MUST ignore Host for an absolute-form target and use
    # the target's authority, evil.example, which the allowlist refuses. The server's
    # protocol makes the authority the Host field, so the host check judges it (400).
    Case(
        "target-absolute-form",
        request(target=b"http://evil.example/search?q=a"),
        400,
    ),
    # ...and the other way round: an allowed authority wins over a foreign Host field.
    Case(
        "target-absolute-form-allowed-authority",
        request(target=b"http://api.example.com/search?q=a", host=b"evil.example"),
        200,
    ),
    # "*" is a valid target for OPTIONS (RFC 9112 3.2.4); no route answers for the server
    # as a whole, so the router's 404. Not a preflight: there is no Origin.
    Case("target-asterisk", request(b"OPTIONS", b"*"), 404),
    Case("target-no-slash", request(target=b"search?q=a"), 400, by_server=True),
    # --- methods ---
    # A method the route does not take is the router's 405, with the methods it does.
    Case("method-propfind", request(b"PROPFIND", b"/items"), 405, check=allow_is("POST")),
    Case("method-trace", request(b"TRACE", b"/search?q=a"), 405, check=allow_is("GET")),
    # httptools will not parse these request lines (CONNECT with an authority target, a
    # method name it does not know): uvicorn's 400, no tunnel and no app involved.
    Case("method-connect", request(b"CONNECT", b"api.example.com:443"), 400, by_server=True),
    Case("method-lowercase-get", request(b"get"), 400, by_server=True),
    Case("method-100-char-token", request(b"X" * 100), 400, by_server=True),
    # Its Allow is not asserted: it says "GET" only, though the path also takes PUT and
    # DELETE (Starlette's router answers from the first route whose path matched).
    Case("method-patch", request(b"PATCH", b"/items/1"), 405),
    # FastAPI routes HEAD nowhere (Starlette's Route would add it to GET routes): 405.
    Case("method-head", request(b"HEAD"), 405, check=allow_is("GET")),
    # Without Origin and Access-Control-Request-Method this is no preflight: CORS lets it
    # through, and the route takes POST only.
    Case(
        "method-options-without-origin",
        request(b"OPTIONS", b"/items"),
        405,
        check=allow_is("POST"),
    ),
    # httptools parses an "HTTP/2.0" request line like HTTP/1.1: a fine request.
    Case("version-http-2", request(version=b"HTTP/2.0"), 200),
    Case("version-garbage", request(version=b"HTTP/9.x"), 400, by_server=True),
    Case(
        "tls-client-hello",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
        400,
        by_server=True,
    ),
    # --- JSON bodies to POST /items ---
    Case("json-valid", json_post(b'{"name": "lamp"}'), 201),
    # FastAPI reports a JSON syntax error (JSONDecodeError) as a validation error: 422.
    Case("json-malformed", json_post(b'{"name": '), 422),
    # Any other failure of the JSON parser (RecursionError, the int() digit limit,
    # UnicodeDecodeError) is FastAPI's 400 "There was an error parsing the body".
    Case("json-deep-arrays", json_post(b"[" * 100_000), 400),
    Case("json-deep-objects", json_post(b'{"a":' * 50_000), 400),
    # Over APP_MAX_BODY_BYTES (1 MiB): 413 from the Content-Length, before any is read.
    Case(
        "json-huge-5mb",
        json_post(b'{"name": "' + b"a" * 5_000_000 + b'"}'),
        413,
    ),
    Case(
        "json-huge-integer",
        json_post(b'{"name": "a", "quantity": ' + b"9" * 5_000 + b"}"),
        400,
    ),
    # Python's JSON parser takes NaN; quantity must be a finite number: 422.
    Case("json-nan", json_post(b'{"name": "a", "quantity": NaN}'), 422),
    Case("json-invalid-utf8", json_post(b'{"name": "\xff\xfe"}'), 400),
    # pydantic refuses the lone surrogate as a string: 422 (never a 500 on the way out).
    Case("json-lone-surrogate-escape", json_post(b'{"name": "\\ud800"}'), 422),
    Case("json-wrong-type", json_post(b'["name", "lamp"]'), 422),
    # Not declared JSON, FastAPI validates the raw bytes, which are no object: 422 (nothing
    # in Gatehouse checks Content-Type, so no 415).
    Case(
        "json-as-text-plain",
        request(
            b"POST",
            b"/items",
            [b"Content-Type: text/plain", b"Content-Length: 16"],
            b'{"name": "lamp"}',
        ),
        422,
    ),
    # --- Content-Length ---
    # The body is the first 5 bytes, '{"nam', which is no JSON: 422 as json-malformed.
    Case(
        "content-length-shorter-than-body",
        request(
            b"POST",
            b"/items",
            [b"Content-Type: application/json", b"Content-Length: 5"],
            b'{"name": "lamp"}',
        ),
        422,
    ),
    # The client stops sending (half-close) before the body is complete: uvicorn closes on
    # end of input before the app can answer. RFC 9112 8 makes an error response a MAY;
    # the exact outcome today is none at all.
    Case(
        "content-length-longer-than-body",
        request(
            b"POST",
            b"/items",
            [b"Content-Type: application/json", b"Content-Length: 500"],
            b'{"name": "lamp"}',
        ),
        None,
        extra={"half_close": True},
        by_server=None,
    ),
    # From here to content-length-twice-different, httptools refuses the framing: 400.
    Case(
        "content-length-negative",
        request(b"POST", b"/items", [b"Content-Length: -1"]),
        400,
        by_server=True,
    ),
    Case(
        "content-length-not-a-number",
        request(b"POST", b"/items", [b"Content-Length: abc"]),
        400,
        by_server=True,
    ),
    Case(
        "content-length-overflow",
        request(b"POST", b"/items", [b"Content-Length: 99999999999999999999999"]),
        400,
        by_server=True,
    ),
    Case(
        "content-length-twice-different",
        request(b"POST", b"/items", [b"Content-Length: 2", b"Content-Length: 3"], b"{}"),
        400,
        by_server=True,
    ),
    # A body on a GET has no meaning (RFC 9110 9.3.1); the route ignores it.
    Case("content-length-on-get", request(headers=[b"Content-Length: 4"], body=b"abcd"), 200),
    # --- Transfer-Encoding ---
    Case(
        "te-chunked-valid",
        request(
            b"POST",
            b"/items",
            [b"Content-Type: application/json", b"Transfer-Encoding: chunked"],
            b'10\r\n{"name": "lamp"}\r\n0\r\n\r\n',
        ),
        201,
    ),
    # From here to te-chunked-not-last, httptools refuses the framing: uvicorn's 400
    # (RFC 9112 6.3: chunked not last must be a 400; next to Content-Length it may be).
    Case(
        "te-chunked-bad-size",
        request(
            b"POST",
            b"/items",
            [b"Content-Type: application/json", b"Transfer-Encoding: chunked"],
            b"zz\r\nabc\r\n0\r\n\r\n",
        ),
        400,
        by_server=True,
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
        400,
        by_server=True,
    ),
    Case(
        "te-unknown-coding",
        request(b"POST", b"/items", [b"Transfer-Encoding: xchunked"], b"abc"),
        400,
        by_server=True,
    ),
    Case(
        "te-chunked-not-last",
        request(b"POST", b"/items", [b"Transfer-Encoding: chunked, gzip"], b"0\r\n\r\n"),
        400,
        by_server=True,
    ),
    # Nothing here decodes gzip: the service must refuse the coding, as it refuses
    # xchunked, rather than read the gzip-coded content as if it were plain.
    Case(
        "te-gzip-chunked",
        request(
            b"POST",
            b"/items",
            [b"Content-Type: application/json", b"Transfer-Encoding: gzip, chunked"],
            b"3\r\nabc\r\n0\r\n\r\n",
        ),
        400,
        by_server=False,  # RequestBodyMiddleware: only chunked is decoded
    ),
    Case(
        "te-chunked-twice",
        request(
            b"POST",
            b"/items",
            [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
            b"0\r\n\r\n",
        ),
        400,
        by_server=True,
    ),
    # Half-closed before the chunk ends: no response, as content-length-longer-than-body.
    Case(
        "te-chunked-truncated",
        request(
            b"POST",
            b"/items",
            [b"Content-Type: application/json", b"Transfer-Encoding: chunked"],
            b'ff\r\n{"na',
        ),
        None,
        extra={"half_close": True},
        by_server=None,
    ),
    # --- upgrades ---
    # Served with ws="none" and no h2c: an Upgrade is ignored, the GET answered as such.
    Case(
        "upgrade-h2c",
        request(
            headers=[
                b"Connection: Upgrade, HTTP2-Settings",
                b"Upgrade: h2c",
                b"HTTP2-Settings: AAMAAABkAAQAAP__",
            ]
        ),
        200,
    ),
    Case(
        "upgrade-websocket-no-key",
        request(target=b"/search?q=a", headers=[b"Upgrade: websocket", b"Connection: Upgrade"]),
        200,  # no Sec-WebSocket-Key: uvicorn serves it as the plain GET it also is
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

    if case.expect is None:
        assert response is None, f"expected no response to {sent!r}, got {response}"
    else:
        assert response is not None, f"no response to {sent!r}"
        assert response.status == case.expect, (
            f"{response.status} (expected {case.expect}) to {sent!r}: {response.body[:300]!r}"
        )
    if response is not None:
        if case.by_server is True:
            assert response.from_server, f"expected the server's own answer, got {response}"
        elif case.by_server is False:
            assert not response.from_server, f"the server answered, not the app: {response.body!r}"
        if not response.from_server:
            request_id = response.header("x-request-id") or ""
            assert MADE_REQUEST_ID.fullmatch(request_id), f"x-request-id {request_id!r}"
        # Every response, the server's own included, carries the security headers.
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


def test_which_cases_the_server_answers(
    server: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A summary for the reader (-s): the cases the application never saw, which are
    exactly those the table says the server answers."""
    answered_by_server = []
    for case in CASES:
        response = exchange(server, case)
        if response is not None and response.from_server:
            answered_by_server.append(case.name)
    with capsys.disabled():
        print(f"\nanswered by the server before the app: {', '.join(answered_by_server)}")
    # Cases with by_server None may be answered by either; every other case as it says.
    decided = {case.name for case in CASES if case.by_server is not None}
    assert [name for name in answered_by_server if name in decided] == [
        case.name for case in CASES if case.by_server is True
    ]
