"""``python -m gatehouse.probe``: check an endpoint the way a browser on ``--origin`` would.

It sends what a page's ``fetch`` would cause: a preflight (OPTIONS with
``Access-Control-Request-Method`` / ``-Headers``) and the request itself with ``Origin``,
then applies the Fetch standard's CORS checks to both answers. It also grades the
security headers of every response, reports the rate-limit headers, and asks
``GET /whoami`` on the same base URL which client IP the service saw.

Only the standard library is used, so the probe runs in the slim API image (helm test
pods, ``kubectl run``) with nothing installed beside the service.

Exit status: 0 when every expectation given on the command line holds, 1 when one
fails, 2 for a usage error, 3 when the endpoint cannot be reached at all.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import signal
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

EXIT_OK = 0
EXIT_EXPECTATION_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

# Set by SIGTERM (a pod being deleted): the loop stops and the report is still printed.
STOP = threading.Event()

# Fetch standard: methods a preflight never has to allow, and request headers that are
# never covered by a "*" in Access-Control-Allow-Headers.
SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})
NON_WILDCARD_HEADERS = frozenset({"authorization"})

# name -> the value it must have (None: any non-empty value). Graded on every response.
REQUIRED_SECURITY_HEADERS: dict[str, str | None] = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": None,
    "content-security-policy": None,
    "cross-origin-opener-policy": None,
    "cross-origin-resource-policy": None,
    "permissions-policy": None,
    "cache-control": "no-store",
}
HSTS_HEADER = "strict-transport-security"
# Headers that advertise the implementation (OWASP secure-headers "remove" list).
FORBIDDEN_HEADERS = ("server", "x-powered-by", "powered-by", "x-generator", "x-aspnet-version")
RATE_LIMIT_HEADERS = (
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-policy",
    "ratelimit",
    "retry-after",
)
CORS_RESPONSE_HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
    "vary",
)


class UsageError(ValueError):
    """A command line the probe cannot act on."""


class Unreachable(OSError):
    """No TCP/TLS connection, or no HTTP answer, could be had from the endpoint."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent on the request line

    @property
    def base(self) -> str:
        return f"{self.scheme}://{_netloc(self.host, self.port)}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    local_ip: str | None


@dataclass
class CorsResult:
    allowed: bool
    reasons: list[str]
    headers: dict[str, str]


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


@dataclass
class Report:
    options: Options
    preflight: dict[str, Any] | None = None
    request: dict[str, Any] = field(default_factory=dict)
    status_counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    security: dict[str, Any] = field(default_factory=dict)
    rate_limit: dict[str, str] = field(default_factory=dict)
    client: dict[str, Any] = field(default_factory=dict)
    verdict: str = "refused"
    reasons: list[str] = field(default_factory=list)
    expectations: list[dict[str, Any]] = field(default_factory=list)


# -- command line ---------------------------------------------------------------------------


def _netloc(host: str, port: int) -> str:
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


def _parse_origin(raw: str) -> str:
    parts = urlsplit(raw)
    if raw != "null" and (
        parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query
    ):
        raise UsageError(f"--origin {raw!r}: expected scheme://host[:port] with no path")
    return raw


def _parse_header(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition(":")
    if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
        raise UsageError(f"--header {raw!r}: expected 'Name: value'")
    return name.strip(), value.strip()


def _parse_expect_status(raw: str) -> tuple[int, int | None]:
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
    headers = [_parse_header(raw) for raw in args.header]
    if any(name.lower() in ("origin", "host") for name, _ in headers):
        raise UsageError("use --origin and --host-header, not --header, for Origin and Host")
    data = args.data.encode() if args.data is not None else None
    if data is not None and not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return Options(
        target=target,
        origin=_parse_origin(args.origin),
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
        expect_status=[_parse_expect_status(raw) for raw in args.expect_status],
        expect_client_ip=args.expect_client_ip,
        expect_security_headers=args.expect_security_headers,
        as_json=args.as_json,
    )


# -- HTTP -------------------------------------------------------------------------------------


def wait_reachable(target: Target, seconds: float) -> bool:
    """Retry a TCP connect to ``target`` for up to ``seconds``; True once one succeeds.

    NetworkPolicy agents that program rules from the API (kube-router, for one) admit a
    new pod's address a moment after its container starts: its first connections are
    refused. A probe that means to measure the service, not that moment, waits it out.
    """
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection(
                (target.host, target.port), timeout=max(0.2, min(1.0, remaining))
            ):
                return True
        except OSError:
            if remaining <= 0.2:
                return False
            time.sleep(0.2)


def _describe(error: BaseException, timeout: float) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return f"timed out after {timeout:g} s"
    if isinstance(error, socket.gaierror):
        return f"name resolution failed ({error.strerror or error})"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, ssl.SSLError):
        return f"TLS error ({error.reason or error})"
    if isinstance(error, http.client.RemoteDisconnected):
        return "closed without an answer"
    return f"{type(error).__name__}: {error}"


