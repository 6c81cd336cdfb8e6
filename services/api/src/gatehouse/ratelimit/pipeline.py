"""A lean Redis connection for the hot path: one socket, commands pipelined per loop tick.

Every rate-limit check is one EVALSHA. Checks started in the same event-loop tick are
written to the socket together (one write, one read), and replies come back in
order, so each check still gets its own, exact reply. One timer per connection (not
one per call) enforces the timeout: when the oldest pending reply is late, the
connection is dropped and every waiting check fails at once, so nothing waits longer
than the timeout and the failure mode takes over.

Used for ``redis://`` and ``rediss://``; Sentinel and Cluster go through redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections import deque
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis


class RedisUnavailable(Exception):
    """The connection failed, was lost, or a reply was later than the timeout."""


class RedisReplyError(Exception):
    """Redis answered with an error (a script error, OOM, NOAUTH ...)."""


def encode_command(*parts: bytes | str | int) -> bytes:
    """RESP encoding of one command."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, connection: PipelinedRedis) -> None:
        self.connection = connection
        self.reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.connection.pending
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not pending:  # a reply nobody waits for: the stream is out of step
                self.connection.drop(RedisUnavailable("unexpected reply"))
                return
            future, _deadline = pending.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(RedisReplyError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.drop(RedisUnavailable(f"connection lost: {exc or 'closed by server'}"))


class PipelinedRedis:
    """One connection to one Redis, opened on first use and reopened after a failure."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        password: str | None = None,
        username: str | None = None,
        db: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 0.25,
    ) -> None:
        self.host = host
        self.port = port
        self.password = password
        self.username = username
        self.db = db
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.connecting: asyncio.Future[None] | None = None
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.outbox: list[bytes] = []
        self.flush_scheduled = False
        self.watchdog: asyncio.TimerHandle | None = None

    @classmethod
    def from_url(
        cls, url: str, password: str | None, timeout: float, ca_file: str | None = None
    ) -> PipelinedRedis:
        parts = urlsplit(url)
        secure = parts.scheme == "rediss"
        context = None
        if secure:
            context = ssl.create_default_context(cafile=ca_file)
        db_text = parts.path.lstrip("/")
        return cls(
            parts.hostname or "localhost",
            parts.port or 6379,
            password=password or (unquote(parts.password) if parts.password else None),
            username=unquote(parts.username) if parts.username else None,
            db=int(db_text) if db_text else 0,
            ssl_context=context,
            timeout=timeout,
        )

    async def execute(self, *parts: bytes | str | int) -> Any:
        """Send one command; its reply, or RedisUnavailable within the timeout."""
        return await self.execute_encoded(encode_command(*parts))

    async def execute_encoded(self, command: bytes) -> Any:
        """Send one command already in RESP form (see ``PipelinedScript``)."""
        if self.transport is None:
            await self._connect()
        return await self._queue(command)

    def _queue(self, command: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.pending.append((future, time.monotonic() + self.timeout))
        self.outbox.append(command)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            loop.call_soon(self._flush)
        if self.watchdog is None:
            self.watchdog = loop.call_later(self.timeout, self._check_deadlines)
        return future

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.transport is None:  # dropped meanwhile; the futures already failed
            self.outbox.clear()
            return
        self.transport.write(b"".join(self.outbox))
        self.outbox.clear()

    def _check_deadlines(self) -> None:
        self.watchdog = None
        if not self.pending:
            return
        oldest_deadline = self.pending[0][1]
        now = time.monotonic()
        if oldest_deadline <= now:
            self.drop(RedisUnavailable(f"no reply within {self.timeout} s"))
            return
        self.watchdog = asyncio.get_running_loop().call_later(
            oldest_deadline - now, self._check_deadlines
        )

    async def _connect(self) -> None:
        if self.connecting is not None:
            await asyncio.shield(self.connecting)
            return
        loop = asyncio.get_running_loop()
        connecting = self.connecting = loop.create_future()
        try:
            async with asyncio.timeout(self.timeout):
                transport, _ = await loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port, ssl=self.ssl_context
                )
            # No isinstance check here: uvloop's transports are not asyncio.Transport
            # subclasses, though they behave as one.
            self.transport = transport
            handshake = []
            if self.password:
                auth = [self.username, self.password] if self.username else [self.password]
                handshake.append(self._queue(encode_command("AUTH", *auth)))
            if self.db:
                handshake.append(self._queue(encode_command("SELECT", self.db)))
            if handshake:
                await asyncio.gather(*handshake)
        except Exception as error:
            failure = RedisUnavailable(f"cannot connect to {self.host}:{self.port}: {error}")
            self.drop(failure)
            connecting.set_exception(failure)
            connecting.exception()  # marked as retrieved: waiters get it, nobody else must
            raise failure from error
        else:
            connecting.set_result(None)
        finally:
            self.connecting = None
            if not connecting.done():  # cancelled mid-connect: release the waiters
                connecting.set_exception(RedisUnavailable("connect cancelled"))
                connecting.exception()

    def drop(self, error: Exception) -> None:
        """Close the connection and fail everything waiting on it."""
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        self.outbox.clear()
        pending, self.pending = self.pending, deque()
        for future, _deadline in pending:
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        self.drop(RedisUnavailable("closed"))


class PipelinedScript:
    """A Lua script run by EVALSHA, loaded again when Redis answers NOSCRIPT."""

    def __init__(self, connection: PipelinedRedis, source: str) -> None:
        self.connection = connection
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        # The command's fixed start, encoded once; a check only encodes its keys and args.
        self.evalsha_head = b"$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % self.sha.encode()

    async def __call__(self, keys: list[str], args: list[int]) -> Any:
        parts = [b"*%d\r\n" % (3 + len(keys) + len(args)), self.evalsha_head]
        for part in (str(len(keys)), *keys, *map(str, args)):
            data = part.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        try:
            return await self.connection.execute_encoded(b"".join(parts))
        except RedisReplyError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
            # A restarted or flushed Redis forgot the script; EVAL loads it again.
            return await self.connection.execute("EVAL", self.source, len(keys), *keys, *args)
