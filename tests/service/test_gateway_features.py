"""What the best gateways offer, in the service: cross-site refusal, shadow limits,
several windows, exempt networks, and limit policy reloaded from the ConfigMap."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest
from redis.crc import key_slot

from tests.helpers import stored_hits, wait_until
from tests.jwt_keys import client_authorization
from tests.kubelet_volume import ConfigMapVolume
from tests.service.conftest import ALLOWED
from tests.service.test_shared_limit import ONE_HEARTBEAT, burst

EVIL = "https://evil.example"


def metric(url: str, line_start: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def item_exists(url: str, name: str) -> bool:
    found = httpx.get(
        f"{url}/search",
        params={"q": name},
        headers={"authorization": client_authorization("reader")},
    )
    return name in [item["name"] for item in found.json()["results"]]


# --- cross-site requests ------------------------------------------------------------------

CROSS_SITE_CASES = [
    # (headers, refused?)
    ({"origin": EVIL}, True),
    ({"origin": EVIL, "sec-fetch-site": "cross-site"}, True),
    ({"origin": "null"}, True),
    ({"sec-fetch-site": "cross-site"}, True),
    ({"origin": ALLOWED, "sec-fetch-site": "cross-site"}, False),
    ({"sec-fetch-site": "same-origin", "origin": "https://api.example.com"}, False),
    ({"sec-fetch-site": "same-site"}, False),
    ({}, False),  # curl, servers, the cluster probes
]


@pytest.fixture(scope="module")
def refusing_server(tmp_path_factory):
    from tests.helpers import ApiServer

    server = ApiServer(
        {
            "APP_ALLOWED_ORIGINS": ALLOWED,
            "APP_RATE_LIMIT_DEFAULT": "10000/minute",
            "APP_RATE_LIMIT_SEARCH": "10000/minute",
        }
    )
    server.start(tmp_path_factory.mktemp("cross-site"))
    yield server
    server.stop()


@pytest.mark.parametrize(("headers", "refused"), CROSS_SITE_CASES)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_unsafe_cross_site_requests_are_refused(refusing_server, method, headers, refused):
    url = refusing_server.url
    name = f"probe-{method}-{len(headers)}-{time.monotonic_ns()}"
    before = metric(url, 'gatehouse_cross_site_requests_total{action="refused"}')
    path = "/items"
    if method != "POST":
        # An item of this test's own, made with no cross-site header: what the route
        # answers then does not depend on which cases ran before.
        target = httpx.post(f"{url}/items", json={"name": f"target-{name}"})
        assert target.status_code == 201
        path = f"/items/{target.json()['id']}"
    response = httpx.request(
        method,
        f"{url}{path}",
        content=f'{{"name": "{name}"}}',
        headers={**headers, "content-type": "application/json"},
    )
    after = metric(url, 'gatehouse_cross_site_requests_total{action="refused"}')
    if refused:
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "access-control-allow-origin" not in response.headers
        assert after == before + 1
        assert not item_exists(url, name)
    else:
        # Past the check, the route answers as to anyone; no route takes PATCH: 405.
        expected = {"POST": 201, "PUT": 200, "DELETE": 204, "PATCH": 405}[method]
        assert response.status_code == expected
        assert after == before
        if method in ("POST", "PUT"):
            assert item_exists(url, name)


def test_safe_methods_and_preflights_pass(refusing_server):
    url = refusing_server.url
    assert httpx.get(f"{url}/search?q=x", headers={"origin": EVIL}).status_code == 200
    preflight = httpx.options(
        f"{url}/items", headers={"origin": ALLOWED, "access-control-request-method": "POST"}
    )
    assert preflight.status_code == 200


@pytest.mark.parametrize(
    ("policy", "status", "action"), [("shadow", 201, "shadowed"), ("off", 201, None)]
)
def test_cross_site_policy_shadow_and_off(api_server, policy, status, action):
    server = api_server({"APP_CROSS_SITE_POLICY": policy})
    response = httpx.post(
        f"{server.url}/items", json={"name": "probe-shadow"}, headers={"origin": EVIL}
    )
    assert response.status_code == status
    text = httpx.get(f"{server.url}/metrics").text
    if action:
        assert f'gatehouse_cross_site_requests_total{{action="{action}"}} 1.0' in text
    else:
        assert "gatehouse_cross_site_requests_total{" not in text


# --- shadow limits -------------------------------------------------------------------------


def shadow_denied(urls: list[str], route: str) -> float:
    line = f'gatehouse_ratelimit_decisions_total{{decision="shadow_denied",route="{route}"}}'
    return sum(metric(url, line) for url in urls)


def test_shadow_counts_across_replicas_exactly_as_enforced(api_server, redis_db, fresh_minute):
    common = {
        "APP_REDIS_URL": redis_db.url,
        "APP_RATE_LIMIT_SEARCH": "10/minute",
        "APP_REPLICAS": "3",
    }
    shadow = [api_server({**common, "APP_RATE_LIMIT_MODE": "shadow"}) for _ in range(3)]
    urls = [server.url for server in shadow]

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            limits=httpx.Limits(max_connections=100), timeout=10
        ) as client:
            return await asyncio.gather(
                *(client.get(f"{urls[i % 3]}/search?q=x") for i in range(100))
            )

    responses = asyncio.run(run())
    assert Counter(r.status_code for r in responses) == {200: 100}
    assert not any("ratelimit" in r.headers or "x-ratelimit-limit" in r.headers for r in responses)
    assert shadow_denied(urls, "/search") == 90
    allowed = sum(
        metric(url, 'gatehouse_ratelimit_decisions_total{decision="allowed",route="/search"}')
        for url in urls
    )
    assert allowed == 10
    shadow_count = stored_hits(redis_db.client(), redis_db.client().keys("gatehouse:*")[0])

    # The same burst, enforced, against the same Redis (emptied): the same count.
    redis_db.client().flushall()
    enforced = [api_server(common) for _ in range(3)]
    statuses = asyncio.run(burst([server.url for server in enforced], 100, "/search?q=x"))
    enforced_count = stored_hits(redis_db.client(), redis_db.client().keys("gatehouse:*")[0])
    assert statuses == {200: 10, 429: 90}
    assert shadow_count == enforced_count == 10


def test_one_route_in_shadow_the_others_enforced(api_server, fresh_minute):
    server = api_server(
        {
            "APP_RATE_LIMIT_SEARCH": "1/minute",
            "APP_RATE_LIMIT_DEFAULT": "1/minute",
            "APP_RATE_LIMIT_SHADOW_ROUTES": "/search",
        }
    )
    searches = [httpx.get(f"{server.url}/search?q=x").status_code for _ in range(3)]
    whoami = [httpx.get(f"{server.url}/whoami").status_code for _ in range(2)]
    assert searches == [200, 200, 200]
    assert whoami == [200, 429]
    assert shadow_denied([server.url], "/search") == 2


def test_an_unknown_shadow_route_stops_start_up(tmp_path):
    import subprocess

    from tests.helpers import PYTHON

    result = subprocess.run(
        [PYTHON, "-m", "gatehouse"],
        env={"PATH": "/usr/bin:/bin", "APP_RATE_LIMIT_SHADOW_ROUTES": "/nope"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "APP_RATE_LIMIT_SHADOW_ROUTES" in lines[0] and "/nope" in lines[0]


# --- several windows ------------------------------------------------------------------------


def redis_now(redis) -> float:
    seconds, micros = redis.client().time()
    return seconds + micros / 1e6


def test_several_fixed_windows_are_exact_at_each_edge(api_server, redis_db):
    server = api_server(
        {
            "APP_REDIS_URL": redis_db.url,
            "APP_RATE_LIMIT_SEARCH": "2/second;3/minute",
            "APP_RATE_LIMIT_ALGORITHM": "fixed",  # windows that start afresh at each edge
        }
    )
    client = redis_db.client()

    def counts() -> dict[str, int]:
        keys = client.keys("gatehouse:*")
        return {key.decode().rsplit(":", 1)[1]: int(client.get(key)) for key in keys}

    def in_one_second(http: httpx.Client, n: int) -> tuple[list[httpx.Response], dict] | None:
        """``n`` requests and the counts after them, or None if Redis's clock passed a
        second's edge meanwhile: on a loaded machine a few requests can, and the windows
        are then not the ones meant."""
        second = int(redis_now(redis_db))
        responses = [http.get("/search?q=x") for _ in range(n)]
        after = counts()
        return (responses, after) if int(redis_now(redis_db)) == second else None

    with httpx.Client(base_url=server.url) as http:
        for _attempt in range(5):
            client.flushdb()  # a fresh start for every window
            # Start just after a second begins (Redis's clock), away from a minute's end.
            while True:
                now = redis_now(redis_db)
                if 0.02 < now % 1 < 0.15 and now % 60 < 50:
                    break
                time.sleep(0.005)
            first = in_one_second(http, 3)
            if first is None:
                continue
            time.sleep(1.0 - redis_now(redis_db) % 1 + 0.02)
            second = in_one_second(http, 2)
            if second is not None:
                break
        else:
            pytest.fail("in 5 attempts, no batch of requests fitted in one second")
    first_second, first_counts = first
    next_second, next_counts = second

    assert [r.status_code for r in first_second] == [200, 200, 429]
    # The refused third request consumed neither window.
    assert first_counts == {"2/1": 2, "3/60": 2}
    assert first_second[1].headers["x-ratelimit-remaining"] == "0"
    assert (
        first_second[1].headers["ratelimit-policy"] == '"search-1s";q=2;w=1, "search-60s";q=3;w=60'
    )
    # The one-second window reports itself as the closest to refusal.
    # Refused within the second it started: its window ends in under a second, t=1.
    assert first_second[2].headers["ratelimit"] == '"search-1s";r=0;t=1'
    assert first_second[2].headers["retry-after"] == "1"

    # Next second: the second-window is new, the minute-window has one left.
    assert [r.status_code for r in next_second] == [200, 429]
    assert next_second[0].headers["x-ratelimit-remaining"] == "0"
    # Only the minute window refuses: the wait is to its end, whatever second that is now.
    retry_after = next_second[1].headers["retry-after"]
    assert next_second[1].headers["ratelimit"] == f'"search-60s";r=0;t={retry_after}'
    assert int(retry_after) > 1
    assert next_counts == {"2/1": 1, "3/60": 3}


def test_several_windows_cost_one_script_call(api_server, redis_db):
    server = api_server(
        {
            "APP_REDIS_URL": redis_db.url,
            "APP_RATE_LIMIT_SEARCH": "100/second;1000/minute;10000/hour",
            **ONE_HEARTBEAT,
        }
    )
    assert httpx.get(f"{server.url}/search?q=x").status_code == 200
    redis_db.client().config_resetstat()
    for _ in range(10):
        assert httpx.get(f"{server.url}/search?q=x").status_code == 200
    assert redis_db.client().info("commandstats")["cmdstat_evalsha"]["calls"] == 10
    # One key per window (the one-second key may have expired since), all in one slot.
    keys = redis_db.client().keys("gatehouse:*")
    # (The default algorithm: a sliding log for the first two, counters for the third.)
    windows = {":".join(key.decode().rsplit(":", 2)[1:]) for key in keys}
    assert windows <= {"100/1:log", "1000/60:log", "10000/3600:ctr"}
    assert len({key_slot(key) for key in keys}) == 1


# --- exempt networks ------------------------------------------------------------------------


def test_exempt_networks_follow_the_trusted_client_ip(api_server, fresh_minute):
    server = api_server(
        {
            "FORWARDED_ALLOW_IPS": "127.0.10.0/24",
            "APP_RATE_LIMIT_SEARCH": "1/minute",
            "APP_RATE_LIMIT_EXEMPT_CIDRS": "198.51.100.0/24,127.0.10.0/24",
        }
    )
    proxy = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.10.1"))

    def via_proxy(client_ip: str) -> httpx.Response:
        return proxy.get(f"{server.url}/search?q=x", headers={"x-forwarded-for": client_ip})

    office = [via_proxy("198.51.100.7") for _ in range(4)]
    assert [r.status_code for r in office] == [200] * 4
    assert "x-ratelimit-limit" not in office[0].headers
    # The proxy's own network is exempt, but the client it vouches for is not.
    outsider = [via_proxy("203.0.113.9").status_code for _ in range(2)]
    assert outsider == [200, 429]
    # A direct peer cannot claim an exempt address: it is counted as itself.
    direct = [
        httpx.get(
            f"{server.url}/search?q=x", headers={"x-forwarded-for": "198.51.100.7"}
        ).status_code
        for _ in range(2)
    ]
    assert direct == [200, 429]
    proxy.close()


# --- the policy from the ConfigMap, reloaded ------------------------------------------------


def test_limit_policy_reloads_from_the_configmap(api_server, tmp_path, fresh_minute):
    data = {"APP_ALLOWED_ORIGINS": ALLOWED, "APP_RATE_LIMIT_SEARCH": "2/minute"}
    volume = ConfigMapVolume(tmp_path / "config", data)
    server = api_server(
        {
            **data,
            "APP_ALLOWED_ORIGINS_FILE": str(volume.path("APP_ALLOWED_ORIGINS")),
            "APP_CONFIG_RELOAD_INTERVAL": "0.2",
        }
    )
    url = server.url

    def statuses(count: int, token: str) -> list[int]:
        headers = {"authorization": client_authorization(token)}
        return [httpx.get(f"{url}/search?q=x", headers=headers).status_code for _ in range(count)]

    assert statuses(3, "a") == [200, 200, 429]

    volume.update({**data, "APP_RATE_LIMIT_SEARCH": "4/minute"})
    wait_until(
        lambda: metric(url, 'gatehouse_config_reloads_total{result="applied"}') == 1,
        timeout=5,
        what="reload 1",
    )
    assert statuses(5, "b") == [200] * 4 + [429]

    volume.update({**data, "APP_RATE_LIMIT_SEARCH": "4/minute", "APP_RATE_LIMIT_MODE": "shadow"})
    wait_until(
        lambda: metric(url, 'gatehouse_config_reloads_total{result="applied"}') == 2,
        timeout=5,
        what="reload 2",
    )
    assert statuses(6, "c") == [200] * 6

    # Invalid: an unknown route. Nothing of it applies, the last good policy stays.
    volume.update(
        {
            **data,
            "APP_RATE_LIMIT_SEARCH": "1/minute",
            "APP_RATE_LIMIT_ROUTES": '{"/nope": "1/minute"}',
        }
    )
    wait_until(
        lambda: metric(url, 'gatehouse_config_reloads_total{result="rejected"}') == 1,
        timeout=5,
        what="rejection",
    )
    assert statuses(6, "d") == [200] * 6  # still shadow, still 4/minute
    assert httpx.get(f"{url}/healthz").status_code == 200
