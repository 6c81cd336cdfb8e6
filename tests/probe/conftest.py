"""Fixtures for the probe tests: real ``python -m gatehouse`` processes on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.helpers import ApiServer
from tests.probe.runner import ALLOWED


@pytest.fixture
def api_server(tmp_path) -> Iterator[Callable[..., ApiServer]]:
    """Start ``python -m gatehouse`` processes; every one is stopped after the test."""
    started: list[ApiServer] = []

    def start(env: dict[str, str] | None = None, host: str = "127.0.0.1") -> ApiServer:
        server = ApiServer({"APP_ALLOWED_ORIGINS": ALLOWED, **(env or {})}, host=host)
        started.append(server)
        server.start(log_dir=tmp_path)
        return server

    yield start
    for server in reversed(started):
        server.stop()
