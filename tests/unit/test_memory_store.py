"""MemoryWindowStore on a clock the test steps: exact counts and resets, no waiting."""

from __future__ import annotations

import time

from gatehouse.ratelimit.memory import MemoryWindowStore
from gatehouse.ratelimit.policy import Window
from gatehouse.ratelimit.script import Verdict

T0 = 1_800_000_000_000  # ms since the epoch: the start of a second, a minute and an hour


class Clock:
    """A wall clock that moves only when told, kept in whole milliseconds."""

    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000

    def at(self, offset_ms: int) -> None:
        self.ms = T0 + offset_ms


def test_one_window_admits_exactly_its_amount_up_to_its_last_millisecond():
    clock = Clock()
    store = MemoryWindowStore(clock)
    ten_seconds = [Window(3, 10)]
    assert store.hit_now(["k"], ten_seconds, 1) == Verdict(True, (1,), (10_000,))
    clock.at(4_500)
    assert store.hit_now(["k"], ten_seconds, 1) == Verdict(True, (2,), (5_500,))
    clock.at(9_999)
    assert store.hit_now(["k"], ten_seconds, 1) == Verdict(True, (3,), (1,))
    assert store.hit_now(["k"], ten_seconds, 1) == Verdict(False, (3,), (1,), 1)


def test_the_next_window_starts_empty_on_the_edge():
    clock = Clock()
    store = MemoryWindowStore(clock)
    one_a_second = [Window(1, 1)]
    assert store.hit_now(["k"], one_a_second, 1) == Verdict(True, (1,), (1_000,))
    clock.at(999)
    assert store.hit_now(["k"], one_a_second, 1) == Verdict(False, (1,), (1,), 1)
    clock.at(1_000)
    assert store.hit_now(["k"], one_a_second, 1) == Verdict(True, (1,), (1_000,))
    clock.at(1_999)
    assert store.hit_now(["k"], one_a_second, 1) == Verdict(False, (1,), (1,), 1)


def test_windows_align_to_the_clock_not_to_the_first_hit():
    clock = Clock()
    clock.at(7_250)
    store = MemoryWindowStore(clock)
    ten_seconds = [Window(2, 10)]
    assert store.hit_now(["k"], ten_seconds, 1) == Verdict(True, (1,), (2_750,))
    clock.at(9_000)
    assert store.hit_now(["k"], ten_seconds, 1) == Verdict(True, (2,), (1_000,))
    clock.at(10_000)  # the window began at T0, so it ends here, 2.75 s after the first hit
    assert store.hit_now(["k"], ten_seconds, 1) == Verdict(True, (1,), (10_000,))


def test_a_refused_hit_is_not_counted():
    clock = Clock()
    store = MemoryWindowStore(clock)
    minute = [Window(2, 60)]
    verdicts = [store.hit_now(["k"], minute, 1) for _ in range(5)]
    assert verdicts == [
        Verdict(True, (1,), (60_000,)),
        Verdict(True, (2,), (60_000,)),
        Verdict(False, (2,), (60_000,), 60_000),
        Verdict(False, (2,), (60_000,), 60_000),
        Verdict(False, (2,), (60_000,), 60_000),
    ]
    clock.at(60_000)
    assert store.hit_now(["k"], minute, 1) == Verdict(True, (1,), (60_000,))


def test_a_cost_above_one_is_admitted_only_whole():
    clock = Clock()
    store = MemoryWindowStore(clock)
    minute = [Window(5, 60)]
    assert store.hit_now(["k"], minute, 2) == Verdict(True, (2,), (60_000,))
    assert store.hit_now(["k"], minute, 2) == Verdict(True, (4,), (60_000,))
    clock.at(30_000)
    assert store.hit_now(["k"], minute, 2) == Verdict(False, (4,), (30_000,), 30_000)  # 6 > 5
    assert store.hit_now(["k"], minute, 1) == Verdict(True, (5,), (30_000,))  # 5 fits


def test_a_cost_above_the_amount_is_refused_and_leaves_no_count():
    clock = Clock()
    store = MemoryWindowStore(clock)
    minute = [Window(3, 60)]
    assert store.hit_now(["k"], minute, 4) == Verdict(False, (0,), (60_000,), 60_000)
    assert store.hit_now(["k"], minute, 3) == Verdict(True, (3,), (60_000,))


def test_several_windows_are_all_or_nothing():
    clock = Clock()
    store = MemoryWindowStore(clock)
    windows = [Window(2, 1), Window(3, 60)]
    keys = ["k:1", "k:60"]
    assert store.hit_now(keys, windows, 1) == Verdict(True, (1, 1), (1_000, 60_000))
    clock.at(100)
    assert store.hit_now(keys, windows, 1) == Verdict(True, (2, 2), (900, 59_900))
    clock.at(200)  # the second is spent: the minute is not charged either
    assert store.hit_now(keys, windows, 1) == Verdict(False, (2, 2), (800, 59_800), 800)
    clock.at(1_000)
    assert store.hit_now(keys, windows, 1) == Verdict(True, (1, 3), (1_000, 59_000))
    clock.at(1_500)  # the minute is spent: the new second is not charged either
    assert store.hit_now(keys, windows, 1) == Verdict(False, (1, 3), (500, 58_500), 58_500)
    assert store.hit_now(keys, windows, 1) == Verdict(False, (1, 3), (500, 58_500), 58_500)
    clock.at(60_000)
    assert store.hit_now(keys, windows, 1) == Verdict(True, (1, 1), (1_000, 60_000))


def test_several_windows_with_a_cost_above_one():
    clock = Clock()
    store = MemoryWindowStore(clock)
    windows = [Window(4, 1), Window(5, 60)]
    keys = ["k:1", "k:60"]
    assert store.hit_now(keys, windows, 3) == Verdict(True, (3, 3), (1_000, 60_000))
    clock.at(1_000)  # the second has room for 3 again, the minute has 2 left
    assert store.hit_now(keys, windows, 3) == Verdict(False, (0, 3), (1_000, 59_000), 59_000)
    assert store.hit_now(keys, windows, 2) == Verdict(True, (2, 5), (1_000, 59_000))


def test_each_key_counts_on_its_own():
    store = MemoryWindowStore(Clock())
    minute = [Window(1, 60)]
    assert store.hit_now(["a"], minute, 1) == Verdict(True, (1,), (60_000,))
    assert store.hit_now(["b"], minute, 1) == Verdict(True, (1,), (60_000,))
    assert store.hit_now(["a"], minute, 1) == Verdict(False, (1,), (60_000,), 60_000)
    assert store.hit_now(["a", "c"], [Window(5, 60), Window(5, 1)], 1) == Verdict(
        True, (2, 1), (60_000, 1_000)
    )


def test_expired_keys_are_swept_as_new_keys_arrive():
    clock = Clock()
    store = MemoryWindowStore(clock)
    store.SWEEP_EVERY = 3
    store.hit_now(["second"], [Window(5, 1)], 1)
    store.hit_now(["minute"], [Window(5, 60)], 1)
    clock.at(1_000)  # the second's window has ended, the minute's has not
    store.hit_now(["new"], [Window(5, 60)], 1)  # the third new key: a sweep
    assert store.counters == {"minute": (1, T0 + 60_000), "new": (1, T0 + 60_000)}


def test_the_default_clock_is_the_wall_clock():
    assert MemoryWindowStore().clock is time.time
