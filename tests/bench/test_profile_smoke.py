"""A seconds-long run of ``make bench-profile`` so the profile keeps working (no timing asserted)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from bench.profile import edge_layers, main
from bench.run import GATEHOUSE_ENV

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed (make system-deps)"
)


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile")
    arguments = [
        "--out", str(out), "--no-valgrind", "--layer-rounds", "6",
        "--server-rounds", "1", "--server-duration", "0.5", "--live-seconds", "2",
        "--concern-calls", "600",
    ]  # fmt: skip
    assert main(arguments) == 0
    return json.loads((out / "profile.json").read_text()), (out / "profile.md").read_text()


def test_every_layer_is_measured_from_the_inside_out(profile):
    data, report = profile
    configs = [(row["storage"], row["config"]) for row in data["layers"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")} | GATEHOUSE_ENV
    layers = edge_layers(env)
    assert layers and layers[-1] == "Edge"  # the switch a reload replaces the policy behind
    edge = [f"gatehouse:{layer}" for layer in layers]
    assert configs == [
        ("contract", "bare"),
        ("contract", "bare+headers"),
        ("contract", "floor"),
        ("memory", "gatehouse:FastAPI"),
        *[("memory", config) for config in edge],
        ("redis", "gatehouse:FastAPI"),
        *[("redis", config) for config in edge],
        ("redis", "gatehouse-default-gc"),
        ("scaffolding", "gatehouse:FastAPI"),
        ("scaffolding", "do-nothing-layer"),
        ("scaffolding", "send-wrapper-layer"),
    ]
    assert all(row["per_request"] > 0 for row in data["layers"])
    assert "## 2. Layers, in process" in report


def test_servers_are_measured_and_the_redis_one_checks_once_per_request(profile):
    data, report = profile
    rows = {row["server"]: row for row in data["servers"]}
    assert list(rows) == [
        "bare",
        "bare+headers",
        "floor",
        "gatehouse-memory",
        "gatehouse-redis",
    ]
    assert all(row["cpu_us_per_request"] > 0 and row["rps"] > 0 for row in rows.values())
    assert rows["gatehouse-redis"]["scripts_per_request"] == pytest.approx(1.0, abs=0.05)
    assert rows["gatehouse-memory"]["scripts_per_request"] is None
    assert "0.70x of bare needs at most" in report


def test_the_live_server_is_sampled(profile):
    data, report = profile
    functions = data["functions"]
    if "skipped" in functions:
        pytest.skip(functions["skipped"])
    assert functions["samples"] > 0
    # The sampled process is Gatehouse's: its edge shows up in the stacks.
    assert any(name.startswith("gatehouse/") for name, _share in functions["edge_inclusive"])
    assert "## 3. Functions, live" in report


def test_every_concern_of_the_edge_is_measured(profile):
    from bench.concerns import PIECES

    data, report = profile
    assert [row["piece"] for row in data["concerns"]] == [
        *[piece for piece in PIECES if piece != "empty-loop"],
        "empty-loop",
    ]
    assert all(row["per_call"] > 0 for row in data["concerns"])
    assert "## 4. The edge's concerns, one call at a time" in report
