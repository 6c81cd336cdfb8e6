"""bench.writes sends every answer whole, one way and the other (no timing asserted)."""

from __future__ import annotations

import pytest
from bench.writes import BODY, HEAD, one_run


@pytest.mark.parametrize("together", [True, False])
def test_every_answer_reaches_the_reader(together):
    cpu, received = one_run(2000, together)
    assert received == 2000 * len(HEAD + BODY)
    assert cpu > 0
