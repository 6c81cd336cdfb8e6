"""A lean Redis connection for the hot path: one socket, commands pipelined per loop tick.

Commands submitted in the same event-loop tick are written to the socket together
(one write, one read), and replies come back in order, so each command still gets
its own, exact reply. One timer per connection (not one per call) enforces the
timeout: when the oldest pending reply is late, the connection is dropped and every
waiting command fails at once, so nothing waits longer than the timeout and the
caller's failure handling takes over.

``submit`` returns the reply's future, not a coroutine: a caller awaits it directly,
with no coroutine frames in between to create and resume. An error reply fails its
future with RedisReplyError, unless the connection's ``on_error_reply`` returns a
command to send in its place: that command's reply then settles the same future.

Used for ``redis://`` and ``rediss://``; Sentinel and Cluster go through redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

from .errors import StorageError

# (the command as sent, Redis's error reply) -> a command to send in its place, for the
# same reply future, or None: the future fails with the error.
ErrorReplyHandler = Callable[[bytes, Exception], bytes | None]


class RedisUnavailable(StorageError):
    """The connection failed, was lost, or a reply was later than the timeout."""


class RedisReplyError(StorageError):
    """Redis answered with an error (WRONGTYPE, OOM, NOAUTH ...)."""


def bulk_string(data: bytes) -> bytes:
    """One RESP bulk string: ``$<length>\\r\\n<data>\\r\\n``."""
    return b"$%d\r\n%s\r\n" % (len(data), data)


def encode_command(*parts: bytes | str | int) -> bytes:
    """RESP encoding of one command."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(bulk_string(part if isinstance(part, bytes) else str(part).encode()))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, connection: PipelinedRedis) -> None:
        self.connection = connection
        self.reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        connection = self.connection
        pending = connection.pending
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not pending:  # a reply nobody waits for: the stream is out of step
                connection.drop(RedisUnavailable("unexpected reply"))
                return
            future, _deadline, command = pending.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                handler = connection.on_error_reply
                retry = None if handler is None else handler(command, reply)
                if retry is not None:
                    connection.resend(future, retry)
                else:
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
        on_error_reply: ErrorReplyHandler | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.password = password
        self.username = username
        self.db = db
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.connecting: asyncio.Task[None] | None = None
        # (reply's future, deadline, the command as sent): the command is kept (a
        # reference, not a copy) for ``on_error_reply``.
        self.pending: deque[tuple[asyncio.Future[Any], float, bytes]] = deque()
        self.outbox: list[bytes] = []
        self.flush_scheduled = False
        self.watchdog: asyncio.TimerHandle | None = None
        self.on_error_reply = on_error_reply

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
        return await self.submit(encode_command(*parts))

    def submit(self, command: bytes) -> asyncio.Future[Any]:
        """Queue one command in RESP form; the future of its reply.

        The future fails with RedisUnavailable (no connection, or no reply within the
        timeout) or RedisReplyError. Connecting, when needed, starts here; the command
        waits in the outbox and goes out right after the handshake.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._enqueue(future, command, loop)
        return future

    def _enqueue(
        self, future: asyncio.Future[Any], command: bytes, loop: asyncio.AbstractEventLoop
    ) -> None:
        # The outbox is written in order and replies come in order: the two lists
        # grow together, so the n-th reply settles the n-th future.
        self.pending.append((future, time.monotonic() + self.timeout, command))
        self.outbox.append(command)
        if self.transport is None:
            if self.connecting is None:
                self.connecting = loop.create_task(self._connect())
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            loop.call_soon(self._flush)
        if self.watchdog is None:
            self.watchdog = loop.call_later(self.timeout, self._check_deadlines)

    def resend(self, future: asyncio.Future[Any], command: bytes) -> None:
        """Send ``command`` for a future whose first command failed; its reply settles it."""
        if self.transport is None:
            future.set_exception(RedisUnavailable("connection lost"))
            return
        self._enqueue(future, command, asyncio.get_running_loop())

    def _flush(self) -> None:
        self.flush_scheduled = False
        # No transport: dropped (the outbox was cleared, the futures failed) or not
        # connected yet (the connect flushes the outbox itself).
        if self.transport is None or not self.outbox:
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
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                transport, _ = await loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port, ssl=self.ssl_context
                )
        except Exception as error:
            self.connecting = None
            self.drop(RedisUnavailable(f"cannot connect to {self.host}:{self.port}: {error}"))
            return
        self.connecting = None
        # No isinstance check here: uvloop's transports are not asyncio.Transport
        # subclasses, though they behave as one.
        self.transport = transport
        # The handshake goes first: its replies come first, so its entries lead.
        handshake: list[bytes] = []
        if self.password:
            auth = [self.username, self.password] if self.username else [self.password]
            handshake.append(encode_command("AUTH", *auth))
        if self.db:
            handshake.append(encode_command("SELECT", self.db))
        deadline = time.monotonic() + self.timeout
        for command in reversed(handshake):
            future: asyncio.Future[Any] = loop.create_future()
            future.add_done_callback(self._handshake_done)
            self.pending.appendleft((future, deadline, command))
        self.outbox[:0] = handshake
        self._flush()

    def _handshake_done(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None and not isinstance(error, RedisUnavailable):
            # Wrong password, no such db: nothing after it can be trusted.
            self.drop(RedisUnavailable(f"handshake with {self.host}:{self.port} failed: {error}"))

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
        for future, _deadline, _command in pending:
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        connecting = self.connecting
        if connecting is not None:
            connecting.cancel()
            self.connecting = None
        self.drop(RedisUnavailable("closed"))
        await asyncio.sleep(0)  # the transport closes its socket on the next loop turn
