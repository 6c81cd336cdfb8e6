"""The hot path's shortcuts give exactly what the plain code would."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
import uvicorn
from hypothesis import given
from hypothesis import strategies as st

from gatehouse.metrics import HotPathStats
from gatehouse.middleware.cors import REFUSAL_SCOPE_KEY, CorsPolicy
from gatehouse.middleware.request_context import RequestIds
from gatehouse.middleware.request_head import RequestHead
from gatehouse.ratelimit.limiter import rate_limit_headers
from gatehouse.ratelimit.memory import MemoryWindowStore
from gatehouse.ratelimit.pipeline import PipelinedRedis, encode_command
from gatehouse.ratelimit.policy import RoutePolicy, Window
from gatehouse.ratelimit.redis_store import PipelinedScript
from gatehouse.ratelimit.script import FIXED_SCRIPT, Verdict
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
    script = PipelinedScript(connection, FIXED_SCRIPT)
    script(keys, args)
    script(keys, args)  # the second from the cached ends
    expected = encode_command("EVALSHA", script.sha, len(keys), *keys, *args)
    assert connection.sent == [expected, expected]


async def test_past_the_template_cache_commands_are_still_right():
    connection = RecordingConnection()
    script = PipelinedScript(connection, FIXED_SCRIPT)
    for n in range(script.MAX_TEMPLATES + 10):
        script(["k"], (1, n, 60_000))
    assert len(script.templates) == script.MAX_TEMPLATES
    assert connection.sent[-1] == encode_command(
        "EVALSHA", script.sha, 1, "k", 1, script.MAX_TEMPLATES + 9, 60_000
    )


def test_policy_script_arguments_are_cost_then_each_window():
    policy = RoutePolicy("p", "/p", (Window(10, 1), Window(100, 60)), cost=3)
    assert policy.script_args == (3, 10, 1_000, 100, 60_000)
    assert policy.header_fields.limits == (
        (b"x-ratelimit-limit", b"10"),
        (b"x-ratelimit-limit", b"100"),
    )


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


HEADER_NAMES = [
    b"host",
    b"origin",
    b"content-length",
    b"transfer-encoding",
    b"x-request-id",
    b"authorization",
    b"sec-fetch-site",
    b"access-control-request-method",
    b"accept",
]
HEADER_VALUES = [b"", b"0", b"12", b"012", b"-1", b"1e3", b"9" * 30, b"chunked", b" Chunked ",
                 b"gzip, chunked", b"a.example", b"same-origin"]  # fmt: skip


@given(
    st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.sampled_from(HEADER_VALUES)), max_size=8)
)
def test_the_one_pass_reads_what_separate_scans_would(headers):
    """``RequestHead`` against the plain reading of each field, one scan per field."""
    head = RequestHead(headers)

    def values(name):
        return [value for field, value in headers if field == name]

    assert head.hosts == len(values(b"host"))
    assert head.origins == len(values(b"origin"))
    assert head.host == (values(b"host") or [None])[-1]
    assert head.request_id == (values(b"x-request-id") or [None])[0]
    assert head.authorization == ([v for v in values(b"authorization") if v] or [None])[0]
    lengths = values(b"content-length")
    codings = values(b"transfer-encoding")
    valid = all(v.isdigit() for v in lengths) and len({int(v) for v in lengths if v.isdigit()}) <= 1
    valid = valid and all(v.strip().lower() == b"chunked" for v in codings)
    valid = valid and not (codings and lengths)
    assert head.body_framing_valid == valid
    declared = max((int(v) for v in lengths if v.isdigit()), default=-1)
    assert head.has_body == (declared > 0 or bool(codings) or not valid)


def test_cors_fields_by_origin():
    refused: list[str] = []
    cors = CorsPolicy(
        allow_origins=["https://app.example.com"],
        allow_methods=["GET"],
        allow_headers=[],
        expose_headers=["X-Request-ID"],
        max_age=600,
        on_refused=refused.append,
    )
    scope: dict[str, object] = {}
    assert cors.cors_fields(None, scope) == [(b"vary", b"Origin")]
    allowed = cors.cors_fields(b"https://app.example.com", scope)
    assert allowed == [
        (b"access-control-allow-origin", b"https://app.example.com"),
        (b"access-control-allow-credentials", b"true"),
        (b"access-control-expose-headers", b"X-Request-ID"),
        (b"vary", b"Origin"),
    ]
    # Built once: an allowed request allocates no list of its own.
    assert cors.cors_fields(b"https://app.example.com", scope) is allowed
    assert refused == [] and scope == {}
    assert cors.cors_fields(b"https://evil.example", scope) == [(b"vary", b"Origin")]
    assert refused == ["origin_not_listed"]
    assert scope[REFUSAL_SCOPE_KEY].value == "https://evil.example"


def test_the_edge_is_served_as_asgi3():
    """uvicorn (and Hypercorn) tell ASGI 3 from ASGI 2 by a coroutine ``__call__``."""
    settings = load_settings(**{**BASE, "https_redirect": True})
    config = uvicorn.Config(build_service(settings), lifespan="off", proxy_headers=False)
    config.load()
    assert config.interface == "asgi3"


@pytest.mark.parametrize("start", [0, 4_090, 2**40 - 3])
def test_made_request_ids_are_the_prefix_and_the_counter_in_ten_hex_digits(start):
    """The head formatted once per 4,096 ids gives what formatting each id would."""
    ids = RequestIds()
    ids.counter = itertools.count(start)
    for number in range(start, start + 5_000):
        assert ids.take(None) == b"%s%010x" % (ids.prefix, number)


@pytest.mark.parametrize(("count", "reset_ms"), [(5, 1_000), (0, 59_001), (1, 4_096_000)])
def test_rate_limit_fields_are_the_formatted_numbers(count, reset_ms):
    """The small-number table and formatting agree, on both sides of its end."""
    policy = RoutePolicy("search", "/search", (Window(10_000, 5_000),))
    fields = dict(rate_limit_headers(policy, (count,), (reset_ms,)))
    remaining, reset = 10_000 - count, -(-reset_ms // 1000)
    assert fields[b"x-ratelimit-remaining"] == b"%d" % remaining
    assert fields[b"x-ratelimit-reset"] == b"%d" % reset
    assert fields[b"ratelimit"] == b'"search";r=%d;t=%d' % (remaining, reset)


def test_decision_counts_outlive_a_reload_and_export_only_what_happened():
    stats = HotPathStats()
    before = stats.decision_counts("/search")
    before.allowed += 2
    after = stats.decision_counts("/search")  # a reload's limiter asks again
    assert after is before
    after.denied += 1
    stats.decision_counts("/items/{item_id}")  # known, never decided: not exported
    family = next(m for m in stats.collect() if m.name == "gatehouse_ratelimit_decisions")
    samples = [(s.labels["route"], s.labels["decision"], s.value) for s in family.samples]
    assert samples == [("/search", "allowed", 2), ("/search", "denied", 1)]
