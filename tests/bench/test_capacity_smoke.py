"""A seconds-long run of ``python -m bench.capacity`` (no timing asserted)."""

from __future__ import annotations

import re
import shutil

import pytest
from bench.capacity import main

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed (make system-deps)"
)


def test_the_capacity_model_is_measured_and_written(tmp_path):
    assert main(["--duration", "1", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "capacity.md").read_text()
    assert (tmp_path / "capacity.png").stat().st_size > 0
    assert report.startswith("# Capacity")
    assert "## Operations: one Redis, Sentinel or Cluster" in report
    rows = re.findall(
        r"^\| (pipelined|redis-py) \| (\d+) \| ([\d,.]+) \| (\d+) \| ([\d.]+) ms \| ([\d.]+) us "
        r"\| ([\d.]+) us \| ([\d.]+) \|$",
        report,
        re.MULTILINE,
    )
    assert {row[0] for row in rows} == {"pipelined", "redis-py"}
    for _client, requests, rps, errors, api_ms, redis_us, evalsha_us, calls in rows:
        assert int(requests) > 0 and float(rps.replace(",", "")) > 0
        assert int(errors) == 0
        assert float(api_ms) > 0 and float(redis_us) > 0 and float(evalsha_us) > 0
        assert float(calls) == pytest.approx(1.0, abs=0.05)
    sizing = re.findall(
        r"^\| ([\d,]+) \| (\d+) \| (yes|no) \| (\d+) \| (\d+) \|$", report, re.MULTILINE
    )
    assert [row[0] for row in sizing] == ["1,000", "5,000", "20,000", "100,000"]
    assert all(int(row[1]) > 0 and int(row[3]) > 0 and int(row[4]) > 0 for row in sizing)
