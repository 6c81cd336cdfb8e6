"""The hot-path Redis client against a real redis-server: ordering, scripts, handshake."""

from __future__ import annotations

import asyncio

import pytest

from gatehouse.ratelimit.errors import StorageError
from gatehouse.ratelimit.pipeline import PipelinedRedis, RedisUnavailable
from gatehouse.ratelimit.redis_store import PipelinedScript
from gatehouse.ratelimit.script import FIXED_SCRIPT
from tests.helpers import RedisServer, free_port

ECHO_SCRIPT = "return {KEYS[1], ARGV[1]}"


def calls(server: RedisServer, command: str) -> int:
    with server.client() as client:
        stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_checks_queued_while_connecting_go_out_after_the_handshake(redis_db):
    """A burst before the connection exists: one connect, SELECT first, every reply its own."""
    selects = calls(redis_db, "select")

    async def scenario() -> list[list[bytes]]:
        connection = PipelinedRedis("127.0.0.1", redis_db.port, db=3, timeout=2.0)
        script = PipelinedScript(connection, ECHO_SCRIPT)
        try:
            return await asyncio.gather(*(script([f"key-{n}"], [n]) for n in range(200)))
        finally:
            await connection.close()

    replies = asyncio.run(scenario())
    assert replies == [[f"key-{n}".encode(), str(n).encode()] for n in range(200)]
    assert calls(redis_db, "select") - selects == 1


def test_a_flushed_script_is_sent_again_as_eval(redis_db):
    """Redis forgot the script (restart, SCRIPT FLUSH): the check still gets its answer."""
    with redis_db.client() as client:
        client.script_flush()  # the first call loads it too
    evals = calls(redis_db, "eval")

    async def scenario() -> tuple[list[int], list[int]]:
        connection = PipelinedRedis("127.0.0.1", redis_db.port, timeout=2.0)
        script = PipelinedScript(connection, FIXED_SCRIPT)
        try:
            first = await script(["flushed"], [1, 10, 60_000])
            with redis_db.client() as client:
                client.script_flush()
            # Several at once: each NOSCRIPT reply is matched to its own check.
            after = await asyncio.gather(*(script(["flushed"], [1, 10, 60_000]) for _ in range(5)))
            return first, [reply[2] for reply in after]  # {allowed, retry_ms, count, ...}
        finally:
            await connection.close()

    first, counts = asyncio.run(scenario())
    assert first[:3] == [1, 0, 1]
    assert sorted(counts) == [2, 3, 4, 5, 6]
    with redis_db.client() as client:
        assert client.get("flushed") == b"6"
    # One EVAL loaded it, one per check after the flush; every other call was EVALSHA.
    assert calls(redis_db, "eval") - evals == 6


def test_a_script_error_is_a_storage_error_not_a_retry(redis_db):
    async def scenario() -> None:
        connection = PipelinedRedis("127.0.0.1", redis_db.port, timeout=2.0)
        script = PipelinedScript(connection, "return redis.call('INCR', KEYS[1])")
        try:
            with redis_db.client() as client:
                client.set("not-a-number", "x")
            with pytest.raises(StorageError, match="not an integer"):
                await script(["not-a-number"], [])
            # The connection is still in step: the next call gets its own reply.
            assert await script(["counter"], []) == 1
        finally:
            await connection.close()

    asyncio.run(scenario())


def test_a_wrong_password_fails_every_waiting_check():
    server = RedisServer(password="right")
    server.start()
    try:

        async def scenario() -> list[BaseException | object]:
            connection = PipelinedRedis("127.0.0.1", server.port, password="wrong", timeout=2.0)
            script = PipelinedScript(connection, ECHO_SCRIPT)
            try:
                return await asyncio.gather(
                    *(script(["k"], [n]) for n in range(10)), return_exceptions=True
                )
            finally:
                await connection.close()

        outcomes = asyncio.run(scenario())
    finally:
        server.stop()
    assert all(isinstance(outcome, StorageError) for outcome in outcomes), outcomes


def test_nobody_listening_fails_fast():
    async def scenario() -> None:
        connection = PipelinedRedis("127.0.0.1", free_port(), timeout=0.5)
        try:
            with pytest.raises(RedisUnavailable, match="cannot connect"):
                await connection.execute("PING")
            # And again: a failed connect leaves nothing half-open behind.
            with pytest.raises(RedisUnavailable, match="cannot connect"):
                await connection.execute("PING")
        finally:
            await connection.close()

    asyncio.run(asyncio.wait_for(scenario(), timeout=5))
