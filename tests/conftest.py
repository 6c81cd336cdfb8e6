from __future__ import annotations

import shutil

import pytest

from tests.helpers import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    """One real redis-server for the session; tests flush what they use."""
    if shutil.which("redis-server") is None:
        pytest.skip(
            "redis-server is not installed (make system-deps, or apt-get install redis-server)"
        )
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_db(redis_server):
    """The session's Redis, emptied before the test."""
    redis_server.client().flushall()
    return redis_server
