"""The command line: flags, their checks, and the ``Options`` one probe run acts on.

Everything here is pure (no network): a bad command line becomes a ``UsageError``
before anything is sent, so ``__main__`` can exit 2 with one line.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


class UsageError(ValueError):
    """A command line the probe cannot act on."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent on the request line

    @property
    def base(self) -> str:
        return f"{self.scheme}://{netloc(self.host, self.port)}"


@dataclass
class Options:
    target: Target
    origin: str
    method: str
    data: bytes | None
    headers: list[tuple[str, str]]
    host_header: str | None
    timeout: float
    credentials: bool
    preflight: bool
    preflight_method: str
    preflight_headers: list[str]
    repeat: int
    concurrency: int
    duration: float | None
    interval: float
    whoami: bool
    wait_reachable: float
    insecure: bool
    expect: str | None
    expect_status: list[tuple[int, int | None]]
    expect_client_ip: str | None
    expect_security_headers: bool
    as_json: bool


def netloc(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets as URLs and Host headers need."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_url(raw: str) -> Target:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url {raw!r}: expected http(s)://host[:port]/path")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise UsageError(f"--url {raw!r}: invalid port") from error
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(parts.scheme, parts.hostname, port, path)


def parse_origin(raw: str) -> str:
    parts = urlsplit(raw)
    if raw != "null" and (
        parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query
    ):
        raise UsageError(f"--origin {raw!r}: expected scheme://host[:port] with no path")
    return raw


def parse_header(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition(":")
    if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
        raise UsageError(f"--header {raw!r}: expected 'Name: value'")
    return name.strip(), value.strip()


def parse_expect_status(raw: str) -> tuple[int, int | None]:
    code, sep, count = raw.partition("=")
    try:
        status = int(code)
        expected = int(count) if sep else None
    except ValueError:
        raise UsageError(f"--expect-status {raw!r}: expected CODE or CODE=COUNT") from None
    if not 100 <= status <= 599 or (expected is not None and expected < 0):
        raise UsageError(f"--expect-status {raw!r}: expected CODE or CODE=COUNT")
    return status, expected


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gatehouse.probe",
        description=(
            "Check an endpoint from ORIGIN the way a browser would: CORS verdict (preflight "
            "and request), security headers, rate-limit headers, and the client IP the "
            "service saw (GET /whoami on the same base URL)."
        ),
        epilog=(
            "exit status: 0 expectations met, 1 an expectation failed, 2 usage error, "
            "3 endpoint unreachable"
        ),
    )
    parser.add_argument("--url", required=True, help="the endpoint, e.g. http://api/search?q=x")
    parser.add_argument("--origin", required=True, help="the page's origin, scheme://host[:port]")
    parser.add_argument("--method", default="GET", help="method of the request (default GET)")
    parser.add_argument("--data", help="request body; sent as application/json unless a "
                        "Content-Type --header is given")  # fmt: skip
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="extra request header (repeatable); also sent to /whoami")  # fmt: skip
    parser.add_argument("--host-header", help="Host header to send (default: from --url)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request (5)")
    parser.add_argument("--insecure", action="store_true", help="skip TLS certificate checks")
    parser.add_argument(
        "--credentials",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="judge as a credentialed fetch (credentials: 'include'; the default), "
        "which needs an exact Access-Control-Allow-Origin and Allow-Credentials: true",
    )
    parser.add_argument("--preflight", action=argparse.BooleanOptionalAction, default=True,
                        help="send the preflight (default: yes)")  # fmt: skip
    parser.add_argument("--preflight-method", help="Access-Control-Request-Method "
                        "(default: --method)")  # fmt: skip
    parser.add_argument("--preflight-headers", default="",
                        help="Access-Control-Request-Headers, comma-separated; each must be "
                        "allowed")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="send the request N times (default 1)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=1, metavar="C",
                        help="with --repeat/--duration: C requests in flight at once")  # fmt: skip
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="send requests until SECONDS have passed (or SIGTERM) "
                        "instead of --repeat")  # fmt: skip
    parser.add_argument("--interval", type=float, default=0.0, metavar="SECONDS",
                        help="pause per worker between requests (default 0)")  # fmt: skip
    parser.add_argument("--whoami", action=argparse.BooleanOptionalAction, default=True,
                        help="ask GET /whoami for the client IP (default: yes)")  # fmt: skip
    parser.add_argument("--wait-reachable", type=float, default=0.0, metavar="SECONDS",
                        help="first retry the TCP connection for up to SECONDS (a new pod's "
                        "address may reach a NetworkPolicy agent's rules after the pod starts)")  # fmt: skip
    parser.add_argument("--json", dest="as_json", action="store_true", help="print JSON")
    parser.add_argument("--expect", choices=("allowed", "refused"), help="CORS verdict")
    parser.add_argument("--expect-status", action="append", default=[], metavar="CODE[=COUNT]",
                        help="every response has CODE, or exactly COUNT responses have it "
                        "(repeatable)")  # fmt: skip
    parser.add_argument("--expect-client-ip", metavar="IP|self",
                        help="the client IP /whoami reports; 'self' = the address this "
                        "probe connected from")  # fmt: skip
    parser.add_argument("--expect-security-headers", action="store_true",
                        help="every response carries every security header and none of the "
                        "forbidden ones")  # fmt: skip
    return parser


def parse_options(argv: Sequence[str] | None) -> Options:
    args = build_parser().parse_args(argv)
    target = parse_url(args.url)
    method = args.method.upper()
    if args.repeat < 1 or args.concurrency < 1:
        raise UsageError("--repeat and --concurrency must be at least 1")
    if args.timeout <= 0 or args.interval < 0 or (args.duration is not None and args.duration <= 0):
        raise UsageError("--timeout and --duration must be positive, --interval not negative")
    if args.wait_reachable < 0:
        raise UsageError("--wait-reachable must not be negative")
    if args.expect_client_ip not in (None, "self"):
        try:
            ipaddress.ip_address(args.expect_client_ip)
        except ValueError:
            raise UsageError(f"--expect-client-ip {args.expect_client_ip!r}: not an IP") from None
    headers = [parse_header(raw) for raw in args.header]
    if any(name.lower() in ("origin", "host") for name, _ in headers):
        raise UsageError("use --origin and --host-header, not --header, for Origin and Host")
    data = args.data.encode() if args.data is not None else None
    if data is not None and not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return Options(
        target=target,
        origin=parse_origin(args.origin),
        method=method,
        data=data,
        headers=headers,
        host_header=args.host_header,
        timeout=args.timeout,
        credentials=args.credentials,
        preflight=args.preflight,
        preflight_method=(args.preflight_method or method).upper(),
        preflight_headers=[
            h.strip().lower() for h in args.preflight_headers.split(",") if h.strip()
        ],
        repeat=args.repeat,
        concurrency=args.concurrency,
        duration=args.duration,
        interval=args.interval,
        whoami=args.whoami,
        wait_reachable=args.wait_reachable,
        insecure=args.insecure,
        expect=args.expect,
        expect_status=[parse_expect_status(raw) for raw in args.expect_status],
        expect_client_ip=args.expect_client_ip,
        expect_security_headers=args.expect_security_headers,
        as_json=args.as_json,
    )
