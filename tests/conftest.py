from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from tests.helpers import ApiServer, RedisServer, wait_for_fresh_window

ALLOWED = "https://app.example.com"


def _running_redis() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip(
            "redis-server is not installed (make system-deps, or apt-get install redis-server)"
        )
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_minute() -> None:
    """For a test counting exactly against minute windows: at least 15 s left in this one."""
    wait_for_fresh_window(60, needed=15)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session; tests flush what they use."""
    yield from _running_redis()


@pytest.fixture
def redis_db(redis_server):
    """The session's Redis, emptied before the test."""
    redis_server.client().flushall()
    return redis_server


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


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, which the test may stop and restart."""
    yield from _running_redis()


FIGURES_KEY = pytest.StashKey[list[str]]()


@pytest.fixture
def report_figure(request):
    """Lines a test measured; printed at the end of the run (figures for the notes)."""
    lines = request.config.stash.setdefault(FIGURES_KEY, [])
    return lines.append


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash.get(FIGURES_KEY, [])
    if lines:
        terminalreporter.section("measured")
        for line in lines:
            terminalreporter.write_line(line)
