"""The edge decides from one policy: repeated headers, mapped IPv6 clients, and reloads
that swap the whole ``EdgePolicy`` or nothing (``gatehouse.edge``, ``config_reload``)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import httpx
import pytest
import uvicorn

from gatehouse.config_reload import ConfigWatcher
from gatehouse.edge import Edge
from gatehouse.ratelimit.keys import client_key
from gatehouse.service import build_service
from gatehouse.settings import load_settings
from tests.unit.conftest import ALLOWED, make_client

pytestmark = pytest.mark.anyio

REFUSED = "https://evil.example"


# --- one Origin, one Host --------------------------------------------------------------


async def test_two_origins_are_a_400_not_a_201_for_the_refused_one():
    # Before: CORS judged the first Origin, the cross-site check the last, so a POST
    # from a refused origin with an allowed one after it was created (201).
    async with make_client() as client:
        response = await client.post(
            "/items",
            json={"name": "x"},
            headers=[("origin", REFUSED), ("origin", ALLOWED)],
        )
    assert response.status_code == 400
    assert response.json()["detail"] == "a header that must appear once appears more than once"
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"  # outer layers still apply


async def test_two_host_fields_are_a_400_even_where_any_host_is_accepted():
    async with make_client(trusted_hosts=["*"]) as client:
        response = await client.get(
            "/search?q=x", headers=[("host", "api.example.com"), ("host", "evil.example")]
        )
    assert response.status_code == 400
    # Answered inside the request context: with an id it made (none was sent).
    assert re.fullmatch(r"[0-9a-f]{26}", response.headers["x-request-id"])


async def test_one_origin_and_one_host_pass():
    async with make_client() as client:
        response = await client.get("/search?q=x", headers={"origin": ALLOWED})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED


# --- IPv4-mapped IPv6 clients ----------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("::ffff:192.0.2.7", "ip:192.0.2.7"),
        ("::ffff:c000:207", "ip:192.0.2.7"),
        ("192.0.2.7", "ip:192.0.2.7"),
        ("::ffff:198.51.100.1", "ip:198.51.100.1"),
        ("2001:db8::1", "net:2001:db8::/64"),
    ],
)
def test_a_mapped_address_is_keyed_as_the_ipv4_client_it_carries(host: str, key: str) -> None:
    assert client_key({"type": "http", "headers": [], "client": (host, 1)}) == key


async def test_mapped_clients_share_their_ipv4_budget_and_no_one_elses():
    # Before: every mapped client fell into one ::/64 key: one client could spend
    # everyone's budget, and a v4 client doubled its own through its mapped form.
    # The clients arrive through a trusted proxy, which names them in X-Forwarded-For.
    async with make_client(client_addr=("10.0.0.1", 5000)) as client:

        async def statuses(address: str, count: int) -> list[int]:
            headers = {"x-forwarded-for": address}
            return [
                (await client.get("/search?q=x", headers=headers)).status_code for _ in range(count)
            ]

        assert await statuses("203.0.113.7", 6) == [200] * 6
        # 10/minute, shared with its IPv4 form: 4 left.
        assert await statuses("::ffff:203.0.113.7", 6) == [200] * 4 + [429] * 2
        assert await statuses("::ffff:198.51.100.1", 10) == [200] * 10
        assert await statuses("198.51.100.1", 1) == [429]


# --- reloads swap the whole policy -----------------------------------------------------


class Volume:
    """A settings directory and an origins file of any name, written as an operator might."""

    def __init__(self, root: Path, origins_name: str = "origins.txt") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.origins = root / origins_name

    def write(self, origins: str, **keys: str) -> None:
        self.origins.write_text(origins)
        for key, value in keys.items():
            (self.root / key).write_text(value)


def _service(volume: Volume, **overrides: object) -> tuple[Edge, ConfigWatcher, list[str]]:
    settings = load_settings(
        allowed_origins_file=str(volume.origins),
        trusted_hosts=["*"],
        **overrides,
    )
    edge = build_service(settings)
    results: list[str] = []
    watcher = ConfigWatcher(
        settings, edge.apply, logger=logging.getLogger("test"), count=results.append, settle=0
    )
    watcher.last_seen = watcher._read()
    return edge, watcher, results


async def _allow_origin(edge: Edge, origin: str) -> str | None:
    config = uvicorn.Config(edge, lifespan="off")
    config.load()
    transport = httpx.ASGITransport(app=config.loaded_app, client=("203.0.113.9", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.get("/healthz", headers={"origin": origin})
    return response.headers.get("access-control-allow-origin")


async def test_the_file_named_by_the_variable_is_followed_whatever_its_name(tmp_path):
    # Before: only a file literally named APP_ALLOWED_ORIGINS was watched.
    volume = Volume(tmp_path, "team-origins")
    volume.write("https://first.example")
    edge, watcher, results = _service(volume)
    volume.write("https://second.example")
    await watcher.check()
    assert results == ["applied"]
    assert await _allow_origin(edge, "https://second.example") == "https://second.example"
    assert await _allow_origin(edge, "https://first.example") is None


async def test_a_list_replaced_by_the_wildcard_allows_every_origin(tmp_path):
    # Before: the list was swapped for {"*"} but not the wildcard flag: nothing allowed.
    volume = Volume(tmp_path)
    volume.write("https://first.example")
    edge, watcher, results = _service(volume, allow_credentials=False)
    volume.write("*")
    await watcher.check()
    assert results == ["applied"]
    assert await _allow_origin(edge, "https://any.example") == "*"
    assert edge.policy.allow_all_origins is True


async def test_the_wildcard_replaced_by_a_list_stops_allowing_everyone(tmp_path):
    # Before: the wildcard flag stayed set and every origin stayed allowed.
    volume = Volume(tmp_path)
    volume.write("*")
    edge, watcher, results = _service(volume, allow_credentials=False)
    assert await _allow_origin(edge, "https://any.example") == "*"
    volume.write("https://only.example")
    await watcher.check()
    assert results == ["applied"]
    assert await _allow_origin(edge, "https://any.example") is None
    assert await _allow_origin(edge, "https://only.example") == "https://only.example"


@pytest.mark.parametrize("written", ["", "\n", '["https://second.example", "https://th'])
async def test_an_empty_or_half_written_file_keeps_the_last_good_policy(tmp_path, written):
    volume = Volume(tmp_path)
    volume.write("https://first.example")
    edge, watcher, results = _service(volume)
    before = edge.policy
    volume.write(written)
    await watcher.check()
    assert results == ["rejected"]
    assert edge.policy is before
    assert await _allow_origin(edge, "https://first.example") == "https://first.example"


async def test_a_file_still_changing_is_not_applied_until_it_settles(tmp_path):
    volume = Volume(tmp_path)
    volume.write("https://first.example")
    edge, watcher, results = _service(volume)
    watcher.settle = 0.05
    before = edge.policy

    async def keep_writing() -> None:
        await asyncio.sleep(0.02)
        volume.write("https://second.example,https://third.example")

    volume.write("https://second.example")
    await asyncio.gather(watcher.check(), keep_writing())
    assert results == [] and edge.policy is before
    await watcher.check()  # the next poll sees it whole
    assert results == ["applied"]
    assert edge.policy.allowed_origins == frozenset(
        {"https://second.example", "https://third.example"}
    )


async def test_a_bad_key_beside_a_good_allowlist_changes_nothing(tmp_path):
    volume = Volume(tmp_path)
    volume.write("https://first.example", APP_RATE_LIMIT_SEARCH="10/minute")
    edge, watcher, results = _service(volume)
    before = edge.policy
    volume.write("https://second.example", APP_RATE_LIMIT_SEARCH="ten a minute")
    await watcher.check()
    assert results == ["rejected"]
    assert edge.policy is before
    assert await _allow_origin(edge, "https://second.example") is None


async def test_a_reload_swaps_origins_limits_and_cross_site_policy_together(tmp_path):
    volume = Volume(tmp_path)
    volume.write("https://first.example", APP_RATE_LIMIT_SEARCH="10/minute")
    edge, watcher, results = _service(volume)
    volume.write(
        "https://second.example",
        APP_RATE_LIMIT_SEARCH="3/minute",
        APP_CROSS_SITE_POLICY="off",
    )
    await watcher.check()
    assert results == ["applied"]
    policy = edge.policy
    assert policy.allowed_origins == frozenset({"https://second.example"})
    assert policy.cross_site_policy == "off"
    search = policy.rate_limits.match({"type": "http", "path": "/search", "method": "GET"})
    assert search is not None and [w.amount for w in search.windows] == [3]
