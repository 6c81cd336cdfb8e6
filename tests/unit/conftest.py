from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import uvicorn

from gatehouse.service import build_service
from gatehouse.settings import load_settings

ALLOWED = "https://app.example.com"

# Settings for in-process tests: one allowed origin, one host, memory limits.
BASE = {
    "allowed_origins": [ALLOWED, "http://localhost:5173"],
    "trusted_hosts": ["api.example.com", "testserver"],
    "test_routes_enabled": True,
}

# The wall clock the in-process service's memory windows read: stopped at the start of
# a minute (and so of a second), so a test's requests all fall in one window of each
# length, whenever it runs, without waiting for a fresh one.
WINDOW_CLOCK = 1_800_000_000.0


def make_client(
    forwarded_allow_ips: list[str] | None = None,
    client_addr: tuple[str, int] = ("203.0.113.7", 50000),
    base_url: str = "http://api.example.com",
    window_clock: Callable[[], float] = lambda: WINDOW_CLOCK,
    **overrides: object,
) -> httpx.AsyncClient:
    """An httpx client wired to the whole service in process.

    The app goes through ``uvicorn.Config(...).load()`` so uvicorn's proxy-headers
    middleware wraps it exactly as ``python -m gatehouse`` does. Its rate-limit
    windows (in memory: no Redis here) read ``window_clock``.
    """
    settings = load_settings(**{**BASE, **overrides})
    app = build_service(settings)
    app.store.fallback.clock = window_clock
    config = uvicorn.Config(
        app,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips or ["10.0.0.0/8"],
        server_header=False,
        lifespan="off",
    )
    config.load()
    transport = httpx.ASGITransport(app=config.loaded_app, client=client_addr)
    return httpx.AsyncClient(transport=transport, base_url=base_url)


@pytest.fixture
def client_factory() -> Callable[..., httpx.AsyncClient]:
    return make_client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
