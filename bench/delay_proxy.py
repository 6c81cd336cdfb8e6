"""A TCP proxy that delays every chunk by a fixed time in each direction.

``python -m bench.delay_proxy LISTEN_PORT TARGET_PORT DELAY_MS`` on 127.0.0.1. It models
a Redis a few milliseconds away, where a limiter that blocks the event loop collapses.
It also counts the writes each client makes (each is at least one round trip), and
prints ``writes=<n>`` to stdout on SIGUSR1 (one line) and when it stops.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import sys
import time

WRITES = 0


class _DelayedPipe:
    """Forwards chunks in order, each ``delay`` seconds after it arrived."""

    def __init__(self, writer: asyncio.StreamWriter, delay: float) -> None:
        self.writer = writer
        self.delay = delay
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None

    def push(self, data: bytes) -> None:
        self.queue.append((time.monotonic() + self.delay, data))
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.delay, self.pump)

    def pump(self) -> None:
        self.timer = None
        now = time.monotonic()
        while self.queue and self.queue[0][0] <= now + 0.0001:
            self.writer.write(self.queue.popleft()[1])
        if self.queue:
            wait = max(0.0, self.queue[0][0] - now)
            self.timer = asyncio.get_running_loop().call_later(wait, self.pump)


async def _relay(reader: asyncio.StreamReader, pipe: _DelayedPipe, count: bool) -> None:
    global WRITES
    while data := await reader.read(65536):
        if count:
            WRITES += 1
        pipe.push(data)
    await asyncio.sleep(pipe.delay * 2)
    pipe.writer.close()


async def main(listen_port: int, target_port: int, delay: float) -> None:
    async def handle(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _relay(client_reader, _DelayedPipe(server_writer, delay), count=True),
            _relay(server_reader, _DelayedPipe(client_writer, delay), count=False),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(f"writes={WRITES}", flush=True))
    print("ready", flush=True)
    async with server:
        await stop
    print(f"writes={WRITES}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000))
