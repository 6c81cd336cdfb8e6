"""A lean Redis connection for the hot path: one socket, commands pipelined per loop tick.

Every rate-limit check is one EVALSHA. Checks started in the same event-loop tick are
written to the socket together (one write, one read), and replies come back in
order, so each check still gets its own, exact reply. One timer per connection (not
one per call) enforces the timeout: when the oldest pending reply is late, the
connection is dropped and every waiting check fails at once, so nothing waits longer
than the timeout and the failure mode takes over.

``submit`` returns the reply's future, not a coroutine: a check awaits it directly,
with no coroutine frames in between to create and resume. A script Redis does not
know (NOSCRIPT: restarted, flushed) is sent again as EVAL by the connection itself.

Used for ``redis://`` and ``rediss://``; Sentinel and Cluster go through redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

from .errors import StorageError

EVALSHA_HEAD = b"$7\r\nEVALSHA\r\n$40\r\n"


class RedisUnavailable(StorageError):
    """The connection failed, was lost, or a reply was later than the timeout."""


class RedisReplyError(StorageError):
    """Redis answered with an error (a script error, OOM, NOAUTH ...)."""


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
                retry = connection.eval_instead(command, reply)
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
        # reference, not a copy) so an EVALSHA can go again as EVAL.
        self.pending: deque[tuple[asyncio.Future[Any], float, bytes]] = deque()
        self.outbox: list[bytes] = []
        self.flush_scheduled = False
        self.watchdog: asyncio.TimerHandle | None = None
        self.scripts: dict[bytes, bytes] = {}  # sha1 hex -> source, for NOSCRIPT

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

    def register_script(self, sha: bytes, source: bytes) -> None:
        self.scripts[sha] = source

    def eval_instead(self, command: bytes, reply: Exception) -> bytes | None:
        """The EVAL to send when Redis did not know the script an EVALSHA named."""
        if not str(reply).startswith("NOSCRIPT"):
            return None
        head = command.find(EVALSHA_HEAD)
        if head < 0:
            return None
        start = head + len(EVALSHA_HEAD)
        source = self.scripts.get(command[start : start + 40])
        if source is None:
            return None
        # *N\r\n$7\r\nEVALSHA\r\n$40\r\n<sha>\r\n<the rest>: same N, same rest.
        return b"%s$4\r\nEVAL\r\n$%d\r\n%s%s" % (
            command[:head],
            len(source),
            source,
            command[start + 40 :],
        )

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


class PipelinedScript:
    """A Lua script run by EVALSHA; the connection sends EVAL when Redis answers NOSCRIPT."""

    MAX_TEMPLATES = 256  # distinct argument lists: one per limit policy, reloads included

    def __init__(self, connection: PipelinedRedis, source: str) -> None:
        self.connection = connection
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        connection.register_script(self.sha.encode(), source.encode())
        self.evalsha_head = EVALSHA_HEAD + b"%s\r\n" % self.sha.encode()
        # (key count, args) -> the command before its keys and after them. A policy's
        # arguments never change, so a check only encodes its keys: bytes formatting is
        # the costly part of a command (measured: 17,000 instructions to encode one
        # check part by part, 3,000 with the ends reused).
        self.templates: dict[tuple[int, tuple[int, ...]], tuple[bytes, bytes]] = {}

    def __call__(self, keys: Sequence[str], args: Sequence[int]) -> asyncio.Future[Any]:
        template_key = (len(keys), tuple(args))
        template = self.templates.get(template_key)
        if template is None:
            template = self._template(len(keys), args)
            if len(self.templates) < self.MAX_TEMPLATES:
                self.templates[template_key] = template
        head, tail = template
        if len(keys) == 1:
            key = keys[0].encode()
            return self.connection.submit(b"%s$%d\r\n%s\r\n%s" % (head, len(key), key, tail))
        encoded = [bulk_string(key.encode()) for key in keys]
        return self.connection.submit(b"".join((head, *encoded, tail)))

    def _template(self, key_count: int, args: Sequence[int]) -> tuple[bytes, bytes]:
        head = b"*%d\r\n%s%s" % (
            3 + key_count + len(args),
            self.evalsha_head,
            bulk_string(b"%d" % key_count),
        )
        return head, b"".join(bulk_string(b"%d" % arg) for arg in args)
