"""The probe against a real ``python -m gatehouse``: verdicts, exit codes, counts, client IP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, ApiServer, free_port
from tests.probe.runner import ALLOWED, FOREIGN, run_probe


@pytest.fixture
def server(api_server):
    return api_server()


def search(server) -> str:
    return f"{server.url}/search?q=lamp"


# -- the CORS verdict and its exit status ------------------------------------------------------


def test_allowed_origin_meets_expect_allowed(server) -> None:
    run = run_probe("--url", search(server), "--origin", ALLOWED, "--expect", "allowed")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "CORS verdict: ALLOWED" in run.stdout


def test_allowed_origin_fails_expect_refused(server) -> None:
    run = run_probe("--url", search(server), "--origin", ALLOWED, "--expect", "refused")
    assert run.returncode == 1
    assert "FAIL expect verdict refused: verdict allowed" in run.stdout


def test_foreign_origin_meets_expect_refused(server) -> None:
    run = run_probe("--url", search(server), "--origin", FOREIGN, "--expect", "refused")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "request: no Access-Control-Allow-Origin (on a 200)" in run.stdout


def test_foreign_origin_fails_expect_allowed(server) -> None:
    run = run_probe("--url", search(server), "--origin", FOREIGN, "--expect", "allowed")
    assert run.returncode == 1
    assert "FAIL expect verdict allowed: verdict refused" in run.stdout


def test_json_report_parses_and_lists_no_missing_security_headers(server) -> None:
    run = run_probe("--url", search(server), "--origin", ALLOWED, "--json")
    assert run.returncode == 0, run.stderr
    report = run.json()
    assert report["verdict"] == "allowed"
    assert report["reasons"] == []
    assert report["request"]["headers"]["access-control-allow-origin"] == ALLOWED
    assert report["request"]["headers"]["access-control-allow-credentials"] == "true"
    security = report["security_headers"]
    assert security["missing"] == []
    assert security["invalid"] == {}
    assert security["forbidden"] == {}  # no Server header
    assert security["present"]["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" not in security["present"]  # plain http
    assert report["rate_limit"]["x-ratelimit-limit"] == "10"
    assert report["rate_limit"]["ratelimit-policy"] == '"search";q=10;w=60'
    assert report["status_counts"] == {"200": 1}


def test_security_headers_expectation_holds_on_errors_too(api_server) -> None:
    # A Host outside the allowlist gets a 400 from the edge: still fully headered.
    server = api_server({"APP_TRUSTED_HOSTS": "api.test"})
    run = run_probe(
        "--url", search(server), "--origin", ALLOWED, "--no-whoami",
        "--expect-status", "400", "--expect-security-headers", "--expect", "allowed",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_host_header_is_sent(api_server) -> None:
    server = api_server({"APP_TRUSTED_HOSTS": "api.test"})
    run = run_probe(
        "--url", search(server), "--origin", ALLOWED, "--host-header", "api.test",
        "--expect-status", "200", "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.json()["client"]["host"] == "api.test"


# -- the client IP -----------------------------------------------------------------------------


def test_reports_client_ip(server) -> None:
    run = run_probe(
        "--url", search(server), "--origin", ALLOWED, "--json",
        "--expect-client-ip", "127.0.0.1",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    client = run.json()["client"]
    assert client["client_ip"] == "127.0.0.1"
    assert client["local_ip"] == "127.0.0.1"
    assert client["scheme"] == "http"


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(api_server) -> None:
    server = api_server({"FORWARDED_ALLOW_IPS": "192.0.2.0/24"})
    run = run_probe(
        "--url", search(server), "--origin", ALLOWED,
        "--header", "X-Forwarded-For: 203.0.113.9", "--expect-client-ip", "self",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_forwarded_for_from_a_trusted_peer_is_believed(api_server) -> None:
    # The converse, so the test above cannot pass just because the header was never sent.
    server = api_server({"FORWARDED_ALLOW_IPS": "127.0.0.1"})
    run = run_probe(
        "--url", search(server), "--origin", ALLOWED,
        "--header", "X-Forwarded-For: 203.0.113.9", "--expect-client-ip", "self",
    )  # fmt: skip
    assert run.returncode == 1
    assert "FAIL expect client IP 127.0.0.1: service saw 203.0.113.9" in run.stdout


# -- preflights --------------------------------------------------------------------------------


def test_preflight_for_put_with_json_is_allowed(server) -> None:
    run = run_probe(
        "--url", f"{server.url}/items/1", "--origin", ALLOWED, "--method", "PUT",
        "--data", '{"name": "lamp"}', "--preflight-headers", "Content-Type",
        "--expect", "allowed", "--expect-status", "404", "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    preflight = run.json()["preflight"]
    assert preflight["allowed"] is True
    assert preflight["status"] == 200
    assert preflight["headers"]["access-control-allow-origin"] == ALLOWED


def test_preflight_for_a_method_not_allowed_is_refused(server) -> None:
    run = run_probe(
        "--url", f"{server.url}/items/1", "--origin", ALLOWED, "--method", "PATCH",
        "--expect", "refused", "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    # Starlette refuses the preflight with a 400 and lists the methods the service allows.
    assert run.json()["preflight"]["reasons"] == [
        "preflight status 400 is not ok (2xx)",
        "method PATCH not allowed (Access-Control-Allow-Methods: "
        "'GET, POST, PUT, DELETE, OPTIONS')",
    ]


def test_preflight_for_a_header_not_allowed_is_refused(server) -> None:
    run = run_probe(
        "--url", search(server), "--origin", ALLOWED, "--preflight-headers", "X-Custom",
        "--expect", "refused", "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    report = run.json()
    assert report["request"]["allowed"] is True  # the GET itself would be readable
    # Starlette refuses the preflight with a 400 and lists the headers the service allows.
    assert report["preflight"]["reasons"] == [
        "preflight status 400 is not ok (2xx)",
        "headers x-custom not allowed (Access-Control-Allow-Headers: "
        "'Accept, Accept-Language, Authorization, Content-Language, Content-Type')",
    ]


def test_preflight_from_a_foreign_origin_is_refused(server) -> None:
    run = run_probe(
        "--url", f"{server.url}/items", "--origin", FOREIGN, "--method", "POST",
        "--data", '{"name": "lamp"}', "--preflight-headers", "content-type", "--json",
    )  # fmt: skip
    report = run.json()
    assert report["verdict"] == "refused"
    assert "no Access-Control-Allow-Origin" in report["preflight"]["reasons"]


def test_credentials_missing_is_named(api_server) -> None:
    server = api_server({"APP_ALLOW_CREDENTIALS": "false"})
    run = run_probe("--url", search(server), "--origin", ALLOWED, "--json")
    reasons = run.json()["reasons"]
    assert reasons == [
        "preflight: Access-Control-Allow-Credentials: true missing (credentialed request)",
        "request: Access-Control-Allow-Credentials: true missing (credentialed request) (on a 200)",
    ]
    uncredentialed = run_probe(
        "--url", search(server), "--origin", ALLOWED, "--no-credentials", "--expect", "allowed"
    )
    assert uncredentialed.returncode == 0, uncredentialed.stdout


# -- reachability and usage --------------------------------------------------------------------


def test_unreachable_endpoint_is_one_clear_line() -> None:
    port = free_port()  # nothing listens there
    run = run_probe("--url", f"http://127.0.0.1:{port}/search?q=x", "--origin", ALLOWED)
    assert run.returncode == 3
    assert run.stdout == ""
    assert run.stderr == f"probe: cannot reach http://127.0.0.1:{port}: connection refused\n"


def test_wait_reachable_rides_out_a_refused_start(tmp_path) -> None:
    # What a new pod sees while the NetworkPolicy agent has not admitted it yet: refused
    # connections at first, then the service. The probe waits, then measures.
    port = free_port()
    probe = subprocess.Popen(
        [sys.executable, "-m", "gatehouse.probe", "--url", f"http://127.0.0.1:{port}/healthz",
         "--origin", ALLOWED, "--no-preflight", "--no-whoami", "--expect-status", "200",
         "--wait-reachable", "60"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    server = ApiServer({"APP_ALLOWED_ORIGINS": ALLOWED}, port=port)
    try:
        time.sleep(1)
        assert probe.poll() is None, "the probe gave up instead of waiting"
        server.start(log_dir=tmp_path)
        stdout, stderr = probe.communicate(timeout=60)
    finally:
        probe.kill()
        server.stop()
    assert probe.returncode == 0, stdout + stderr
    assert "200" in stdout


def test_wait_reachable_still_reports_what_never_answers() -> None:
    port = free_port()  # nothing listens there, and nothing will
    run = run_probe("--url", f"http://127.0.0.1:{port}/healthz", "--origin", ALLOWED,
                    "--wait-reachable", "1")  # fmt: skip
    assert run.returncode == 3
    assert run.stderr == f"probe: cannot reach http://127.0.0.1:{port}: connection refused\n"


@pytest.mark.parametrize(
    "args",
    [
        ("--url", "ftp://example.com/", "--origin", ALLOWED),
        ("--url", "http://127.0.0.1/", "--origin", "https://a.example/path"),
        ("--url", "http://127.0.0.1/", "--origin", ALLOWED, "--expect", "maybe"),
        ("--url", "http://127.0.0.1/", "--origin", ALLOWED, "--expect-status", "2xx"),
        ("--url", "http://127.0.0.1/", "--origin", ALLOWED, "--header", "no-colon"),
        ("--url", "http://127.0.0.1/", "--origin", ALLOWED, "--repeat", "0"),
    ],
)
def test_usage_errors_exit_2(args) -> None:
    run = run_probe(*args)
    assert run.returncode == 2
    assert run.stdout == ""


# -- repeat, concurrency and the limit ---------------------------------------------------------


def test_concurrent_repeat_counts_are_exact_against_the_limit(api_server, fresh_minute) -> None:
    server = api_server({"APP_RATE_LIMIT_SEARCH": "7/minute"})
    run = run_probe(
        "--url", search(server), "--origin", ALLOWED, "--repeat", "12", "--concurrency", "12",
        "--expect-status", "200=7", "--expect-status", "429=5",
        "--expect", "allowed", "--expect-security-headers", "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    report = run.json()
    assert report["status_counts"] == {"200": 7, "429": 5}
    assert report["errors"] == {}
    assert report["rate_limit"]["x-ratelimit-limit"] == "7"


def test_count_expectation_fails_when_counts_differ(api_server, fresh_minute) -> None:
    server = api_server({"APP_RATE_LIMIT_SEARCH": "3/minute"})
    run = run_probe(
        "--url", search(server), "--origin", ALLOWED, "--repeat", "5", "--concurrency", "5",
        "--expect-status", "200=5",
    )  # fmt: skip
    assert run.returncode == 1
    assert "FAIL expect 5 x 200: 3 x 200, 2 x 429" in run.stdout


def test_duration_loop_stops_on_sigterm_and_still_reports(server) -> None:
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gatehouse.probe", "--url", f"{server.url}/healthz",
            "--origin", ALLOWED, "--duration", "60", "--interval", "0.02",
            "--expect-status", "200", "--json",
        ],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.5)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=15)
    assert time.monotonic() - started < 10
    assert process.returncode == 0, stdout + stderr
    counts = json.loads(stdout)["status_counts"]
    assert set(counts) == {"200"} and counts["200"] >= 5
