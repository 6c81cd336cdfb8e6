"""The probe's pure parts, without a network: parsing, CORS judgement, header grading, output.

``tests/probe`` runs the whole probe against a real service; these pin each rule on its
own, so a failure names the rule that broke rather than a whole report.
"""

from __future__ import annotations

import http.client
import socket
from collections import Counter
from typing import Any

import pytest

from gatehouse.probe.cors import cors_check, judge_preflight
from gatehouse.probe.options import (
    Options,
    Target,
    UsageError,
    parse_expect_status,
    parse_header,
    parse_options,
    parse_origin,
    parse_url,
)
from gatehouse.probe.report import Report, as_dict, as_text, check_expectations
from gatehouse.probe.security_headers import grade_security_headers
from gatehouse.probe.transport import Answer, describe_error, header_tokens

ALLOWED = "https://app.example.com"

# One value per required security header that the grading accepts.
GOOD_SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'",
    "cache-control": "no-store",
}


def answer(status: int = 200, **headers: str) -> Answer:
    """An answer with the given headers (``access_control_allow_origin=`` style names)."""
    return Answer(status, {k.replace("_", "-"): v for k, v in headers.items()}, b"", None)


def credentialed_ok(**extra: str) -> dict[str, str]:
    return {
        "access_control_allow_origin": ALLOWED,
        "access_control_allow_credentials": "true",
        **extra,
    }


# -- command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "target"),
    [
        ("http://api/search?q=x", Target("http", "api", 80, "/search?q=x")),
        ("https://api.example.com", Target("https", "api.example.com", 443, "/")),
        ("http://10.0.0.1:8000/healthz", Target("http", "10.0.0.1", 8000, "/healthz")),
        ("https://[::1]:8443/a/b", Target("https", "::1", 8443, "/a/b")),
    ],
)
def test_parse_url(raw: str, target: Target) -> None:
    assert parse_url(raw) == target


