"""The check script run on the shared Redis (or Valkey): the runners and the store.

- ``PipelinedRunner``: one endpoint (``redis://``, ``rediss://``) through ``pipeline``'s
  connection, each check one EVALSHA (``PipelinedScript``), sent again as EVAL when
  Redis answers NOSCRIPT (``EvalOnNoScript``).
- ``RedisPyRunner``: Sentinel and Cluster, through the client ``limits`` builds.
- ``RedisWindowStore``: one script call per check (``call``), its reply as a Verdict.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from limits.aio.storage import RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.storage import storage_from_string
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from .errors import StorageError
from .pipeline import PipelinedRedis, bulk_string
from .policy import RoutePolicy
from .script import CHECK_SCRIPTS, Verdict, parse_reply

EVALSHA_HEAD = b"$7\r\nEVALSHA\r\n$40\r\n"
_new_tuple = tuple.__new__  # bound once: a Verdict per check (see ``script.verdict``)


class EvalOnNoScript:
    """A pipelined connection's ``on_error_reply``: the scripts it runs, by SHA1.

    Redis forgets its script cache (restarted, SCRIPT FLUSH, a fresh primary); an
    EVALSHA it does not know is sent again as EVAL, same keys and arguments, which
    answers the check and caches the script again.
    """

    def __init__(self) -> None:
        self.scripts: dict[bytes, bytes] = {}  # sha1 hex -> source, for NOSCRIPT

    @classmethod
    def on(cls, connection: PipelinedRedis) -> EvalOnNoScript:
        """The one ``connection`` uses, installed now if it has none."""
        handler = connection.on_error_reply
        if handler is None:
            installed = cls()
            connection.on_error_reply = installed
            return installed
        if not isinstance(handler, cls):
            raise ValueError("this connection answers error replies with another handler")
        return handler

    def __call__(self, command: bytes, reply: Exception) -> bytes | None:
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


class PipelinedScript:
    """A Lua script run by EVALSHA on a pipelined connection; EVAL when Redis answers NOSCRIPT.

    A call returns the reply's future (see ``pipeline``): a check awaits it directly.
    """

    MAX_TEMPLATES = 256  # distinct argument lists: one per limit policy, reloads included

    def __init__(self, connection: PipelinedRedis, source: str) -> None:
        self.connection = connection
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        EvalOnNoScript.on(connection).scripts[self.sha.encode()] = source.encode()
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


# One Lua script's call: (keys, integer arguments) -> its reply; raises StorageError.
ScriptCall = Callable[[Sequence[str], Sequence[int]], Awaitable[Any]]


class ScriptRunner(Protocol):
    """Runs Lua scripts (``script``: the checks, the peer registry's) on some Redis client;
    the awaitables raise StorageError."""

    def script(self, source: str) -> ScriptCall: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class PipelinedRunner:
    """The hot path for one Redis endpoint (``redis://``, ``rediss://``): see ``pipeline``."""

    def __init__(self, connection: PipelinedRedis) -> None:
        self.connection = connection

    def script(self, source: str) -> ScriptCall:
        # The script itself: a call gets the reply's future, whose errors are
        # StorageErrors already, with no call in between.
        return PipelinedScript(self.connection, source)

    async def ping(self) -> bool:
        try:
            return bool(await self.connection.execute("PING"))
        except StorageError:
            return False

    async def close(self) -> None:
        await self.connection.close()


class RedisPyRunner:
    """Any topology the ``limits`` library connects to (Sentinel, Cluster, ...), via redis-py."""

    def __init__(self, client: Any, timeout: float, also_close: Sequence[Any] = ()) -> None:
        self.client = client
        self.timeout = timeout
        self.also_close = also_close  # clients behind this one: Sentinel's sentinels

    @classmethod
    def from_url(
        cls, url: str, password: str | None, timeout: float, ca_file: str | None = None
    ) -> RedisPyRunner:
        """The client ``limits`` builds for ``url``, with fail-fast options for its kind.

        Credentials in the URL reach every node (and, for Sentinel, the sentinels too,
        as ``limits`` does); ``password`` (APP_REDIS_PASSWORD) reaches the data nodes.
        """
        scheme = url.split("://", 1)[0]
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "health_check_interval": 0,
        }
        if scheme == "redis+cluster":
            # RedisCluster takes no per-connection ``retry_on_timeout``; its ``retry``
            # counts whole attempts (reconnect and re-read the slot map). One more
            # attempt lets a request ride over a node that just moved, within the
            # timeout below; MOVED, ASK and TRYAGAIN are followed whatever this says.
            options["retry"] = Retry(NoBackoff(), 1)
            # By default redis-py closes every connection after five MOVED replies,
            # in-flight commands included; those fail after Redis ran them and the
            # retry above runs them again: a hit counted twice (seen while resharding
            # under load). Each MOVED updates its own slot instead.
            options["reinitialize_steps"] = 0
        else:
            # Fail fast: the failure mode decides what to do; retries would only
            # multiply the time a request waits on a dead Redis.
            options["retry"] = Retry(NoBackoff(), 0)
        if scheme == "redis+sentinel":
            # Without this, ``limits`` hands the sentinels no socket timeouts at all:
            # one silent sentinel would hold every reconnect past the timeout.
            sentinel_options: dict[str, Any] = {
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
            }
            options["sentinel_kwargs"] = sentinel_options
        if password:
            options["password"] = password
        if ca_file:
            options["ssl_ca_certs"] = ca_file
        storage = storage_from_string(f"async+{url}", implementation="redispy", **options)
        bridge = getattr(storage, "bridge", None)
        if not isinstance(storage, RedisStorage) or not isinstance(bridge, RedispyBridge):
            raise ValueError(f"{scheme} is not a Redis storage")  # pragma: no cover
        sentinel = getattr(bridge, "sentinel", None)
        sentinels = list(getattr(sentinel, "sentinels", ()))
        return cls(bridge.get_connection(), timeout, also_close=sentinels)

    def script(self, source: str) -> ScriptCall:
        sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        # Until one call of this script has succeeded, its calls go one at a time.
        warm = False
        first_call = asyncio.Lock()

        async def run(keys: Sequence[str], args: Sequence[int]) -> Any:
            nonlocal warm
            try:
                async with asyncio.timeout(self.timeout):
                    if not warm:
                        # A cold client (no slot map, no connections) met by a burst:
                        # every waiting check would discover the topology and open
                        # connections at once. Measured on a cold cluster client under
                        # three replicas' burst: redis-py failed checks on transports it
                        # had closed under them. One call warms it; the rest follow.
                        # Per script: the first call also loads the script into Redis
                        # (NOSCRIPT, then EVAL). Measured over TLS with one flag for
                        # all scripts: the heartbeat warmed the client, and a burst of
                        # checks all paid two round trips on new connections, past the
                        # timeout.
                        async with first_call:
                            if not warm:
                                reply = await self._call(sha, source, keys, args)
                                warm = True
                                return reply
                    return await self._call(sha, source, keys, args)
            except (RedisError, OSError, TimeoutError) as error:
                raise StorageError(f"{type(error).__name__}: {error}") from error

        return run

    async def _call(self, sha: str, source: str, keys: Sequence[str], args: Sequence[int]) -> Any:
        try:
            return await self.client.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            # A node that never saw the script (a fresh primary, one promoted after a
            # failover: Redis 7 does not replicate the script cache). EVAL runs it on
            # that node and caches it there. redis-py's own Script would SCRIPT LOAD
            # on every primary for every waiting check at once: measured on a fresh
            # cluster, a burst of 180 checks then opened connections faster than the
            # timeout allowed and ten of them failed.
            return await self.client.eval(source, len(keys), *keys, *args)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                return bool(await self.client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        await self.client.aclose()
        for client in self.also_close:
            await client.aclose()


def connect_runner(
    url: str, password: str | None, timeout: float, client: str = "auto", ca_file: str | None = None
) -> ScriptRunner:
    """The pipelined connection for one endpoint; redis-py for Sentinel and Cluster."""
    single_endpoint = url.startswith(("redis://", "rediss://"))
    if client == "pipelined" or (client == "auto" and single_endpoint):
        if not single_endpoint:
            raise ValueError("the pipelined client speaks to one endpoint (redis:// or rediss://)")
        return PipelinedRunner(PipelinedRedis.from_url(url, password, timeout, ca_file))
    return RedisPyRunner.from_url(url, password, timeout, ca_file)


class RedisWindowStore:
    """Counters in the shared Redis (or Valkey): one script call per check, the script
    of the route's algorithm. ``scripts`` (algorithm -> source): tests pass variants."""

    def __init__(
        self,
        runner: ScriptRunner,
        observe_latency: Callable[[float], None] | None = None,
        scripts: dict[str, str] = CHECK_SCRIPTS,
    ) -> None:
        self.runner = runner
        self.observe_latency = observe_latency
        self.checks = {algorithm: runner.script(source) for algorithm, source in scripts.items()}

    def call(self, keys: Sequence[str], policy: RoutePolicy) -> Awaitable[Any]:
        """Send one check; its reply, to await and pass to ``verdict``.

        With the pipelined client this is the reply's future itself, so the caller
        (``FailoverStore.hit``) awaits it with no coroutine frame in between.
        """
        return self.checks[policy.algorithm](keys, policy.script_args)

    def verdict(self, reply: Any, started: float) -> Verdict:
        """The reply of a check sent at ``started`` (``time.perf_counter``), as a Verdict."""
        if self.observe_latency is not None:
            self.observe_latency(time.perf_counter() - started)
        try:
            if len(reply) == 4:  # one window, most limits: ``parse_reply`` inline
                return _new_tuple(Verdict, (reply[0] == 1, (reply[2],), (reply[3],), reply[1]))
            return parse_reply(reply)
        except (TypeError, ValueError, IndexError) as error:
            raise StorageError(f"unexpected reply {reply!r}") from error

    async def ping(self) -> bool:
        return await self.runner.ping()

    async def close(self) -> None:
        await self.runner.close()
