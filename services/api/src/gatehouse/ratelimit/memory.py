"""The windows in this process's memory: no Redis, or Redis down (``failover``).

Each algorithm here makes the decisions its script makes (``script``), in the same integer
arithmetic, so the unit tests can hold one against the other on a stepped clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .policy import SLIDING_LOG, Window, sliding_kind
from .script import Verdict, verdict

NO_COUNT = (0, 0)  # a key never seen: no hits, a window that already ended
NO_BUCKET = (0, 0)  # an empty GCRA bucket: level 0, last seen at 0


class MemoryWindowStore:
    """The same algorithms and semantics as the scripts, in this process only.

    Used when no Redis is configured (one replica, development) and as the fallback
    while Redis is down. Nothing here awaits, so a check is atomic on the event loop.
    ``clock`` is the wall clock in seconds (windows align to it, as Redis's to TIME);
    tests pass their own to step time.
    """

    SWEEP_EVERY = 10_000  # new keys between sweeps of expired ones

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.counters: dict[str, tuple[int, int]] = {}  # fixed: (count, window end in ms)
        self.logs: dict[str, list[int]] = {}  # sliding log: hit times (ms), oldest first
        # sliding counters: (window number, its count, the previous window's count)
        self.pairs: dict[str, tuple[int, int, int]] = {}
        self.buckets: dict[str, tuple[int, int]] = {}  # gcra: (level, last ms)
        # When each log, counter pair and bucket holds nothing any more (Redis's expiry).
        self.expiries: dict[str, int] = {}
        self.new_keys = 0

    def hit_now(
        self, keys: Sequence[str], windows: Sequence[Window], cost: int, algorithm: str = "fixed"
    ) -> Verdict:
        now_ms = int(self.clock() * 1000)
        if algorithm == "sliding":
            return self._sliding(keys, windows, cost, now_ms)
        if algorithm == "gcra":
            return self._gcra(keys, windows, cost, now_ms)
        if len(keys) == 1:
            return self._hit_one(keys[0], windows[0], cost, now_ms)
        counters = self.counters
        counts: list[int] = []
        ends: list[int] = []
        allowed = True
        retry_ms = 0
        for key, window in zip(keys, windows, strict=True):
            count, ends_ms = counters.get(key, NO_COUNT)
            if ends_ms <= now_ms:
                span_ms = window.milliseconds
                count, ends_ms = 0, now_ms - now_ms % span_ms + span_ms
            counts.append(count)
            ends.append(ends_ms)
            if count + cost > window.amount:
                allowed = False
                retry_ms = max(retry_ms, ends_ms - now_ms)
        if allowed:
            for index, key in enumerate(keys):
                if key not in counters:
                    self._note_new_key(now_ms)
                    counters = self.counters  # a sweep makes a new dict
                counts[index] += cost
                counters[key] = (counts[index], ends[index])
        return verdict(allowed, tuple(counts), tuple([end - now_ms for end in ends]), retry_ms)

    def _hit_one(self, key: str, window: Window, cost: int, now_ms: int) -> Verdict:
        """``hit_now`` for one fixed window (most limits): the same rules, without loops."""
        count, ends_ms = self.counters.get(key, NO_COUNT)
        if ends_ms <= now_ms:
            span_ms = window.milliseconds
            count, ends_ms = 0, now_ms - now_ms % span_ms + span_ms
        if count + cost > window.amount:
            return verdict(False, (count,), (ends_ms - now_ms,), ends_ms - now_ms)
        if key not in self.counters:
            self._note_new_key(now_ms)
        count += cost
        self.counters[key] = (count, ends_ms)
        return verdict(True, (count,), (ends_ms - now_ms,), 0)

    def _sliding(
        self, keys: Sequence[str], windows: Sequence[Window], cost: int, now_ms: int
    ) -> Verdict:
        counts: list[int] = []
        allowed = True
        retry_ms = 0
        for key, window in zip(keys, windows, strict=True):
            span = window.milliseconds
            amount = window.amount
            wait = 0
            if sliding_kind(window) == SLIDING_LOG:
                log = self.logs.get(key)
                if log is not None:
                    gone = 0
                    while gone < len(log) and log[gone] <= now_ms - span:
                        gone += 1
                    if gone:
                        del log[:gone]
                count = 0 if log is None else len(log)
                if count + cost > amount:
                    if cost > amount or log is None:  # never admitted (a failover share)
                        wait = span
                    else:  # the hit at (amount - cost) from the newest must leave first
                        wait = log[count - 1 - (amount - cost)] + span - now_ms
            else:
                number, current, previous = self._pair(key, span, now_ms)
                elapsed = now_ms - number * span
                count = previous * (span - elapsed) // span + current
                if cost > amount:
                    wait = span
                elif count + cost > amount:
                    room, start, weighed = amount - cost - current, number * span, previous
                    if room < 0:
                        room, start, weighed = amount - cost, start + span, current
                    first = 0
                    if weighed > 0:
                        first = max(0, span - ((room + 1) * span - 1) // weighed)
                    wait = start + first - now_ms
            counts.append(count)
            if count + cost > amount:
                allowed = False
                retry_ms = max(retry_ms, wait)
        resets: list[int] = []
        for index, (key, window) in enumerate(zip(keys, windows, strict=True)):
            span = window.milliseconds
            reset = 0
            if sliding_kind(window) == SLIDING_LOG:
                if allowed:
                    log = self.logs.get(key)
                    if log is None:
                        self._note_new_key(now_ms)
                        log = self.logs[key] = []
                    log.extend([now_ms] * cost)
                    self.expiries[key] = now_ms + span
                    counts[index] += cost
                if counts[index] > 0:
                    reset = self.logs[key][-1] + span - now_ms
            else:
                number, current, previous = self._pair(key, span, now_ms)
                if allowed:
                    if key not in self.pairs:
                        self._note_new_key(now_ms)
                    current += cost
                    self.pairs[key] = (number, current, previous)
                    self.expiries[key] = (number + 2) * span
                    counts[index] += cost
                if current > 0:
                    reset = (number + 2) * span - now_ms
                elif counts[index] > 0:
                    reset = (number + 1) * span - now_ms
            resets.append(reset)
        return verdict(
            allowed, tuple(counts), tuple(resets), max(retry_ms, 1) if not allowed else 0
        )

    def _pair(self, key: str, span: int, now_ms: int) -> tuple[int, int, int]:
        """(window number, its count, the previous window's count) as of now."""
        number = now_ms // span
        stored, current, previous = self.pairs.get(key, (number, 0, 0))
        if stored == number:
            return number, current, previous
        if stored == number - 1:
            return number, 0, current
        return number, 0, 0

    def _gcra(
        self, keys: Sequence[str], windows: Sequence[Window], cost: int, now_ms: int
    ) -> Verdict:
        levels: list[int] = []
        allowed = True
        retry_ms = 0
        for key, window in zip(keys, windows, strict=True):
            amount, span = window.amount, window.milliseconds
            level, last = self.buckets.get(key, NO_BUCKET)
            if now_ms > last:
                level = max(0, level - (now_ms - last) * amount)
            levels.append(level)
            over = level + cost * span - amount * span
            if over > 0:
                allowed = False
                wait = span if cost > amount else -(-over // amount)
                retry_ms = max(retry_ms, wait)
        counts: list[int] = []
        resets: list[int] = []
        for index, (key, window) in enumerate(zip(keys, windows, strict=True)):
            amount, span = window.amount, window.milliseconds
            level = levels[index]
            if allowed:
                if key not in self.buckets:
                    self._note_new_key(now_ms)
                level += cost * span
                self.buckets[key] = (level, now_ms)
                self.expiries[key] = now_ms - (-level // amount) + 1
            counts.append(-(-level // span))
            resets.append(-(-level // amount))
        return verdict(allowed, tuple(counts), tuple(resets), retry_ms)

    def _note_new_key(self, now_ms: int) -> None:
        self.new_keys += 1
        if self.new_keys >= self.SWEEP_EVERY:
            self.new_keys = 0
            self.sweep(now_ms)

    def sweep(self, now_ms: int) -> None:
        """Forget what can no longer refuse anything, as Redis expires its keys."""
        self.counters = {k: v for k, v in self.counters.items() if v[1] > now_ms}
        gone = {key for key, expiry in self.expiries.items() if expiry <= now_ms}
        if gone:
            self.expiries = {k: v for k, v in self.expiries.items() if k not in gone}
            self.logs = {k: v for k, v in self.logs.items() if k not in gone}
            self.pairs = {k: v for k, v in self.pairs.items() if k not in gone}
            self.buckets = {k: v for k, v in self.buckets.items() if k not in gone}