def test_target_base_brackets_an_ipv6_host_and_always_names_the_port() -> None:
    assert parse_url("https://[::1]/x").base == "https://[::1]:443"
    assert parse_url("http://api/x").base == "http://api:80"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("ftp://api/x", "--url 'ftp://api/x': expected http(s)://host[:port]/path"),
        ("api.example.com/x", "--url 'api.example.com/x': expected http(s)://host[:port]/path"),
        ("http:///x", "--url 'http:///x': expected http(s)://host[:port]/path"),
        ("http://api:99999/", "--url 'http://api:99999/': invalid port"),
    ],
)
def test_parse_url_refuses(raw: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_url(raw)
    assert str(caught.value) == message


@pytest.mark.parametrize("raw", ["https://app.example.com", "http://localhost:5173", "null"])
def test_parse_origin_keeps_a_valid_origin_as_given(raw: str) -> None:
    assert parse_origin(raw) == raw


@pytest.mark.parametrize(
    "raw",
    [
        "https://app.example.com/",  # a path, even "/", is not part of an origin
        "https://app.example.com?x=1",
        "app.example.com",
        "ftp://app.example.com",
        "NULL",
    ],
)
def test_parse_origin_refuses(raw: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_origin(raw)
    assert str(caught.value) == f"--origin {raw!r}: expected scheme://host[:port] with no path"


@pytest.mark.parametrize(
    ("raw", "header"),
    [
        ("X-A: 1", ("X-A", "1")),
        ("  X-A  :   spaced out  ", ("X-A", "spaced out")),
        ("Authorization: Bearer a:b", ("Authorization", "Bearer a:b")),
        ("X-Empty:", ("X-Empty", "")),
    ],
)
def test_parse_header(raw: str, header: tuple[str, str]) -> None:
    assert parse_header(raw) == header


@pytest.mark.parametrize("raw", ["no-colon", ": value", "X A: value", "   : value"])
def test_parse_header_refuses(raw: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_header(raw)
    assert str(caught.value) == f"--header {raw!r}: expected 'Name: value'"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("200", (200, None)), ("429=2", (429, 2)), ("200=0", (200, 0)), ("599", (599, None))],
)
def test_parse_expect_status(raw: str, expected: tuple[int, int | None]) -> None:
    assert parse_expect_status(raw) == expected


@pytest.mark.parametrize("raw", ["99", "600", "200=-1", "ok", "200=x", "=2", ""])
def test_parse_expect_status_refuses(raw: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_expect_status(raw)
    assert str(caught.value) == f"--expect-status {raw!r}: expected CODE or CODE=COUNT"


def test_parse_options_defaults() -> None:
    assert parse_options(["--url", "http://api/search?q=x", "--origin", ALLOWED]) == Options(
        target=Target("http", "api", 80, "/search?q=x"),
        origin=ALLOWED,
        method="GET",
        data=None,
        headers=[],
        host_header=None,
        timeout=5.0,
        credentials=True,
        preflight=True,
        preflight_method="GET",
        preflight_headers=[],
        repeat=1,
        concurrency=1,
        duration=None,
        interval=0.0,
        whoami=True,
        wait_reachable=0.0,
        insecure=False,
        expect=None,
        expect_status=[],
        expect_client_ip=None,
        expect_security_headers=False,
        as_json=False,
    )


def test_parse_options_data_adds_a_json_content_type_and_methods_are_upper_cased() -> None:
    options = parse_options(
        ["--url", "http://api/x", "--origin", ALLOWED, "--method", "put", "--data", '{"a":1}',
         "--header", "X-A: 1", "--preflight-headers", " Content-Type, X-A ,,"]
    )  # fmt: skip
    assert (options.method, options.preflight_method) == ("PUT", "PUT")
    assert options.data == b'{"a":1}'
    assert options.headers == [("X-A", "1"), ("Content-Type", "application/json")]
    assert options.preflight_headers == ["content-type", "x-a"]


def test_parse_options_keeps_a_given_content_type_and_a_separate_preflight_method() -> None:
    options = parse_options(
        ["--url", "http://api/x", "--origin", ALLOWED, "--data", "hi",
         "--header", "content-type: text/plain", "--preflight-method", "delete"]
    )  # fmt: skip
    assert options.headers == [("content-type", "text/plain")]
    assert (options.method, options.preflight_method) == ("GET", "DELETE")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--repeat", "0"], "--repeat and --concurrency must be at least 1"),
        (["--concurrency", "0"], "--repeat and --concurrency must be at least 1"),
        (["--timeout", "0"], "--timeout and --duration must be positive, --interval not negative"),
        (["--duration", "0"], "--timeout and --duration must be positive, --interval not negative"),
        (["--interval", "-1"], "--timeout and --duration must be positive, --interval not negative"),
        (["--wait-reachable", "-1"], "--wait-reachable must not be negative"),
        (["--expect-client-ip", "me"], "--expect-client-ip 'me': not an IP"),
        (["--header", "Host: x"], "use --origin and --host-header, not --header, for Origin and Host"),
        (["--header", "origin: x"], "use --origin and --host-header, not --header, for Origin and Host"),
    ],
)  # fmt: skip
def test_parse_options_refuses(extra: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_options(["--url", "http://api/x", "--origin", ALLOWED, *extra])
    assert str(caught.value) == message


# -- transport helpers ----------------------------------------------------------------------


def test_header_tokens_are_trimmed_lower_cased_and_skip_empty_items() -> None:
    assert header_tokens(" GET, put ,,Content-Type ") == {"get", "put", "content-type"}
    assert header_tokens(None) == set()
    assert header_tokens("") == set()


@pytest.mark.parametrize(
    ("error", "timeout", "text"),
    [
        (TimeoutError(), 5.0, "timed out after 5 s"),
        (TimeoutError("timed out"), 2.5, "timed out after 2.5 s"),
        (socket.gaierror(-2, "Name or service not known"), 5.0,
         "name resolution failed (Name or service not known)"),
        (ConnectionRefusedError(), 5.0, "connection refused"),
        (ConnectionResetError(), 5.0, "connection reset"),
        (http.client.BadStatusLine("junk"), 5.0, "BadStatusLine: junk"),
        (ValueError("boom"), 5.0, "ValueError: boom"),
    ],
)  # fmt: skip
def test_describe_error(error: BaseException, timeout: float, text: str) -> None:
    assert describe_error(error, timeout) == text


# -- CORS -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "credentials", "reasons"),
    [
        (credentialed_ok(), True, []),
        ({"access_control_allow_origin": "*"}, False, []),
        ({"access_control_allow_origin": f" {ALLOWED} "}, False, []),
        ({}, True, ["no Access-Control-Allow-Origin"]),
        ({}, False, ["no Access-Control-Allow-Origin"]),
        (
            {"access_control_allow_origin": "*", "access_control_allow_credentials": "true"},
            True,
            ["Access-Control-Allow-Origin is '*' on a credentialed request"],
        ),
        (
            {"access_control_allow_origin": "*"},
            True,
            [
                "Access-Control-Allow-Origin is '*' on a credentialed request",
                "Access-Control-Allow-Credentials: true missing (credentialed request)",
            ],
        ),
        (
            credentialed_ok(access_control_allow_origin="https://app.example.com.evil.net"),
            True,
            [
                "Access-Control-Allow-Origin mismatch: 'https://app.example.com.evil.net' "
                "is not 'https://app.example.com'"
            ],
        ),
        (
            {"access_control_allow_origin": ALLOWED},
            True,
            ["Access-Control-Allow-Credentials: true missing (credentialed request)"],
        ),
        (
            # The Fetch standard compares the value byte for byte: "True" is not "true".
            credentialed_ok(access_control_allow_credentials="True"),
            True,
            ["Access-Control-Allow-Credentials: true missing (credentialed request)"],
        ),
    ],
)
def test_cors_check(headers: dict[str, str], credentials: bool, reasons: list[str]) -> None:
    assert cors_check(answer(200, **headers), ALLOWED, credentials) == reasons


