"""The windows in this process's memory: no Redis, or Redis down (``failover``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .policy import Window
from .script import Verdict, verdict

NO_COUNT = (0, 0)  # a key never seen: no hits, a window that already ended


class MemoryWindowStore:
    """The same windows and semantics as the script, in this process only.

    Used when no Redis is configured (one replica, development) and as the fallback
    while Redis is down. Nothing here awaits, so a check is atomic on the event loop.
    ``clock`` is the wall clock in seconds (windows align to it, as Redis's to TIME);
    tests pass their own to step time.
    """

    SWEEP_EVERY = 10_000  # new keys between sweeps of expired ones

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.counters: dict[str, tuple[int, int]] = {}  # key -> (count, window end in ms)
        self.new_keys = 0

    def hit_now(self, keys: Sequence[str], windows: Sequence[Window], cost: int) -> Verdict:
        now_ms = int(self.clock() * 1000)
        if len(keys) == 1:
            return self._hit_one(keys[0], windows[0], cost, now_ms)
        counters = self.counters
        counts: list[int] = []
        ends: list[int] = []
        allowed = True
        for key, window in zip(keys, windows, strict=True):
            count, ends_ms = counters.get(key, NO_COUNT)
            if ends_ms <= now_ms:
                span_ms = window.milliseconds
                count, ends_ms = 0, now_ms - now_ms % span_ms + span_ms
            counts.append(count)
            ends.append(ends_ms)
            if count + cost > window.amount:
                allowed = False
        if allowed:
            for index, key in enumerate(keys):
                if key not in counters:
                    self._note_new_key(now_ms)
                    counters = self.counters  # a sweep makes a new dict
                counts[index] += cost
                counters[key] = (counts[index], ends[index])
        return verdict(allowed, tuple(counts), tuple([end - now_ms for end in ends]))

    def _hit_one(self, key: str, window: Window, cost: int, now_ms: int) -> Verdict:
        """``hit_now`` for one window (most limits): the same rules, without the loops."""
        count, ends_ms = self.counters.get(key, NO_COUNT)
        if ends_ms <= now_ms:
            span_ms = window.milliseconds
            count, ends_ms = 0, now_ms - now_ms % span_ms + span_ms
        if count + cost > window.amount:
            return verdict(False, (count,), (ends_ms - now_ms,))
        if key not in self.counters:
            self._note_new_key(now_ms)
        count += cost
        self.counters[key] = (count, ends_ms)
        return verdict(True, (count,), (ends_ms - now_ms,))

    def _note_new_key(self, now_ms: int) -> None:
        self.new_keys += 1
        if self.new_keys >= self.SWEEP_EVERY:
            self.new_keys = 0
            self.counters = {k: v for k, v in self.counters.items() if v[1] > now_ms}
