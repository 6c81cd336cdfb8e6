"""The rate-limit algorithms written from their definitions, for the tests to hold the
memory store and the Redis scripts against: plain history, exact fractions, brute force.

Nothing here is shared with ``gatehouse.ratelimit``: the model keeps every admitted hit
and answers each question (how many in the trailing window, when would this request
fit) by recounting, so an implementation's shortcut that is wrong shows as a difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from gatehouse.ratelimit.policy import SLIDING_LOG_MAX, Window
from gatehouse.ratelimit.script import Verdict


@dataclass
class WindowModel:
    """One window's admitted hits, as (time in ms, cost)."""

    window: Window
    algorithm: str
    hits: list[tuple[int, int]] = field(default_factory=list)
    tat: Fraction = Fraction(0)  # gcra: the theoretical arrival time

    @property
    def span(self) -> int:
        return self.window.milliseconds

    @property
    def amount(self) -> int:
        return self.window.amount

    @property
    def emission(self) -> Fraction:  # gcra: ms per unit
        return Fraction(self.span, self.amount)

    def is_log(self) -> bool:
        return self.amount <= SLIDING_LOG_MAX

    # -- what the window holds at a time ---------------------------------------------

    def used(self, now: int) -> int:
        """Units the window holds at ``now`` (fixed and gcra differ from sliding)."""
        if self.algorithm == "fixed":
            start = now - now % self.span
            return sum(cost for at, cost in self.hits if at >= start)
        if self.algorithm == "gcra":
            ahead = max(Fraction(0), self.tat - now)
            return math.ceil(ahead / self.emission)
        if self.is_log():  # exact: every hit in (now - span, now]
            return sum(cost for at, cost in self.hits if at > now - self.span)
        number, elapsed = divmod(now, self.span)
        current = sum(c for at, c in self.hits if at // self.span == number)
        previous = sum(c for at, c in self.hits if at // self.span == number - 1)
        return previous * (self.span - elapsed) // self.span + current

    def fits(self, now: int, cost: int) -> bool:
        if self.algorithm == "gcra":
            return max(self.tat, Fraction(now)) + cost * self.emission - now <= self.span
        return self.used(now) + cost <= self.amount

    def wait(self, now: int, cost: int) -> int:
        """The fewest ms from ``now`` after which ``cost`` fits, no other hit coming."""
        if cost > self.amount:
            return self.span  # never fits: the implementations say "a window"
        if self.algorithm == "fixed":
            return self.span - now % self.span
        if self.algorithm == "gcra":
            over = max(self.tat, Fraction(now)) + cost * self.emission - now - self.span
            return math.ceil(over)
        # Sliding: the count only falls with time; search the first millisecond it fits.
        low, high = 1, 2 * self.span
        while low < high:
            middle = (low + high) // 2
            if self.fits(now + middle, cost):
                high = middle
            else:
                low = middle + 1
        return low

    def reset(self, now: int) -> int:
        """ms until the window holds nothing again."""
        if self.algorithm == "fixed":
            return self.span - now % self.span
        if self.algorithm == "gcra":
            return math.ceil(max(Fraction(0), self.tat - now))
        if self.is_log():
            inside = [at for at, _ in self.hits if at > now - self.span]
            return max(inside) + self.span - now if inside else 0
        number = now // self.span
        if any(at // self.span == number for at, _ in self.hits):
            return (number + 2) * self.span - now
        if self.used(now) > 0:  # only the previous window's hits, still weighing
            return (number + 1) * self.span - now
        return 0

    def admit(self, now: int, cost: int) -> None:
        self.hits.append((now, cost))
        if self.algorithm == "gcra":
            self.tat = max(self.tat, Fraction(now)) + cost * self.emission


class LimitModel:
    """A route's limit: every window admits, or none is charged."""

    def __init__(self, algorithm: str, windows: list[Window]) -> None:
        self.windows = [WindowModel(window, algorithm) for window in windows]

    def hit(self, now: int, cost: int) -> Verdict:
        refusing = [w for w in self.windows if not w.fits(now, cost)]
        if not refusing:
            for window in self.windows:
                window.admit(now, cost)
        retry = max([w.wait(now, cost) for w in refusing], default=0)
        return Verdict(
            not refusing,
            tuple(w.used(now) for w in self.windows),
            tuple(w.reset(now) for w in self.windows),
            max(retry, 1) if refusing else 0,
        )

    def admitted(self) -> list[tuple[int, int]]:
        return self.windows[0].hits