def test_preflight_allowing_the_method_and_headers_passes() -> None:
    pre = answer(
        204,
        **credentialed_ok(
            access_control_allow_methods="GET, PUT",
            access_control_allow_headers="Content-Type, X-A",
        ),
    )
    assert judge_preflight(pre, ALLOWED, True, "PUT", ["content-type", "x-a"]) == []


def test_preflight_names_each_failure_in_order() -> None:
    pre = answer(
        403,
        **credentialed_ok(
            access_control_allow_methods="GET, PUT",
            access_control_allow_headers="content-type, x-a",
        ),
    )
    assert judge_preflight(pre, ALLOWED, True, "DELETE", ["x-b", "content-type", "x-c"]) == [
        "preflight status 403 is not ok (2xx)",
        "method DELETE not allowed (Access-Control-Allow-Methods: 'GET, PUT')",
        "headers x-b, x-c not allowed (Access-Control-Allow-Headers: 'content-type, x-a')",
    ]


def test_preflight_without_cors_headers_starts_with_the_cors_check() -> None:
    assert judge_preflight(answer(204), ALLOWED, True, "PUT", ["x-a"]) == [
        "no Access-Control-Allow-Origin",
        "method PUT not allowed (Access-Control-Allow-Methods: '')",
        "headers x-a not allowed (Access-Control-Allow-Headers: '')",
    ]


def test_preflight_never_needs_to_allow_a_safelisted_method() -> None:
    assert judge_preflight(answer(204, **credentialed_ok()), ALLOWED, True, "POST", []) == []


def test_wildcards_cover_methods_and_headers_but_not_authorization_without_credentials() -> None:
    pre = answer(
        204,
        access_control_allow_origin="*",
        access_control_allow_methods="*",
        access_control_allow_headers="*",
    )
    assert judge_preflight(pre, ALLOWED, False, "PATCH", ["x-b", "authorization"]) == [
        "headers authorization not allowed (Access-Control-Allow-Headers: '*')"
    ]


def test_wildcards_are_literal_names_on_a_credentialed_preflight() -> None:
    pre = answer(
        204,
        **credentialed_ok(access_control_allow_methods="*", access_control_allow_headers="*"),
    )
    assert judge_preflight(pre, ALLOWED, True, "PATCH", ["x-b"]) == [
        "method PATCH not allowed (Access-Control-Allow-Methods: '*')",
        "headers x-b not allowed (Access-Control-Allow-Headers: '*')",
    ]