def send(
    options: Options,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | None = None,
) -> Answer:
    """One request on a fresh connection (as a browser's first request would be)."""
    target = options.target
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        context = ssl.create_default_context()
        if options.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(
            target.host, target.port, timeout=options.timeout, context=context
        )
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=options.timeout)
    # http.client sends its own Host only when none is given.
    host = options.host_header or _netloc(target.host, target.port)
    all_headers = {"Host": host, "Accept": "application/json", "Connection": "close"}
    for name, value in headers:
        all_headers[name] = value
    try:
        conn.request(method, path, body=body, headers=all_headers)
        local_ip = conn.sock.getsockname()[0] if conn.sock is not None else None
        response = conn.getresponse()
        payload = response.read()
    except (OSError, http.client.HTTPException) as error:
        raise Unreachable(_describe(error, options.timeout)) from error
    finally:
        conn.close()
    merged: dict[str, str] = {}
    for name, value in response.getheaders():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return Answer(response.status, merged, payload, local_ip)


# -- judging ----------------------------------------------------------------------------------


def _tokens(value: str | None) -> set[str]:
    return {item.strip().lower() for item in (value or "").split(",") if item.strip()}


def cors_check(answer: Answer, origin: str, credentials: bool) -> list[str]:
    """The Fetch standard's CORS check: reasons it fails (empty when it passes)."""
    acao = answer.headers.get("access-control-allow-origin")
    if acao is None:
        return ["no Access-Control-Allow-Origin"]
    reasons = []
    if acao.strip() == "*":
        if credentials:
            reasons.append("Access-Control-Allow-Origin is '*' on a credentialed request")
    elif acao.strip() != origin:
        reasons.append(f"Access-Control-Allow-Origin mismatch: {acao!r} is not {origin!r}")
    if credentials and answer.headers.get("access-control-allow-credentials") != "true":
        reasons.append("Access-Control-Allow-Credentials: true missing (credentialed request)")
    return reasons


def judge_preflight(
    answer: Answer, origin: str, credentials: bool, method: str, headers: Sequence[str]
) -> list[str]:
    reasons = cors_check(answer, origin, credentials)
    if not 200 <= answer.status <= 299:
        reasons.append(f"preflight status {answer.status} is not ok (2xx)")
    methods = {m.upper() for m in _tokens(answer.headers.get("access-control-allow-methods"))}
    wildcard_methods = "*" in methods and not credentials
    if method not in methods and method not in SAFELISTED_METHODS and not wildcard_methods:
        reasons.append(f"method {method} not allowed (Access-Control-Allow-Methods: "
                       f"{answer.headers.get('access-control-allow-methods', '')!r})")  # fmt: skip
    allowed = _tokens(answer.headers.get("access-control-allow-headers"))
    wildcard_headers = "*" in allowed and not credentials
    refused = [
        name
        for name in headers
        if name not in allowed and (not wildcard_headers or name in NON_WILDCARD_HEADERS)
    ]
    if refused:
        reasons.append(f"headers {', '.join(refused)} not allowed (Access-Control-Allow-Headers: "
                       f"{answer.headers.get('access-control-allow-headers', '')!r})")  # fmt: skip
    return reasons


def grade_security_headers(answers: Sequence[Answer], https: bool) -> dict[str, Any]:
    """Union over all responses: a header counts as present only if every response had it."""
    required = dict(REQUIRED_SECURITY_HEADERS)
    if https:
        required[HSTS_HEADER] = None
    present: dict[str, str] = {}
    missing: set[str] = set()
    invalid: dict[str, str] = {}
    forbidden: dict[str, str] = {}
    for answer in answers:
        for name, expected in required.items():
            value = answer.headers.get(name)
            if not value:
                missing.add(name)
            elif expected is not None and expected.lower() not in _tokens(value):
                invalid[name] = f"{value!r} (expected {expected!r}) on a {answer.status}"
            else:
                present.setdefault(name, value)
        for name in FORBIDDEN_HEADERS:
            if name in answer.headers:
                forbidden[name] = answer.headers[name]
    if not https and any(HSTS_HEADER in a.headers for a in answers):
        invalid[HSTS_HEADER] = "sent over plain http (ignored by browsers)"
    for name in missing | set(invalid):
        present.pop(name, None)
    return {
        "present": present,
        "missing": sorted(missing),
        "invalid": invalid,
        "forbidden": forbidden,
        "ok": not missing and not invalid and not forbidden,
    }


# -- running ----------------------------------------------------------------------------------


def _request_headers(options: Options) -> list[tuple[str, str]]:
    return [("Origin", options.origin), *options.headers]


