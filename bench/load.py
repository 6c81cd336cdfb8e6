"""Load generators: wrk when installed, else a bounded asyncio HTTP/1.1 client.

Both return the same ``LoadResult``; both stop by themselves after ``duration`` seconds
and only ever target loopback addresses.
"""

from __future__ import annotations

import asyncio
import re
import shutil
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


def _check_loopback(host: str) -> None:
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
) -> LoadResult:
    _check_loopback(host)
    headers = {"Host": "localhost", **(headers or {})}
    if shutil.which("wrk"):
        return _wrk(host, port, path, connections, duration, method, headers)
    return asyncio.run(_python_load(host, port, path, connections, duration, method, headers))


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
) -> LoadResult:
    script = [f'wrk.method = "{method}"']
    script += [f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write("\n".join(script) + "\n")
    try:
        output = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{connections}",
                f"-d{max(1, round(duration))}s",
                "--timeout",
                "10s",
                "--latency",
                "-s",
                lua.name,
                f"http://{host}:{port}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + 60,
        ).stdout
    finally:
        Path(lua.name).unlink()
    requests = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", output).group(1))  # type: ignore[union-attr]
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
    return LoadResult(requests, seconds, p50, p99, errors, "wrk")


async def _python_load(
    host: str,
    port: int,
    path: str,
    connections: int,
    duration: float,
    method: str,
    headers: dict[str, str],
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
            while time.monotonic() < deadline:
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