# -- security headers -----------------------------------------------------------------------


def graded(*answers: Answer, https: bool = False) -> dict[str, Any]:
    return grade_security_headers(answers, https)


def with_headers(status: int, headers: dict[str, str]) -> Answer:
    return Answer(status, headers, b"", None)


def test_every_required_header_present_grades_ok() -> None:
    assert graded(with_headers(200, GOOD_SECURITY_HEADERS)) == {
        "present": GOOD_SECURITY_HEADERS,
        "missing": [],
        "invalid": {},
        "forbidden": {},
        "ok": True,
    }


def test_required_values_match_as_case_insensitive_list_items() -> None:
    headers = {
        **GOOD_SECURITY_HEADERS,
        "x-content-type-options": "NoSniff",
        "cache-control": "private, no-store",
    }
    assert graded(with_headers(200, headers))["present"] == headers
    assert graded(with_headers(200, headers))["ok"] is True


def test_a_header_missing_or_wrong_on_any_answer_counts_against_all() -> None:
    second = {
        k: v for k, v in GOOD_SECURITY_HEADERS.items() if k not in ("cache-control", "content-security-policy")
    }  # fmt: skip
    second["x-frame-options"] = "SAMEORIGIN"
    second["content-security-policy"] = ""  # empty counts as missing
    first = {**GOOD_SECURITY_HEADERS, "server": "uvicorn", "x-powered-by": "FastAPI"}
    expected_present = {
        k: v
        for k, v in GOOD_SECURITY_HEADERS.items()
        if k not in ("cache-control", "content-security-policy", "x-frame-options")
    }
    assert graded(with_headers(200, first), with_headers(429, second)) == {
        "present": expected_present,
        "missing": ["cache-control", "content-security-policy"],
        "invalid": {"x-frame-options": "'SAMEORIGIN' (expected 'DENY') on a 429"},
        "forbidden": {"server": "uvicorn", "x-powered-by": "FastAPI"},
        "ok": False,
    }


def test_an_answer_without_security_headers_misses_every_one_listed_in_order() -> None:
    assert graded(with_headers(404, {})) == {
        "present": {},
        "missing": [
            "cache-control",
            "content-security-policy",
            "x-content-type-options",
            "x-frame-options",
        ],
        "invalid": {},
        "forbidden": {},
        "ok": False,
    }


def test_every_header_that_advertises_the_implementation_is_forbidden() -> None:
    advertised = {
        "server": "uvicorn",
        "x-powered-by": "FastAPI",
        "powered-by": "Python",
        "x-generator": "gatehouse",
        "x-aspnet-version": "4.0",
    }
    assert graded(with_headers(200, {**GOOD_SECURITY_HEADERS, **advertised})) == {
        "present": GOOD_SECURITY_HEADERS,
        "missing": [],
        "invalid": {},
        "forbidden": advertised,
        "ok": False,
    }


def test_hsts_is_required_over_https() -> None:
    assert graded(with_headers(200, GOOD_SECURITY_HEADERS), https=True) == {
        "present": GOOD_SECURITY_HEADERS,
        "missing": ["strict-transport-security"],
        "invalid": {},
        "forbidden": {},
        "ok": False,
    }
    with_hsts = {**GOOD_SECURITY_HEADERS, "strict-transport-security": "max-age=63072000"}
    assert graded(with_headers(200, with_hsts), https=True) == {
        "present": with_hsts,
        "missing": [],
        "invalid": {},
        "forbidden": {},
        "ok": True,
    }


def test_hsts_over_plain_http_is_invalid() -> None:
    with_hsts = {**GOOD_SECURITY_HEADERS, "strict-transport-security": "max-age=1"}
    assert graded(with_headers(200, GOOD_SECURITY_HEADERS), with_headers(200, with_hsts)) == {
        "present": GOOD_SECURITY_HEADERS,
        "missing": [],
        "invalid": {"strict-transport-security": "sent over plain http (ignored by browsers)"},
        "forbidden": {},
        "ok": False,
    }


# -- the report -----------------------------------------------------------------------------


