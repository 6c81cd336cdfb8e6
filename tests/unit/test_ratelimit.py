from __future__ import annotations

import pytest
from slowapi import Limiter
from starlette.routing import Route

from gatehouse.ratelimit.declarations import DeclaringLimiter
from gatehouse.ratelimit.keys import client_key, request_key
from gatehouse.ratelimit.memory import MemoryWindowStore
from gatehouse.ratelimit.policy import RoutePolicy, Window, build_route_table, parse_windows
from tests.unit.conftest import ALLOWED, make_client

pytestmark = pytest.mark.anyio


async def test_exactly_the_limit_is_admitted_then_429():
    async with make_client(rate_limit_search="3/minute") as client:
        responses = [await client.get("/search?q=x") for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    remaining = [int(r.headers["x-ratelimit-remaining"]) for r in responses[:3]]
    assert remaining == [2, 1, 0]  # reaches 0 on the last admitted request


async def test_allowed_responses_carry_the_rate_limit_headers():
    async with make_client(rate_limit_search="10/minute") as client:
        response = await client.get("/search?q=x")
    assert response.headers["x-ratelimit-limit"] == "10"
    assert response.headers["x-ratelimit-remaining"] == "9"
    # make_client's window clock stands at the start of a minute: the whole window is left.
    assert response.headers["x-ratelimit-reset"] == "60"
    assert response.headers["ratelimit-policy"] == '"search";q=10;w=60'
    assert response.headers["ratelimit"] == '"search";r=9;t=60'


async def test_a_429_is_a_problem_with_retry_after_in_seconds():
    async with make_client(rate_limit_search="1/minute") as client:
        await client.get("/search?q=x")
        response = await client.get("/search?q=x", headers={"origin": ALLOWED})
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 429
    # Whole seconds to the window's end; the window clock stands at a minute's start.
    assert response.headers["retry-after"] == "60"
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["ratelimit"] == '"search";r=0;t=60'


async def test_limits_are_keyed_by_route_template_not_url():
    async with make_client(rate_limit_default="2/minute") as client:
        statuses = [(await client.get(f"/items/{i}")).status_code for i in (1, 2, 3)]
    assert statuses == [404, 404, 429]


async def test_each_route_has_its_own_budget():
    async with make_client(rate_limit_search="1/minute", rate_limit_default="5/minute") as client:
        await client.get("/search?q=x")
        assert (await client.get("/search?q=x")).status_code == 429
        assert (await client.get("/whoami")).status_code == 200


async def test_rotating_an_unverified_credential_buys_no_fresh_budget():
    # No JWKS configured: nothing verifies a token, so every one counts by the IP.
    async with make_client(rate_limit_search="2/minute") as client:
        statuses = [
            (await client.get("/search?q=x", headers={"authorization": f"Bearer t{n}"})).status_code
            for n in range(3)
        ]
        anonymous = await client.get("/search?q=x")
    assert statuses == [200, 200, 429]
    assert anonymous.status_code == 429


def test_an_unverified_credential_never_makes_a_key():
    key = client_key({"headers": [(b"authorization", b"Bearer s3cret")], "client": ("1.2.3.4", 1)})
    assert key == "ip:1.2.3.4"


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", True),
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
        ("192.0.2.1", "192.0.2.2", False),
    ],
)
def test_ipv6_clients_are_keyed_by_their_64(first, second, same):
    def key(host: str) -> str:
        return client_key({"headers": [], "client": (host, 1)})

    assert (key(first) == key(second)) is same


async def test_probes_and_metrics_are_never_limited():
    async with make_client(rate_limit_default="1/minute") as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            for _ in range(3):
                response = await client.get(path)
                assert response.status_code == 200
                assert "ratelimit" not in response.headers


async def test_a_method_the_route_does_not_answer_is_not_counted():
    async with make_client(rate_limit_search="1/minute") as client:
        for _ in range(3):
            assert (await client.delete("/search")).status_code == 405
        assert (await client.get("/search?q=x")).status_code == 200


async def test_several_windows_are_all_or_nothing():
    # The three requests in one second window: make_client's window clock stands still.
    async with make_client(rate_limit_search="2/second;3/minute") as client:
        statuses = [(await client.get("/search?q=x")).status_code for _ in range(3)]
        headers = (await client.get("/search?q=x")).headers
    assert statuses == [200, 200, 429]
    assert headers["ratelimit-policy"] == '"search-1s";q=2;w=1, "search-60s";q=3;w=60'


def test_memory_store_refused_hit_consumes_no_window():
    now = [1000.0]
    store = MemoryWindowStore(clock=lambda: now[0])
    windows = (Window(1, 1), Window(5, 60))
    keys = ("a:1", "a:60")
    assert store.hit_now(keys, windows, 1).allowed
    refused = store.hit_now(keys, windows, 1)
    assert not refused.allowed
    assert refused.counts == (1, 1)  # the minute window was not charged
    now[0] += 1.0
    assert store.hit_now(keys, windows, 1).counts == (1, 2)


