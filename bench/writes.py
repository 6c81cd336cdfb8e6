"""What an answer's second write costs the server: one transport write against two.

    python -m bench.writes [ANSWERS]     # default 200,000 answers a run, 3 runs a way

uvicorn's protocol writes a response's head and its body in two ``transport.write``
calls, and uvloop sends each at once: two system calls and two TCP segments an answer.
Gatehouse's protocol holds a head with a Content-Length for its body and writes both in
one (``server_protocol``). Here a uvloop writer sends Gatehouse's answer (its 471-byte
head, a 26-byte body) over loopback TCP to a reader on the other core, both ways in turn,
and prints the writer's CPU time (user + kernel) per answer: on loopback the kernel's
receive work runs on the sender's core too, so this is what a server's core pays.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import statistics
import sys
import time
from typing import Any

import uvloop

HEAD = b"h" * 471  # a Gatehouse answer's head, as bench.profile's worker writes it
BODY = b"b" * 26
YIELD_EVERY = 32  # the loop runs between answers, as a server's does between requests


def read_until_closed(listener: socket.socket, core: int, received: Any) -> None:
    if core >= 0:
        os.sched_setaffinity(0, {core})
    connection, _ = listener.accept()
    total = 0
    while chunk := connection.recv(1 << 16):
        total += len(chunk)
    received.value = total


async def write_answers(port: int, answers: int, together: bool) -> float:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    transport = writer.transport
    started = time.process_time()
    for number in range(answers):
        if together:
            transport.write(HEAD + BODY)
        else:
            transport.write(HEAD)
            transport.write(BODY)
        if number % YIELD_EVERY == 0:
            await asyncio.sleep(0)
    await writer.drain()
    used = time.process_time() - started
    writer.close()
    return used / answers * 1e6


def one_run(answers: int, together: bool) -> tuple[float, int]:
    """The writer's CPU microseconds an answer, and the bytes the reader received."""
    cores = sorted(os.sched_getaffinity(0))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = multiprocessing.Value("q", -1)
    reader = multiprocessing.Process(
        target=read_until_closed,
        args=(listener, cores[-1] if len(cores) > 1 else -1, received),
    )
    reader.start()
    listener.close()
    try:
        if len(cores) > 1:
            os.sched_setaffinity(0, {cores[0]})
        cpu = uvloop.run(write_answers(port, answers, together))
    finally:
        os.sched_setaffinity(0, set(cores))
        reader.join(timeout=10)
        if reader.is_alive():
            reader.kill()
    return cpu, received.value


def main(argv: list[str]) -> int:
    answers = int(argv[0]) if argv else 200_000
    figures: dict[str, list[float]] = {"two writes": [], "one write": []}
    for run in range(3):
        ways = [False, True] if run % 2 == 0 else [True, False]
        for together in ways:
            cpu, received = one_run(answers, together)
            if received != answers * len(HEAD + BODY):
                raise SystemExit(f"bench.writes: the reader got {received} bytes, not all")
            figures["one write" if together else "two writes"].append(cpu)
    for name, values in figures.items():
        print(
            f"{name}: writer CPU {statistics.median(values):.2f} us an answer (median), "
            f"each {[round(v, 2) for v in values]}"
        )
    saved = statistics.median(figures["two writes"]) - statistics.median(figures["one write"])
    print(f"one write saves {saved:.2f} us of CPU an answer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
