"""bench.cache_misses reads cachegrind's summary; the run itself takes minutes (make bench-cache-misses)."""

from __future__ import annotations

import pytest
from bench.cache_misses import EVENTS, parse_totals

# What cachegrind 3.19 prints with --cache-sim=yes (numbers shortened).
SUMMARY = """\
==20158== I   refs:      4,035,789,822
==20158== I1  misses:       13,200,111
==20158== LLi misses:           41,002
==20158== I1  miss rate:          0.33%
==20158== LLi miss rate:          0.00%
==20158==
==20158== D   refs:      1,900,000,000  (1,200,000,000 rd   + 700,000,000 wr)
==20158== D1  misses:       10,578,000  (    8,000,000 rd   +   2,578,000 wr)
==20158== LLd misses:          120,000  (       60,000 rd   +      60,000 wr)
==20158==
==20158== LL refs:          23,778,111  (   21,200,111 rd   +   2,578,000 wr)
==20158== LL misses:           161,002  (      101,002 rd   +      60,000 wr)
"""


def test_the_summary_gives_each_event_once():
    assert parse_totals(SUMMARY) == {
        "I refs": 4_035_789_822,
        "I1 misses": 13_200_111,
        "D1 misses": 10_578_000,
        "LL misses": 161_002,
    }
    assert set(parse_totals(SUMMARY)) == set(EVENTS)


@pytest.mark.parametrize("missing", ["I1  misses", "LL misses"])
def test_a_summary_without_an_event_lacks_it(missing):
    lines = [line for line in SUMMARY.splitlines() if missing not in line]
    assert set(parse_totals("\n".join(lines))) == set(EVENTS) - {missing.replace("  ", " ")}