def run_preflight(options: Options) -> dict[str, Any]:
    headers = [
        ("Origin", options.origin),
        ("Access-Control-Request-Method", options.preflight_method),
    ]
    if options.preflight_headers:
        headers.append(("Access-Control-Request-Headers", ",".join(options.preflight_headers)))
    # A browser sends no credentials and none of the page's headers on a preflight.
    answer = send(options, "OPTIONS", options.target.path, headers)
    reasons = judge_preflight(
        answer, options.origin, options.credentials, options.preflight_method,
        options.preflight_headers,
    )  # fmt: skip
    return {
        "method": options.preflight_method,
        "request_headers": options.preflight_headers,
        "status": answer.status,
        "allowed": not reasons,
        "reasons": reasons,
        "headers": {k: v for k, v in answer.headers.items() if k in CORS_RESPONSE_HEADERS},
        "answer": answer,
    }


class _Loop:
    """Sends the request repeatedly from C threads; stops on count, deadline or SIGTERM."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.lock = threading.Lock()
        self.remaining = options.repeat
        self.deadline = (
            time.monotonic() + options.duration if options.duration is not None else None
        )
        self.answers: list[Answer] = []
        self.errors: Counter[str] = Counter()

    def _claim(self) -> bool:
        if STOP.is_set():
            return False
        if self.deadline is not None:
            return time.monotonic() < self.deadline
        with self.lock:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            return True

    def worker(self) -> None:
        options = self.options
        while self._claim():
            try:
                answer = send(
                    options, options.method, options.target.path,
                    _request_headers(options), options.data,
                )  # fmt: skip
            except Unreachable as error:
                with self.lock:
                    self.errors[str(error)] += 1
            else:
                with self.lock:
                    self.answers.append(answer)
            if options.interval:
                STOP.wait(options.interval)

    def run(self) -> None:
        workers = self.options.concurrency
        if self.options.duration is None:
            workers = min(workers, self.options.repeat)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in range(workers):
                pool.submit(self.worker)


def run_whoami(options: Options) -> dict[str, Any]:
    try:
        answer = send(options, "GET", "/whoami", _request_headers(options))
    except Unreachable as error:
        return {"client_ip": None, "local_ip": None, "error": str(error)}
    result: dict[str, Any] = {
        "client_ip": None,
        "local_ip": answer.local_ip,
        "status": answer.status,
    }
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    if answer.status == 200 and isinstance(body, dict):
        result.update(client_ip=body.get("client_ip"), scheme=body.get("scheme"),
                      host=body.get("host"), request_id=body.get("request_id"))  # fmt: skip
    else:
        result["error"] = f"GET /whoami answered {answer.status}"
    return result


def check_expectations(report: Report) -> None:
    options = report.options
    checks = report.expectations
    if options.expect is not None:
        checks.append({"name": f"verdict {options.expect}", "ok": report.verdict == options.expect,
                       "detail": f"verdict {report.verdict}"})  # fmt: skip
    total = sum(report.status_counts.values())
    for status, count in options.expect_status:
        seen = report.status_counts.get(str(status), 0)
        if count is None:
            checks.append({"name": f"every response {status}", "ok": total > 0 and seen == total,
                           "detail": _counts_text(report.status_counts)})  # fmt: skip
        else:
            checks.append({"name": f"{count} x {status}", "ok": seen == count,
                           "detail": _counts_text(report.status_counts)})  # fmt: skip
    if options.expect_client_ip is not None:
        seen_ip = report.client.get("client_ip")
        wanted = options.expect_client_ip
        if wanted == "self":
            wanted = report.client.get("local_ip") or "(unknown local address)"
        checks.append({"name": f"client IP {wanted}", "ok": seen_ip is not None and seen_ip == wanted,
                       "detail": f"service saw {seen_ip}"
                       + (f" ({report.client['error']})" if report.client.get("error") else "")})  # fmt: skip
    if options.expect_security_headers:
        sec = report.security
        problems = [
            *sec["missing"],
            *sec["invalid"],
            *(f"{n} (forbidden)" for n in sec["forbidden"]),
        ]
        checks.append({"name": "security headers", "ok": sec["ok"],
                       "detail": "all present" if sec["ok"] else ", ".join(problems)})  # fmt: skip


def _counts_text(counts: Counter[str]) -> str:
    return ", ".join(f"{n} x {code}" for code, n in sorted(counts.items())) or "no responses"


def probe(options: Options) -> Report:
    report = Report(options)
    answers: list[Answer] = []
    reasons: list[str] = []
    if options.preflight:
        preflight = run_preflight(options)
        answers.append(preflight.pop("answer"))
        report.preflight = preflight
        reasons += [f"preflight: {r}" for r in preflight["reasons"]]

    loop = _Loop(options)
    loop.run()
    report.errors = loop.errors
    if not loop.answers:
        raise Unreachable(next(iter(loop.errors), "no answer"))
    report.status_counts = Counter(str(a.status) for a in loop.answers)
    if loop.errors:
        report.status_counts["error"] = sum(loop.errors.values())

    # Every answer must pass the CORS check: a 429 without CORS headers is a CORS error
    # to the page, not a 429.
    request_reasons: list[str] = []
    for answer in loop.answers:
        for reason in cors_check(answer, options.origin, options.credentials):
            text = f"{reason} (on a {answer.status})"
            if text not in request_reasons:
                request_reasons.append(text)
    first = loop.answers[0]
    report.request = {
        "method": options.method,
        "status": first.status,
        "allowed": not request_reasons,
        "reasons": request_reasons,
        "headers": {k: v for k, v in first.headers.items() if k in CORS_RESPONSE_HEADERS},
    }
    reasons += [f"request: {r}" for r in request_reasons]
    answers += loop.answers
    report.security = grade_security_headers(answers, options.target.scheme == "https")
    last = loop.answers[-1]
    report.rate_limit = {k: v for k, v in last.headers.items() if k in RATE_LIMIT_HEADERS}
    if options.whoami:
        report.client = run_whoami(options)
    report.verdict = "refused" if reasons else "allowed"
    report.reasons = reasons
    check_expectations(report)
    return report


# -- output -----------------------------------------------------------------------------------


def as_dict(report: Report) -> dict[str, Any]:
    options = report.options
    return {
        "url": f"{options.target.base}{options.target.path}",
        "origin": options.origin,
        "credentials": options.credentials,
        "verdict": report.verdict,
        "reasons": report.reasons,
        "preflight": report.preflight,
        "request": report.request,
        "status_counts": dict(sorted(report.status_counts.items())),
        "errors": dict(report.errors),
        "security_headers": report.security,
        "rate_limit": report.rate_limit,
        "client": report.client,
        "expectations": report.expectations,
        "ok": all(check["ok"] for check in report.expectations),
    }


def as_text(report: Report) -> str:
    data = as_dict(report)
    lines = [f"probe {data['url']} from origin {data['origin']}"
             f"{' (credentialed)' if data['credentials'] else ''}"]  # fmt: skip
    lines.append(f"CORS verdict: {data['verdict'].upper()}")
    lines += [f"  - {reason}" for reason in data["reasons"]]
    if report.preflight is not None:
        pre = report.preflight
        lines.append(f"preflight OPTIONS ({pre['method']}"
                     f"{' + ' + ','.join(pre['request_headers']) if pre['request_headers'] else ''})"
                     f": {pre['status']}, {'allowed' if pre['allowed'] else 'refused'}")  # fmt: skip
        lines += [f"  {name}: {value}" for name, value in pre["headers"].items()]
    req = report.request
    lines.append(f"request {req['method']}: {_counts_text(report.status_counts)}, "
                 f"{'allowed' if req['allowed'] else 'refused'}")  # fmt: skip
    lines += [f"  {name}: {value}" for name, value in req["headers"].items()]
    for error, count in report.errors.items():
        lines.append(f"  {count} x error: {error}")
    sec = report.security
    lines.append(f"security headers: {len(sec['present'])} present, "
                 f"{len(sec['missing'])} missing")  # fmt: skip
    lines += [f"  missing: {name}" for name in sec["missing"]]
    lines += [f"  invalid: {name}: {why}" for name, why in sec["invalid"].items()]
    lines += [f"  forbidden: {name}: {value}" for name, value in sec["forbidden"].items()]
    if report.rate_limit:
        lines.append("rate limit (last response):")
        lines += [f"  {name}: {value}" for name, value in report.rate_limit.items()]
    if report.client:
        client = report.client
        text = f"client IP seen by the service: {client.get('client_ip')}"
        text += f" (this probe connected from {client.get('local_ip')})"
        if client.get("error"):
            text += f"; {client['error']}"
        lines.append(text)
    for check in report.expectations:
        lines.append(
            f"{'ok  ' if check['ok'] else 'FAIL'} expect {check['name']}: {check['detail']}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        options = parse_options(argv)
    except UsageError as error:
        print(f"probe: {error}", file=sys.stderr)
        return EXIT_USAGE

    # A pod's termination: finish what is in flight and still report.
    def stop(signum: int, frame: FrameType | None) -> None:
        STOP.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
    if options.wait_reachable:
        wait_reachable(options.target, options.wait_reachable)
    try:
        report = probe(options)
    except Unreachable as error:
        print(f"probe: cannot reach {options.target.base}: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if options.as_json:
        print(json.dumps(as_dict(report), indent=2))
    else:
        print(as_text(report))
    return EXIT_OK if all(check["ok"] for check in report.expectations) else EXIT_EXPECTATION_FAILED


if __name__ == "__main__":
    sys.exit(main())
