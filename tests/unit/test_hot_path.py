"""The hot path's shortcuts give exactly what the plain code would."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import uvicorn

from gatehouse.middleware.cors import CORSMiddleware
from gatehouse.middleware.response_fields import RESPONSE_FIELDS, add_response_fields
from gatehouse.ratelimit.memory import MemoryWindowStore
from gatehouse.ratelimit.pipeline import PipelinedRedis, encode_command
from gatehouse.ratelimit.policy import RoutePolicy, Window
from gatehouse.ratelimit.redis_store import PipelinedScript
from gatehouse.ratelimit.script import CHECK_SCRIPT, Verdict
from gatehouse.service import build_service
from gatehouse.settings import load_settings
from tests.unit.conftest import BASE

pytestmark = pytest.mark.anyio


class RecordingConnection(PipelinedRedis):
    """Keeps each submitted command instead of sending it."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 1)
        self.sent: list[bytes] = []

    def submit(self, command: bytes) -> asyncio.Future[Any]:
        self.sent.append(command)
        return asyncio.get_running_loop().create_future()


@pytest.mark.parametrize(
    ("keys", "args"),
    [
        (["gatehouse:{ip:203.0.113.7}:/search:10/60"], (1, 10, 60_000)),
        (["k:{é}:1", "k:{é}:2", "k:{é}:3"], (2, 5, 1_000, 50, 60_000, 500, 3_600_000)),
        (["k"], []),
    ],
)
async def test_a_check_is_the_same_command_as_plainly_encoded(keys, args):
    connection = RecordingConnection()
    script = PipelinedScript(connection, CHECK_SCRIPT)
    script(keys, args)
    script(keys, args)  # the second from the cached ends
    expected = encode_command("EVALSHA", script.sha, len(keys), *keys, *args)
    assert connection.sent == [expected, expected]


async def test_past_the_template_cache_commands_are_still_right():
    connection = RecordingConnection()
    script = PipelinedScript(connection, CHECK_SCRIPT)
    for n in range(script.MAX_TEMPLATES + 10):
        script(["k"], (1, n, 60_000))
    assert len(script.templates) == script.MAX_TEMPLATES
    assert connection.sent[-1] == encode_command(
        "EVALSHA", script.sha, 1, "k", 1, script.MAX_TEMPLATES + 9, 60_000
    )


def test_policy_script_arguments_are_cost_then_each_window():
    policy = RoutePolicy("p", "/p", (Window(10, 1), Window(100, 60)), cost=3)
    assert policy.script_args == (3, 10, 1_000, 100, 60_000)
    assert policy.limit_fields == ((b"x-ratelimit-limit", b"10"), (b"x-ratelimit-limit", b"100"))


def test_one_window_fast_path_matches_the_general_path():
    """The single-window shortcut and the loop keep the same counts, ends and refusals."""
    now = [1_000.0]
    fast, general = MemoryWindowStore(lambda: now[0]), MemoryWindowStore(lambda: now[0])
    window = Window(3, 10)
    for step in range(12):
        now[0] = 1_000.0 + step * 1.7
        one = fast.hit_now(["k"], [window], 1)
        # The general path with the same window twice sees the same single count.
        two = general.hit_now(["k", "k2"], [window, Window(1_000, 10)], 1)
        assert isinstance(one, Verdict)
        assert (one.allowed, one.counts[0], one.resets_ms[0]) == (
            two.allowed,
            two.counts[0],
            two.resets_ms[0],
        )


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def test_a_layer_alone_adds_its_fields_itself():
    """Without a request context around it, a layer wraps send: nothing is lost."""

    async def app(scope, receive, send):
        await _ok(scope, receive, add_response_fields(scope, send, [(b"x-added", b"yes")]))

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/")
    assert response.headers["x-added"] == "yes" and response.headers["x-app"] == "1"


async def test_inside_a_request_context_fields_are_collected_once():
    collected: list[tuple[bytes, bytes]] = []
    scope = {"type": "http", RESPONSE_FIELDS: collected}

    async def send(message):  # pragma: no cover - not called here
        raise AssertionError

    assert add_response_fields(scope, send, [(b"a", b"1")]) is send
    assert add_response_fields(scope, send, [(b"b", b"2")]) is send
    assert collected == [(b"a", b"1"), (b"b", b"2")]


async def test_cors_alone_still_says_vary_origin():
    cors = CORSMiddleware(
        _ok,
        allow_origins=["https://app.example.com"],
        allow_methods=["GET"],
        allow_headers=[],
        expose_headers=[],
        max_age=600,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=cors), base_url="http://t") as c:
        response = await c.get("/")
    assert response.headers["vary"] == "Origin"


def test_every_layer_of_the_edge_is_served_as_asgi3_on_its_own():
    """uvicorn (and Hypercorn) tell ASGI 3 from ASGI 2 by a coroutine ``__call__``: a
    layer returning its inner app's awaitable from a plain function would save a frame
    per request and break the moment it is served outermost (the profile serves each)."""
    settings = load_settings(**{**BASE, "https_redirect": True})
    layer: Any = build_service(settings)
    seen = []
    while hasattr(layer, "app"):
        config = uvicorn.Config(layer, lifespan="off", proxy_headers=False)
        config.load()
        assert config.interface == "asgi3", type(layer).__name__
        seen.append(type(layer).__name__)
        layer = layer.app
    assert {"CORSMiddleware", "TrustedHostMiddleware", "HTTPSRedirectMiddleware"} <= set(seen)
    assert "CrossSiteRequestMiddleware" in seen and "RateLimitMiddleware" in seen