def test_memory_store_windows_align_to_the_clock():
    now = [120.25]
    store = MemoryWindowStore(clock=lambda: now[0])
    verdict = store.hit_now(("k",), (Window(5, 60),), 1)
    assert verdict.resets_ms == (59750,)
    now[0] = 180.0
    assert store.hit_now(("k",), (Window(5, 60),), 1).counts == (1,)


def test_rate_strings_parse_with_limits():
    assert parse_windows("10/second;100/minute;1000/hour") == (
        Window(10, 1),
        Window(100, 60),
        Window(1000, 3600),
    )


@pytest.mark.parametrize(
    "limiter",
    [
        Limiter(key_func=request_key, enabled=False),
        DeclaringLimiter(key_func=request_key, default_limit="1/second"),
    ],
    ids=["slowapi", "declaring"],
)
def test_route_table_reads_slowapi_declarations(limiter):

    @limiter.limit("5/minute")
    async def limited(request):  # pragma: no cover - never called
        return None

    @limiter.exempt
    async def open_route(request):  # pragma: no cover
        return None

    async def plain(request):  # pragma: no cover
        return None

    table = build_route_table(
        [Route("/a/{x}", limited), Route("/b", open_route), Route("/c", plain)],
        limiter,
        "7/hour",
        request_key,
    )

    def match(path: str, method: str = "GET") -> RoutePolicy | None:
        return table.match({"path": path, "method": method})

    limited_policy = match("/a/42")
    assert limited_policy is not None
    assert (limited_policy.route, limited_policy.windows) == ("/a/{x}", (Window(5, 60),))
    assert match("/b") is None
    plain_policy = match("/c")
    assert plain_policy is not None and plain_policy.windows == (Window(7, 3600),)
    assert match("/c", "POST") is None
    unmatched = match("/zzz")
    assert unmatched is not None and unmatched.route == "<unmatched>"


def test_declaring_limiter_keeps_routes_as_written_and_records_as_slowapi_does():
    limiter = DeclaringLimiter(key_func=request_key, default_limit="1/second")

    async def limited(request):  # pragma: no cover - never called
        return None

    async def shared(request):  # pragma: no cover
        return None

    async def open_route(request):  # pragma: no cover
        return None

    assert limiter.limit("5/minute;100/hour", per_method=True)(limited) is limited
    assert limiter.shared_limit("3/second", scope="group")(shared) is shared
    assert limiter.exempt(open_route) is open_route
    assert not limiter.enabled  # slowapi's own (blocking) check never runs
    name = f"{limited.__module__}.{limited.__name__}"
    assert [str(lim.limit) for lim in limiter._route_limits[name]] == [
        "5 per 1 minute",
        "100 per 1 hour",
    ]
    assert limiter._route_limits[name][0].per_method
    assert [str(lim.limit) for lim in limiter._route_limits[f"{shared.__module__}.shared"]] == [
        "3 per 1 second"
    ]
    assert f"{open_route.__module__}.{open_route.__name__}" in limiter._exempt_routes

    async def no_request(q):  # pragma: no cover
        return None

    with pytest.raises(Exception, match='No "request"'):
        limiter.limit("5/minute")(no_request)


def test_the_environment_cannot_turn_slowapis_own_check_on(monkeypatch):
    """Stock slowapi reads RATELIMIT_ENABLED from the environment over ``enabled=False``:
    a stray variable would run its synchronous check inside every limited route."""
    monkeypatch.setenv("RATELIMIT_ENABLED", "true")
    assert Limiter(key_func=request_key, enabled=False).enabled  # the defect, still there
    limiter = DeclaringLimiter(key_func=request_key, default_limit="1/second")
    assert not limiter.enabled

    async def limited(request):  # pragma: no cover - never called
        return None

    assert limiter.limit("5/minute")(limited) is limited


def test_the_cluster_client_never_reruns_a_check_it_sent():
    """redis-py's default closes every connection after five MOVED replies, in-flight
    checks included, and its retry then runs them a second time: one hit counted twice
    while slots move (caught by tests/topologies' reshard test). Each MOVED must update
    its own slot instead."""
    from gatehouse.ratelimit.redis_store import RedisPyRunner

    runner = RedisPyRunner.from_url("redis+cluster://127.0.0.1:7000", None, 0.25)
    assert runner.client.reinitialize_steps == 0


async def test_decisions_are_counted_per_route_and_outcome():
    async with make_client(rate_limit_search="1/minute") as client:
        await client.get("/search?q=x")
        await client.get("/search?q=x")
        metrics = (await client.get("/metrics")).text
    assert 'gatehouse_ratelimit_decisions_total{decision="allowed",route="/search"} 1.0' in metrics
    assert 'gatehouse_ratelimit_decisions_total{decision="denied",route="/search"} 1.0' in metrics
    assert 'decision="unavailable",route="/search"' not in metrics  # none happened
