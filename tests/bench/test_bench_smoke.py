"""A seconds-long run of ``make bench`` so the benchmark keeps working (no timing asserted)."""

from __future__ import annotations

import json
import shutil

import pytest
from bench.run import main

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed (make system-deps)"
)


def test_the_benchmark_runs_and_reports_every_server(tmp_path):
    assert main(["--duration", "1", "--rounds", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    rows = {(row["scenario"], row["server"]): row for row in data["rows"]}
    expected_servers = {
        "bare",
        "bare+16-headers",
        "bare+16-headers+redis-check",
        "lesson-memory",
        "lesson-redis",
        "gatehouse-memory",
        "gatehouse-redis",
        "gatehouse-redis-default-gc",
        "gatehouse-redis-3-windows",
    }
    assert {server for scenario, server in rows if scenario == "throughput"} == expected_servers
    assert all(row["rps"] > 0 for row in rows.values())
    assert (tmp_path / "results.png").stat().st_size > 0
    assert "| throughput | gatehouse-redis |" in (tmp_path / "results.md").read_text()
    # Behaviour, not speed: one script call per limited request, none for a preflight.
    assert rows[("throughput", "gatehouse-redis")]["script_calls"] == pytest.approx(1.0, abs=0.05)
    assert rows[("throughput", "gatehouse-redis-3-windows")]["script_calls"] == pytest.approx(
        1.0, abs=0.05
    )
    assert rows[("preflight", "gatehouse-redis")]["redis_commands"] == 0
    # The floor server makes the same single check per request as Gatehouse.
    assert rows[("throughput", "bare+16-headers+redis-check")]["script_calls"] == pytest.approx(
        1.0, abs=0.05
    )
    assert rows[("throughput", "gatehouse-redis")]["errors"] == 0
    # The pipelined client never needs more than one write per check.
    assert rows[("slow-redis", "gatehouse-redis-slow")]["round_trips"] <= 1.0
