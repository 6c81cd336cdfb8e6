"""Load against API replicas while a topology changes, and what the replicas logged."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from tests.helpers import ApiServer
from tests.jwt_keys import client_authorization, subject_key


def bearer(client: str) -> dict[str, str]:
    """A token the tests' identity provider signed for ``client``: a budget of its own."""
    return {"Authorization": client_authorization(client)}


def redis_key(client: str, route: str = "/search", window: str = "10/60") -> str:
    """The key the service builds for a caller presenting ``bearer(client)``."""
    return f"gatehouse:{{{subject_key(client)}}}:{route}:{window}"


async def burst(
    urls: Sequence[str], clients: Sequence[str], per_client: int, path: str = "/search?q=x"
) -> dict[str, Counter[int]]:
    """``per_client`` requests for every client, all at once, round-robin over ``urls``."""
    total = len(clients) * per_client
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=total), timeout=10) as client:

        async def one(index: int, name: str) -> tuple[str, int]:
            response = await client.get(f"{urls[index % len(urls)]}{path}", headers=bearer(name))
            return name, response.status_code

        replies = await asyncio.gather(
            *(one(i, name) for name in clients for i in range(per_client))
        )
    statuses: dict[str, Counter[int]] = {name: Counter() for name in clients}
    for name, status in replies:
        statuses[name][status] += 1
    return statuses


@dataclass
class Sample:
    started: float
    latency: float
    status: int
    client: str


@dataclass
class LoadRun:
    samples: list[Sample] = field(default_factory=list)
    health: list[int] = field(default_factory=list)

    def statuses(self, since: float = 0.0, until: float = float("inf")) -> Counter[int]:
        return Counter(s.status for s in self.samples if since <= s.started < until)

    def worst_ms(self) -> float:
        return max((s.latency for s in self.samples), default=0.0) * 1000


async def paced_load(
    urls: Sequence[str],
    clients: Sequence[str],
    run: LoadRun,
    stop_at: float,
    connections: int = 6,
    pause: float = 0.0,
    path: str = "/search?q=load",
    stop: asyncio.Event | None = None,
) -> None:
    """A bounded load: ``connections`` loops, each one request at a time, until ``stop_at``
    (or ``stop`` is set)."""

    def going() -> bool:
        return time.monotonic() < stop_at and not (stop is not None and stop.is_set())

    async with httpx.AsyncClient(
        timeout=10, limits=httpx.Limits(max_connections=connections + 1)
    ) as client:

        async def loop(index: int) -> None:
            turn = index
            while going():
                name = clients[turn % len(clients)]
                url = urls[(turn // len(clients)) % len(urls)]
                turn += 1
                started = time.monotonic()
                response = await client.get(f"{url}{path}", headers=bearer(name))
                run.samples.append(
                    Sample(started, time.monotonic() - started, response.status_code, name)
                )
                if pause:
                    await asyncio.sleep(pause)

        async def health() -> None:
            while going():
                for url in urls:
                    run.health.append((await client.get(f"{url}/healthz")).status_code)
                await asyncio.sleep(0.2)

        await asyncio.gather(*(loop(i) for i in range(connections)), health())


def server_durations(servers: Sequence[ApiServer], route: str = "/search") -> list[float]:
    """``duration_ms`` of every ``route`` request in the replicas' JSON access logs."""
    durations = []
    for server in servers:
        for line in server.log().splitlines():
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            if entry.get("route") == route and "duration_ms" in entry:
                durations.append(float(entry["duration_ms"]))
    return durations


def back_after(servers: Sequence[ApiServer]) -> list[float]:
    """Each outage's length as the replicas logged it ("storage back after N s")."""
    found = []
    for server in servers:
        for line in server.log().splitlines():
            if line.startswith("{") and "storage back after" in line:
                found.append(float(json.loads(line)["message"].split("after ")[1].split(" s")[0]))
    return found


async def watch_shared_count(
    read: Callable[[], int], since: float, stop_at: float, interval: float = 0.02
) -> float | None:
    """The first moment after ``since`` at which the shared count grows again."""
    baseline = -1
    while time.monotonic() < stop_at:
        value = await asyncio.to_thread(read)
        if value >= 0:
            if baseline < 0:
                baseline = value
            elif value > baseline:
                return time.monotonic()
        await asyncio.sleep(interval)
    return None
