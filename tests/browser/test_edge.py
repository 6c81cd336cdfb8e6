"""What a page can read from the API, as Chromium enforces CORS.

The allowed page (http://127.0.0.1:<port>) must read bodies, statuses and the exposed
rate-limit headers, errors included; the refused page (http://127.0.0.2:<port>) must
get nothing: its fetch rejects and the console names the CORS refusal.
"""

from __future__ import annotations

import json
import re
import uuid

import httpx

from tests.browser.support import SEARCH_LIMIT, request_count, wait_for_requests
from tests.jwt_keys import client_authorization

CORS_BLOCKED = "has been blocked by CORS policy"
FAILED = "TypeError: Failed to fetch"


def test_allowed_origin_reads_body_and_rate_limit_headers(open_page, api) -> None:
    page = open_page("allowed")
    result = page.fetch(
        "search, with credentials", f"{api.url}/search?q=lamp", {"credentials": "include"}
    )

    assert result["error"] is None, result
    assert (result["type"], result["status"]) == ("cors", 200)
    assert result["body"] == {"query": "lamp", "results": []}
    headers = result["headers"]  # only what the browser lets the page read
    assert headers["x-ratelimit-limit"] == str(SEARCH_LIMIT)
    assert headers["x-ratelimit-remaining"] == str(SEARCH_LIMIT - 1)
    reset = headers["x-ratelimit-reset"]  # seconds to the minute's end: the clock's to say
    assert headers["ratelimit"] == f'"search";r={SEARCH_LIMIT - 1};t={reset}', headers
    assert headers["ratelimit-policy"] == f'"search";q={SEARCH_LIMIT};w=60'
    assert re.fullmatch(r"[0-9a-f]{26}", headers["x-request-id"]), headers
    # Sent, but neither safelisted nor exposed: invisible to the page.
    assert "content-security-policy" not in headers
    assert "x-frame-options" not in headers


def test_refused_origin_fetch_is_blocked(open_page, api) -> None:
    answered = request_count(api, "GET", "200", route="/whoami")
    page = open_page("refused")
    result = page.fetch("whoami, with credentials", f"{api.url}/whoami", {"credentials": "include"})

    assert result["error"] == FAILED, result
    message = page.wait_for_console(CORS_BLOCKED)
    assert f"from origin '{page.origin}'" in message
    assert "No 'Access-Control-Allow-Origin' header" in message
    # The API answered; the browser withheld the answer from the page.
    assert request_count(api, "GET", "200", route="/whoami") == answered + 1


def test_allowed_origin_reads_429_and_retry_after(open_page, api, fresh_minute) -> None:
    page = open_page("allowed")
    # A verified subject of its own: a budget of its own (an invented token would count
    # by the IP), and a header that makes every call preflighted.
    authorization = client_authorization(uuid.uuid4().hex)
    init = {"credentials": "include", "headers": {"Authorization": authorization}}
    results = [
        page.fetch(f"search {n}", f"{api.url}/search?q=lamp", init)
        for n in range(1, SEARCH_LIMIT + 2)
    ]

    assert [r["status"] for r in results] == [200] * SEARCH_LIMIT + [429], results
    refused = results[-1]
    # One window: the wait is to its end, the same second count the RateLimit field gives.
    retry_after = refused["headers"]["retry-after"]
    assert 1 <= int(retry_after) <= 60
    assert refused["headers"]["ratelimit"] == f'"search";r=0;t={retry_after}'
    assert refused["headers"]["x-ratelimit-remaining"] == "0"
    assert refused["headers"]["content-type"] == "application/problem+json"
    assert refused["body"]["status"] == 429


def test_allowed_origin_reads_a_500(open_page, api) -> None:
    page = open_page("allowed")
    result = page.fetch("failing route", f"{api.url}/test/error", {"credentials": "include"})

    assert result["error"] is None, result
    assert result["status"] == 500
    assert result["headers"]["content-type"] == "application/problem+json"
    assert result["body"] == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
    }
    assert re.fullmatch(r"[0-9a-f]{26}", result["headers"]["x-request-id"])


def test_preflighted_writes_from_allowed_origin(open_page, api) -> None:
    preflights = request_count(api, "OPTIONS", "200")
    page = open_page("allowed")
    json_headers = {"Content-Type": "application/json"}
    created = page.fetch(
        "create (JSON: preflighted)",
        f"{api.url}/items",
        {
            "method": "POST",
            "credentials": "include",
            "headers": json_headers,
            "body": json.dumps({"name": "lamp", "quantity": 2}),
        },
    )
    assert (created["error"], created["status"]) == (None, 201), created
    item_id = created["body"]["id"]

    replaced = page.fetch(
        "replace (PUT, Authorization: preflighted)",
        f"{api.url}/items/{item_id}",
        {
            "method": "PUT",
            "credentials": "include",
            "headers": {**json_headers, "Authorization": "Bearer writer"},
            "body": json.dumps({"name": "lamp", "quantity": 5}),
        },
    )
    assert (replaced["error"], replaced["status"]) == (None, 200), replaced
    assert replaced["body"] == {"id": item_id, "name": "lamp", "quantity": 5}
    wait_for_requests(api, "OPTIONS", preflights + 2)  # one per URL, each answered 200


def test_preflighted_write_from_refused_origin_fails(open_page, api) -> None:
    item = httpx.post(f"{api.url}/items", json={"name": "kettle", "quantity": 1}, timeout=5).json()
    puts = request_count(api, "PUT")
    page = open_page("refused")
    result = page.fetch(
        "replace (PUT: preflighted)",
        f"{api.url}/items/{item['id']}",
        {
            "method": "PUT",
            "credentials": "include",
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"name": "stolen", "quantity": 0}),
        },
    )

    assert result["error"] == FAILED, result
    message = page.wait_for_console(CORS_BLOCKED)
    assert "preflight" in message, message
    # The preflight was refused, so the PUT itself never left the browser.
    assert request_count(api, "PUT") == puts
    assert httpx.get(f"{api.url}/items/{item['id']}", timeout=5).json() == item
