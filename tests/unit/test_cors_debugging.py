"""What an operator sees of a CORS refusal: its reason in the access line and the metric's
label, and ``Gatehouse-CORS-Debug`` for the debug origins only."""

from __future__ import annotations

import logging
import re

import pytest

from gatehouse.middleware.cors import MAX_SHOWN, REFUSAL_REASONS, printable
from gatehouse.settings import ConfigError, load_settings
from tests.unit.conftest import ALLOWED, make_client

pytestmark = pytest.mark.anyio

DEBUG = "http://localhost:5173"  # the second origin BASE allows: the test page's
FOREIGN = "https://evil.example"


def preflight(origin: str, method: str = "PUT", headers: str | None = None) -> dict[str, str]:
    asked = {"origin": origin, "access-control-request-method": method}
    if headers is not None:
        asked["access-control-request-headers"] = headers
    return asked


def rejections(metrics: str) -> dict[str, float]:
    found = re.findall(r'^gatehouse_cors_rejections_total\{reason="(\w+)"\} (\S+)$', metrics, re.M)
    return {reason: float(count) for reason, count in found}


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [
        record.fields  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "gatehouse.access" and record.getMessage() == "request"
    ]


async def test_each_refusal_is_counted_by_its_reason():
    async with make_client() as client:
        await client.get("/healthz", headers={"origin": FOREIGN})
        await client.options("/items", headers=preflight(FOREIGN))
        await client.options("/items", headers=preflight(ALLOWED, method="PATCH"))
        await client.options("/items", headers=preflight(ALLOWED, headers="x-custom"))
        await client.options("/items", headers=preflight(ALLOWED, headers="content-type"))
        await client.get("/healthz", headers={"origin": ALLOWED})
        metrics = (await client.get("/metrics")).text
    assert rejections(metrics) == {
        "origin_not_listed": 2.0,
        "method_not_allowed": 1.0,
        "header_not_allowed": 1.0,
        "private_network_not_allowed": 0.0,
    }


async def test_the_label_never_carries_the_origin():
    async with make_client() as client:
        for n in range(5):
            await client.options("/items", headers=preflight(f"https://x{n}.example"))
        metrics = (await client.get("/metrics")).text
    assert set(rejections(metrics)) == set(REFUSAL_REASONS)
    assert "x0.example" not in metrics


@pytest.mark.parametrize(
    ("asked", "reason", "field", "value"),
    [
        (preflight(FOREIGN), "origin_not_listed", "cors_refused_origin", FOREIGN),
        (preflight(ALLOWED, method="PATCH"), "method_not_allowed", "cors_refused_method", "PATCH"),
        (
            preflight(ALLOWED, headers="Content-Type, X-Custom, X-Other"),
            "header_not_allowed",
            "cors_refused_header",
            "X-Custom",
        ),
        (
            {**preflight(ALLOWED), "access-control-request-private-network": "true"},
            "private_network_not_allowed",
            "cors_refused_private_network",
            "true",
        ),
    ],
)
async def test_a_refused_preflight_names_its_reason_in_the_access_line(
    caplog: pytest.LogCaptureFixture, asked, reason, field, value
):
    caplog.set_level(logging.INFO, logger="gatehouse.access")
    async with make_client() as client:
        response = await client.options("/items", headers=asked)
    assert response.status_code == 400
    [line] = access_lines(caplog)
    assert line["cors_refused"] == reason
    assert line[field] == value
    assert line["status"] == 400


async def test_a_refused_simple_request_names_its_origin(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="gatehouse.access")
    async with make_client() as client:
        await client.get("/healthz", headers={"origin": FOREIGN})
        await client.get("/healthz", headers={"origin": ALLOWED})
    refused, allowed = access_lines(caplog)
    assert refused["cors_refused"] == "origin_not_listed"
    assert refused["cors_refused_origin"] == FOREIGN
    assert "cors_refused" not in allowed


