from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import uvicorn

from gatehouse.main import build
from gatehouse.settings import load_settings
from tests.helpers import wait_for_fresh_window

ALLOWED = "https://app.example.com"

# Settings for in-process tests: one allowed origin, one host, memory limits.
BASE = {
    "allowed_origins": [ALLOWED, "http://localhost:5173"],
    "trusted_hosts": ["api.example.com", "testserver"],
    "test_routes_enabled": True,
}


def make_client(
    forwarded_allow_ips: list[str] | None = None,
    client_addr: tuple[str, int] = ("203.0.113.7", 50000),
    base_url: str = "http://api.example.com",
    **overrides: object,
) -> httpx.AsyncClient:
    """An httpx client wired to the whole service in process.

    The app goes through ``uvicorn.Config(...).load()`` so uvicorn's proxy-headers
    middleware wraps it exactly as ``python -m gatehouse`` does.
    """
    settings = load_settings(**{**BASE, **overrides})
    config = uvicorn.Config(
        build(settings),
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


@pytest.fixture(autouse=True)
def room_in_the_minute() -> None:
    """Many tests here count requests against a minute window; each takes milliseconds,
    so a second of room is plenty, and the wait happens at most once a minute."""
    wait_for_fresh_window(60, needed=1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