def full_report() -> Report:
    """A refused run with a preflight, an error, a 429, bad headers and every expectation."""
    options = parse_options(
        ["--url", "http://api.example.com/search?q=x", "--origin", ALLOWED,
         "--method", "put", "--data", "{}", "--preflight-headers", "Content-Type, X-A",
         "--expect", "allowed", "--expect-status", "200", "--expect-status", "429=1",
         "--expect-client-ip", "self", "--expect-security-headers"]
    )  # fmt: skip
    return Report(
        options,
        preflight={
            "method": "PUT",
            "request_headers": ["content-type", "x-a"],
            "status": 204,
            "allowed": True,
            "reasons": [],
            "headers": {
                "access-control-allow-origin": ALLOWED,
                "access-control-allow-credentials": "true",
            },
        },
        request={
            "method": "PUT",
            "status": 200,
            "allowed": False,
            "reasons": ["no Access-Control-Allow-Origin (on a 429)"],
            "headers": {"access-control-allow-origin": ALLOWED},
        },
        status_counts=Counter({"429": 1, "200": 2, "error": 1}),
        errors=Counter({"connection reset": 1}),
        security={
            "present": {"x-content-type-options": "nosniff"},
            "missing": ["permissions-policy"],
            "invalid": {"x-frame-options": "'SAMEORIGIN' (expected 'DENY') on a 429"},
            "forbidden": {"server": "uvicorn"},
            "ok": False,
        },
        rate_limit={"retry-after": "7"},
        client={
            "client_ip": "10.0.0.9",
            "local_ip": "10.0.0.9",
            "status": 200,
            "scheme": "http",
            "host": "api.example.com",
            "request_id": "r-1",
        },
        verdict="refused",
        reasons=["request: no Access-Control-Allow-Origin (on a 429)"],
    )


def minimal_report() -> Report:
    """An allowed run with no preflight, no /whoami and no expectations."""
    options = parse_options(
        ["--url", "http://127.0.0.1:8000/healthz", "--origin", "http://localhost:5173",
         "--no-credentials", "--no-preflight", "--no-whoami"]
    )  # fmt: skip
    return Report(
        options,
        request={"method": "GET", "status": 200, "allowed": True, "reasons": [], "headers": {}},
        status_counts=Counter({"200": 1}),
        security={
            "present": GOOD_SECURITY_HEADERS,
            "missing": [],
            "invalid": {},
            "forbidden": {},
            "ok": True,
        },
        verdict="allowed",
    )


def test_check_expectations_adds_one_check_per_expectation_in_order() -> None:
    report = full_report()
    check_expectations(report)
    assert report.expectations == [
        {"name": "verdict allowed", "ok": False, "detail": "verdict refused"},
        {"name": "every response 200", "ok": False, "detail": "2 x 200, 1 x 429, 1 x error"},
        {"name": "1 x 429", "ok": True, "detail": "2 x 200, 1 x 429, 1 x error"},
        {"name": "client IP 10.0.0.9", "ok": True, "detail": "service saw 10.0.0.9"},
        {
            "name": "security headers",
            "ok": False,
            "detail": "permissions-policy, x-frame-options, server (forbidden)",
        },
    ]


def test_check_expectations_client_ip_when_whoami_failed() -> None:
    report = minimal_report()
    report.options.expect_client_ip = "self"
    report.client = {"client_ip": None, "local_ip": None, "error": "connection refused"}
    check_expectations(report)
    assert report.expectations == [
        {
            "name": "client IP (unknown local address)",
            "ok": False,
            "detail": "service saw None (connection refused)",
        }
    ]


def test_check_expectations_passing_ones() -> None:
    report = minimal_report()
    report.options.expect = "allowed"
    report.options.expect_status = [(200, None), (200, 1), (429, 0)]
    report.options.expect_client_ip = "203.0.113.7"
    report.options.expect_security_headers = True
    report.client = {"client_ip": "203.0.113.7", "local_ip": "10.0.0.9"}
    check_expectations(report)
    assert report.expectations == [
        {"name": "verdict allowed", "ok": True, "detail": "verdict allowed"},
        {"name": "every response 200", "ok": True, "detail": "1 x 200"},
        {"name": "1 x 200", "ok": True, "detail": "1 x 200"},
        {"name": "0 x 429", "ok": True, "detail": "1 x 200"},
        {"name": "client IP 203.0.113.7", "ok": True, "detail": "service saw 203.0.113.7"},
        {"name": "security headers", "ok": True, "detail": "all present"},
    ]