async def test_hostile_text_reaches_the_log_escaped_and_cut(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="gatehouse.access")
    hostile = 'https://a.example"}\t{"status":200,' + "x" * 5000
    async with make_client() as client:
        response = await client.options("/items", headers=preflight(hostile))
    assert response.status_code == 400
    [line] = access_lines(caplog)
    shown = line["cors_refused_origin"]
    assert isinstance(shown, str)
    assert shown.startswith("https://a.example\\x22\\x7d\\x09\\x7b\\x22status\\x22:200\\x2c")
    assert shown.endswith("...") and len(shown) < 2 * MAX_SHOWN


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("X-Custom", "X-Custom"),
        ("a\r\nB: c", "a\\x0d\\x0aB:\\x20c"),
        ("é", "\\xe9"),
        ("back\\slash", "back\\x5cslash"),
        ("", ""),
        ("y" * (MAX_SHOWN + 1), "y" * MAX_SHOWN + "..."),
    ],
)
def test_printable(sent: str, shown: str):
    assert printable(sent) == shown
    assert printable(sent).isascii() and printable(sent).isprintable()


# The debug header -------------------------------------------------------------------


async def test_a_debug_origin_reads_the_decision():
    async with make_client(cors_debug_origins=[DEBUG]) as client:
        response = await client.get("/healthz", headers={"origin": DEBUG})
    assert response.headers["access-control-allow-origin"] == DEBUG
    debug = response.headers["gatehouse-cors-debug"]
    assert debug.startswith("allowed; methods=GET, POST, PUT, DELETE, OPTIONS; ")
    assert "headers=Accept, Accept-Language, Authorization, Content-Language, Content-Type" in debug
    assert debug.endswith("; credentials=true; max-age=600")
    exposed = response.headers["access-control-expose-headers"].split(", ")
    assert exposed[-1] == "Gatehouse-CORS-Debug" and "X-Request-ID" in exposed


@pytest.mark.parametrize(
    ("asked", "decision"),
    [
        (preflight(DEBUG), "allowed; methods="),
        (preflight(DEBUG, method="PATCH"), "refused=method_not_allowed; method=PATCH; methods="),
        (preflight(DEBUG, headers="X-Custom"), "refused=header_not_allowed; header=X-Custom; "),
    ],
)
async def test_a_debug_origins_preflight_says_why(asked, decision):
    async with make_client(cors_debug_origins=[DEBUG]) as client:
        response = await client.options("/items", headers=asked)
    assert response.headers["gatehouse-cors-debug"].startswith(decision)


@pytest.mark.parametrize("origin", [ALLOWED, FOREIGN])
async def test_other_origins_never_get_the_debug_header(origin):
    async with make_client(cors_debug_origins=[DEBUG]) as client:
        simple = await client.get("/healthz", headers={"origin": origin})
        preflighted = await client.options("/items", headers=preflight(origin))
    for response in (simple, preflighted):
        assert "gatehouse-cors-debug" not in response.headers
        assert "Gatehouse-CORS-Debug" not in response.headers.get(
            "access-control-expose-headers", ""
        )


async def test_no_debug_header_by_default():
    async with make_client() as client:
        simple = await client.get("/healthz", headers={"origin": DEBUG})
        preflighted = await client.options("/items", headers=preflight(DEBUG, method="PATCH"))
    assert "gatehouse-cors-debug" not in simple.headers
    assert "gatehouse-cors-debug" not in preflighted.headers


async def test_errors_keep_the_debug_header():
    async with make_client(cors_debug_origins=[DEBUG]) as client:
        response = await client.get("/test/error", headers={"origin": DEBUG})
    assert response.status_code == 500
    assert response.headers["gatehouse-cors-debug"].startswith("allowed; ")


# Its setting ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("debug_origins", "reason"),
    [
        ("https://other.example", "'https://other.example' is not in APP_ALLOWED_ORIGINS"),
        ("*", "'*' is not a debug origin"),
        ("null", "'null' is not an allowable origin"),
        ("https://app.example.com/", "must not have a path"),
    ],
)
def test_a_debug_origin_must_be_an_allowed_one(debug_origins: str, reason: str):
    with pytest.raises(ConfigError) as refused:
        load_settings(allowed_origins=[ALLOWED], cors_debug_origins=debug_origins)
    line = str(refused.value)
    assert "APP_CORS_DEBUG_ORIGINS" in line and reason in line
    assert "\n" not in line


def test_debug_origins_are_normalised_and_checked_against_the_allowlist_file(tmp_path):
    origins = tmp_path / "origins"
    origins.write_text("https://page.example:443")
    settings = load_settings(
        allowed_origins_file=str(origins), cors_debug_origins="HTTPS://PAGE.example"
    )
    assert settings.cors_debug_origins == ["https://page.example"]
    with pytest.raises(ConfigError, match="APP_CORS_DEBUG_ORIGINS"):
        load_settings(allowed_origins_file=str(origins), cors_debug_origins=ALLOWED)
