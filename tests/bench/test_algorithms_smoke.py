"""A seconds-long run of ``python -m bench.algorithms`` (no timing asserted)."""

from __future__ import annotations

import re
import shutil

import pytest
from bench.algorithms import CASES, main

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed (make system-deps)"
)


def test_every_algorithm_is_measured_against_fixed_in_one_run(tmp_path):
    assert (
        main(["--clients", "20", "--checks", "400", "--rounds", "1", "--out", str(tmp_path)]) == 0
    )
    report = (tmp_path / "algorithms.md").read_text()
    rows = re.findall(
        r"^\| ([^|]+) \| ([\d.]+) \| ([\d.]+) \| (-?\d+) \| (-?[\d.]+) \|$", report, re.MULTILINE
    )
    assert [row[0] for row in rows] == [name for name, _, _ in CASES]
    for name, usec, ratio, _bytes, _memory_ratio in rows:
        assert float(usec) > 0, name
        if name.startswith("fixed"):
            assert float(ratio) == 1.0


def test_more_checks_than_the_limits_admit_stop_the_run(tmp_path):
    with pytest.raises(SystemExit):
        main(["--clients", "2", "--checks", "400", "--rounds", "1", "--out", str(tmp_path)])