def test_full_report_as_text() -> None:
    report = full_report()
    check_expectations(report)
    assert as_text(report) == "\n".join(
        [
            "probe http://api.example.com:80/search?q=x from origin https://app.example.com"
            " (credentialed)",
            "CORS verdict: REFUSED",
            "  - request: no Access-Control-Allow-Origin (on a 429)",
            "preflight OPTIONS (PUT + content-type,x-a): 204, allowed",
            "  access-control-allow-origin: https://app.example.com",
            "  access-control-allow-credentials: true",
            "request PUT: 2 x 200, 1 x 429, 1 x error, refused",
            "  access-control-allow-origin: https://app.example.com",
            "  1 x error: connection reset",
            "security headers: 1 present, 1 missing",
            "  missing: permissions-policy",
            "  invalid: x-frame-options: 'SAMEORIGIN' (expected 'DENY') on a 429",
            "  forbidden: server: uvicorn",
            "rate limit (last response):",
            "  retry-after: 7",
            "client IP seen by the service: 10.0.0.9 (this probe connected from 10.0.0.9)",
            "FAIL expect verdict allowed: verdict refused",
            "FAIL expect every response 200: 2 x 200, 1 x 429, 1 x error",
            "ok   expect 1 x 429: 2 x 200, 1 x 429, 1 x error",
            "ok   expect client IP 10.0.0.9: service saw 10.0.0.9",
            "FAIL expect security headers: permissions-policy, x-frame-options, server (forbidden)",
        ]
    )


def test_minimal_report_as_text() -> None:
    assert as_text(minimal_report()) == "\n".join(
        [
            "probe http://127.0.0.1:8000/healthz from origin http://localhost:5173",
            "CORS verdict: ALLOWED",
            "request GET: 1 x 200, allowed",
            "security headers: 4 present, 0 missing",
        ]
    )


def test_whoami_error_is_appended_to_the_client_line() -> None:
    report = minimal_report()
    report.client = {"client_ip": None, "local_ip": "10.0.0.9", "error": "GET /whoami answered 404"}
    assert as_text(report).splitlines()[-1] == (
        "client IP seen by the service: None (this probe connected from 10.0.0.9); "
        "GET /whoami answered 404"
    )


def test_full_report_as_dict() -> None:
    report = full_report()
    check_expectations(report)
    assert as_dict(report) == {
        "url": "http://api.example.com:80/search?q=x",
        "origin": ALLOWED,
        "credentials": True,
        "verdict": "refused",
        "reasons": report.reasons,
        "preflight": report.preflight,
        "request": report.request,
        "status_counts": {"200": 2, "429": 1, "error": 1},
        "errors": {"connection reset": 1},
        "security_headers": report.security,
        "rate_limit": {"retry-after": "7"},
        "client": report.client,
        "expectations": report.expectations,
        "ok": False,
    }
    # Counts come out sorted by status whatever order they were counted in.
    assert list(as_dict(report)["status_counts"]) == ["200", "429", "error"]


def test_minimal_report_as_dict_is_ok_with_no_expectations() -> None:
    assert as_dict(minimal_report()) == {
        "url": "http://127.0.0.1:8000/healthz",
        "origin": "http://localhost:5173",
        "credentials": False,
        "verdict": "allowed",
        "reasons": [],
        "preflight": None,
        "request": {
            "method": "GET",
            "status": 200,
            "allowed": True,
            "reasons": [],
            "headers": {},
        },
        "status_counts": {"200": 1},
        "errors": {},
        "security_headers": {
            "present": GOOD_SECURITY_HEADERS,
            "missing": [],
            "invalid": {},
            "forbidden": {},
            "ok": True,
        },
        "rate_limit": {},
        "client": {},
        "expectations": [],
        "ok": True,
    }
