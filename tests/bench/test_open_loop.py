"""bench.open_loop against a tiny loopback server whose stalls the test controls."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from bench.open_loop import percentile, run_open_loop

from tests.helpers import free_port

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class _StallingServer:
    """Answers each request at once, except while ``stalled_until`` lies ahead: then
    every answer waits until that moment (a GC pause, a slow dependency)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.stalled_until = 0.0
        self.answering = True
        self.requests = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _Answering(self), "127.0.0.1", self.port)
        )
        self.ready.set()
        self.loop.run_forever()
        server.close()
        self.loop.run_until_complete(server.wait_closed())
        self.loop.close()

    def __enter__(self) -> _StallingServer:
        self.thread.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class _Answering(asyncio.Protocol):
    def __init__(self, server: _StallingServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for _ in range(data.count(b"\r\n\r\n")):
            self.server.requests += 1
            if not self.server.answering:
                continue
            wait = self.server.stalled_until - time.monotonic()
            if wait > 0:
                asyncio.get_running_loop().call_later(wait, self._answer)
            else:
                self._answer()

    def _answer(self) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(ANSWER)


@pytest.fixture
def server() -> Iterator[_StallingServer]:
    with _StallingServer() as running:
        yield running


def test_every_request_due_is_sent_and_timed(server):
    result = run_open_loop("127.0.0.1", server.port, "/", rate=300, duration=0.5, connections=4)
    assert result.scheduled == result.sent == result.answered == 150
    assert server.requests == 150
    assert result.errors == 0
    assert len(result.latencies_ms) == 150 and min(result.latencies_ms) > 0


def test_time_queued_behind_a_stall_counts_from_the_scheduled_send(server):
    # A 300 ms stall, 100 ms into a 1 s schedule of 200 req/s over 4 connections: about
    # 60 requests fall due during it. Timed from their scheduled send, they all show it;
    # timed from when each was written (a closed loop's view), only the 4 on the wire
    # when it began would, the rest being sent after it.
    def stall_soon() -> None:
        time.sleep(0.1)
        server.stalled_until = time.monotonic() + 0.3

    staller = threading.Thread(target=stall_soon)
    staller.start()
    result = run_open_loop("127.0.0.1", server.port, "/", rate=200, duration=1.0, connections=4)
    staller.join()
    assert result.answered == result.scheduled == 200
    delayed = [latency for latency in result.latencies_ms if latency >= 100]
    assert len(delayed) >= 30
    assert percentile(result.latencies_ms, 1.0) >= 200


def test_a_server_that_never_answers_does_not_hold_the_client(server):
    server.answering = False
    started = time.monotonic()
    result = run_open_loop(
        "127.0.0.1", server.port, "/", rate=100, duration=0.2, connections=2, drain_timeout=0.3
    )
    assert time.monotonic() - started < 5
    # One request on the wire per connection; the rest queued behind it, never sent.
    assert result.scheduled == 20 and result.sent == 2 and result.answered == 0
    assert result.errors == 20


def test_only_loopback_is_a_target():
    with pytest.raises(ValueError, match="loopback"):
        run_open_loop("10.0.0.1", 80, "/", rate=1, duration=1)


def test_percentile_is_the_nearest_rank():
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([], 0.5) == 0
