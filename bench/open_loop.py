"""An open-loop HTTP/1.1 load generator: requests leave on a schedule, answered or not.

A closed-loop client (wrk, ``bench.load``) sends a connection's next request only once
the last one is answered, so when the server stalls the client stalls with it and the
requests that should have been sent meanwhile are never timed: coordinated omission.
Here request ``i`` is due at ``start + i / rate``, whatever happened before it, and its
latency runs from that due time to the end of its answer, so time spent queued behind
a slow answer counts (wrk2's method; no wrk2 package exists in Debian).

HTTP/1.1 without pipelining allows one request in flight per connection: the due
requests go round-robin over ``connections`` keep-alive connections, and one due while
its connection is still busy waits for it, the wait counted in its latency. The client's
own lateness (a timer waking after the due time) is measured apart as ``send_lag``.

Loopback only; the run stops by itself: the schedule ends after ``duration`` seconds,
then answers are awaited at most ``drain_timeout`` more seconds. ``python -m
bench.open_loop PORT RATE DURATION`` prints the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from bench.load import check_loopback

CONTENT_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)\s*$")


@dataclass
class OpenLoopResult:
    rate: float  # requests scheduled per second
    duration: float  # seconds of schedule
    scheduled: int  # requests due within the schedule: round(rate * duration)
    sent: int  # of those, written to a connection
    answered: int  # of those, answered (any status)
    errors: int  # due but not answered (never sent, connection lost, too late), or non-2xx/3xx
    latencies_ms: list[float] = field(repr=False)  # answered requests, from their due time
    send_lags_ms: list[float] = field(repr=False)  # how late the client itself was


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (sorted here), 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request on the wire, the rest queued."""

    def __init__(
        self,
        request: bytes,
        clock: Callable[[], float],
        result: OpenLoopResult,
        on_idle: Callable[[], None],
    ) -> None:
        self.request = request
        self.clock = clock
        self.result = result
        self.on_idle = on_idle
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.on_the_wire: float | None = None  # due time of the request in flight
        self.queued: collections.deque[float] = collections.deque()  # due, not yet sent
        self.lost = False

    @property
    def idle(self) -> bool:
        return self.on_the_wire is None and not self.queued

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def due(self, due_time: float) -> None:
        """A request is due now: send it, or queue it behind the one in flight."""
        if self.lost:
            return  # counted as not sent
        if self.on_the_wire is None:
            self._send(due_time)
        else:
            self.queued.append(due_time)

    def _send(self, due_time: float) -> None:
        assert self.transport is not None
        self.on_the_wire = due_time
        self.result.sent += 1
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.on_the_wire is not None:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(self.buffer[:head_end])
            length = CONTENT_LENGTH.search(head)
            # The servers measured here answer with a Content-Length; anything else
            # cannot be framed, and the connection is given up.
            if length is None:
                assert self.transport is not None
                self.transport.close()
                return
            end = head_end + 4 + int(length.group(1))
            if len(self.buffer) < end:
                return
            del self.buffer[:end]
            self.result.latencies_ms.append((self.clock() - self.on_the_wire) * 1000)
            self.result.answered += 1
            if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.1 3")):
                self.result.errors += 1
            self.on_the_wire = None
            if self.queued:
                self._send(self.queued.popleft())
            else:
                self.on_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        # What was in flight or queued here will not be answered: counted at the end,
        # with every other request due that got no answer.
        self.lost = True
        self.on_the_wire = None
        self.queued.clear()
        self.on_idle()


async def _open_loop(
    host: str,
    port: int,
    path: str,
    rate: float,
    duration: float,
    connections: int,
    headers: dict[str, str],
    drain_timeout: float,
) -> OpenLoopResult:
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    raw = (request + "\r\n").encode("latin-1")
    scheduled = round(rate * duration)
    result = OpenLoopResult(rate, duration, scheduled, 0, 0, 0, [], [])
    pool: list[_Connection] = []
    drained = asyncio.Event()

    def on_idle() -> None:
        if all(connection.idle for connection in pool):
            drained.set()

    for _ in range(connections):
        _, protocol = await loop.create_connection(
            lambda: _Connection(raw, time.perf_counter, result, on_idle), host, port
        )
        pool.append(protocol)
    try:
        # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
        start = time.perf_counter() + 0.01
        for index in range(scheduled):
            due_time = start + index / rate
            # uvloop rounds a timer to whole milliseconds, sometimes down: never send early.
            while (wait := due_time - time.perf_counter()) > 0:  # noqa: ASYNC110 (a clock, no event)
                await asyncio.sleep(wait)
            result.send_lags_ms.append((time.perf_counter() - due_time) * 1000)
            pool[index % connections].due(due_time)
        drained.clear()
        if not all(connection.idle for connection in pool):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drained.wait(), drain_timeout)
    finally:
        for connection in pool:
            if connection.transport is not None:
                connection.transport.close()
        await asyncio.sleep(0)  # let the transports finish closing
    # Every request due that got no answer is an error: never sent (its connection
    # was lost), lost with its connection, or not answered within the drain timeout.
    result.errors += scheduled - result.answered
    return result


def run_open_loop(
    host: str,
    port: int,
    path: str,
    *,
    rate: float,
    duration: float,
    connections: int = 32,
    headers: dict[str, str] | None = None,
    drain_timeout: float = 5.0,
) -> OpenLoopResult:
    """Send ``round(rate * duration)`` requests on schedule; return what came back."""
    check_loopback(host)
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    headers = {"Host": "localhost", **(headers or {})}
    coroutine = _open_loop(host, port, path, rate, duration, connections, headers, drain_timeout)
    try:
        import uvloop  # a lighter event loop: less of the client's own lag in the figures
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("rate", type=float, help="requests per second")
    parser.add_argument("duration", type=float, help="seconds of schedule")
    parser.add_argument("--path", default="/search?q=x")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    result = run_open_loop(
        "127.0.0.1",
        args.port,
        args.path,
        rate=args.rate,
        duration=args.duration,
        connections=args.connections,
    )
    print(
        f"scheduled={result.scheduled} sent={result.sent} answered={result.answered} "
        f"errors={result.errors} p50_ms={percentile(result.latencies_ms, 0.5):.2f} "
        f"p99_ms={percentile(result.latencies_ms, 0.99):.2f} "
        f"send_lag_p99_ms={percentile(result.send_lags_ms, 0.99):.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
