"""Load generators: wrk when installed, else a bounded asyncio HTTP/1.1 client.

Both return the same ``LoadResult``; both stop by themselves after ``duration`` seconds
(or, given ``requests``, once about that many answers came back, whichever is first)
and only ever target loopback addresses.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors, timeouts and non-2xx answers
    generator: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def check_loopback(host: str) -> None:
    if not host.startswith("127."):
        raise ValueError(f"load is only ever sent to loopback addresses, not {host}")


def run_load(
    host: str,
    port: int,
    path: str,
    *,
    connections: int = 32,
    duration: float = 5.0,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    requests: int | None = None,
) -> LoadResult:
    """Closed-loop load: each connection sends its next request when the last is answered.

    ``requests`` stops the run once that many answers came back (a connection's answer
    in flight at that moment may still be counted, so a few more can be reported);
    ``duration`` bounds it either way.
    """
    check_loopback(host)
    headers = {"Host": "localhost", **(headers or {})}
    if shutil.which("wrk"):
        return _wrk(host, port, path, connections, duration, method, headers, requests)
    return asyncio.run(
        _python_load(host, port, path, connections, duration, method, headers, requests)
    )


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def _wrk(
    host: str,
    port: int,
    path: str,
    connections: int,
    duration: float,
    method: str,
    headers: dict[str, str],
    requests: int | None = None,
) -> LoadResult:
    threads = 2
    script = [f'wrk.method = "{method}"']
    script += [f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()]
    if requests is not None:
        # Each thread stops itself after its share of the answers: wrk has no request
        # count of its own, and a Lua response hook is the documented way to end a thread.
        script += [
            "local quota, answered = 0, 0",
            "function init(args) quota = tonumber(args[1]) end",
            "function response(status, headers, body)",
            "  answered = answered + 1",
            "  if answered >= quota then wrk.thread:stop() end",
            "end",
        ]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write("\n".join(script) + "\n")
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        lua.name,
        f"http://{host}:{port}{path}",
        *([] if requests is None else ["--", str(-(-requests // threads))]),
    ]
    try:
        if requests is None:
            output = subprocess.run(
                argv, capture_output=True, text=True, check=True, timeout=duration + 60
            ).stdout
        else:
            output = _wrk_until_its_threads_stop(argv, duration)
    finally:
        Path(lua.name).unlink()
    answered = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", output).group(1))  # type: ignore[union-attr]
    seconds_match = re.search(r"requests in ([\d.]+)(ms|s|m)", output)
    assert seconds_match
    seconds = (
        float(seconds_match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[seconds_match.group(2)]
    )
    p50 = _duration_ms(re.search(r"^\s*50%\s+(\S+)", output, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = _duration_ms(re.search(r"^\s*99%\s+(\S+)", output, re.MULTILINE).group(1))  # type: ignore[union-attr]
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        errors += sum(int(value) for value in match.groups())
    return LoadResult(answered, seconds, p50, p99, errors, "wrk")


def _thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def _wrk_until_its_threads_stop(argv: list[str], duration: float) -> str:
    """Run wrk until its load threads have all stopped themselves, then end it.

    wrk's main thread sleeps out the whole ``-d`` even after every load thread has
    stopped; on SIGINT it wakes and reports what was done. So once the load threads
    were seen and only the main thread is left, SIGINT ends the run. ``-d`` still
    bounds it, should the threads never be seen.
    """
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as wrk:
        deadline = time.monotonic() + duration + 60
        threads_seen = False
        while wrk.poll() is None and time.monotonic() < deadline:
            try:
                threads = _thread_count(wrk.pid)
            except FileNotFoundError:  # it has just exited
                break
            threads_seen = threads_seen or threads > 1
            if threads_seen and threads <= 1:
                wrk.send_signal(signal.SIGINT)
                break
            time.sleep(0.01)
        output, errors = wrk.communicate(timeout=60)
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk failed ({wrk.returncode}): {errors.strip()[-300:]}")
    return output


async def _python_load(
    host: str,
    port: int,
    path: str,
    connections: int,
    duration: float,
    method: str,
    headers: dict[str, str],
    requests: int | None = None,
) -> LoadResult:
    request = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    raw = (request + "\r\n").encode("latin-1")
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < deadline and (requests is None or len(latencies) < requests):
                started = time.perf_counter()
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: (\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                latencies.append(time.perf_counter() - started)
                if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.1 3")):
                    errors += 1
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(connection() for _ in range(connections)))
    seconds = time.monotonic() - started
    latencies.sort()

    def percentile(fraction: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1000
            if latencies
            else 0.0
        )

    return LoadResult(len(latencies), seconds, percentile(0.5), percentile(0.99), errors, "python")
