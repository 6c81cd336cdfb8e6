"""The application factory: ``create_app(settings)``, the one way Gatehouse is built.

``python -m gatehouse`` (the chart, the image, ``make run``, the tests) calls it, and so
does ``uvicorn --factory gatehouse.service:create_app`` (the benchmarks). Every check
made before serving is in it; importing this module does nothing.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from functools import partial

from starlette.types import ASGIApp

from .app import Api, Job, create_api
from .config_reload import ConfigWatcher
from .edge import Edge
from .logs import configure_logging
from .management import ManagementApp, PortSplit
from .metrics import Metrics
from .middleware.security_headers import security_headers
from .ratelimit.failover import FailoverStore
from .ratelimit.identity import (
    EMPTY_KEY_SET,
    ApiKeys,
    IdentityResolver,
    JwksKeys,
    TokenVerifier,
    fetch_url,
    parse_api_key_digests,
    parse_jwks,
    read_file,
)
from .ratelimit.peers import PEERS_SCRIPT, PeerRegistry
from .ratelimit.redis_store import RedisWindowStore, connect_runner
from .settings import ConfigError, Settings, load_proxy_settings, load_settings
from .startup_checks import StartupCheckError, check_redis_tls

# Young objects between two collections of the first generation (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def create_app(settings: Settings | None = None) -> Edge:
    """The service, checked and ready to serve: settings from the environment when none
    are given, proxy trust checked too, Redis TLS trust checked, the collector tuned.

    Raises ``ConfigError`` (one line naming the variable) for anything that cannot work.
    """
    if settings is None:
        settings = load_settings()
    load_proxy_settings()  # FORWARDED_ALLOW_IPS: refused here whichever way uvicorn starts
    configure_logging(settings.log_level)
    try:
        check_redis_tls(
            settings.redis_url,
            settings.redis_ca_file,
            settings.redis_timeout,
            logging.getLogger("gatehouse.startup"),
        )
    except StartupCheckError as error:  # a certificate no configured CA signed
        raise ConfigError(str(error)) from None
    try:
        edge = build_service(settings)
    except ValueError as error:  # settings valid alone, not with this app (an unknown route)
        raise ConfigError(f"invalid configuration: {error}") from None
    tune_garbage_collection()
    return edge


def create_server_app(settings: Settings | None = None) -> ASGIApp:
    """What ``python -m gatehouse`` serves: ``create_app``'s edge and, with a management
    port (APP_METRICS_PORT), the management app beside it (``with_management_port``)."""
    if settings is None:
        settings = load_settings()
    return with_management_port(create_app(settings), settings)


def with_management_port(edge: Edge, settings: Settings) -> ASGIApp:
    """``edge`` alone, or split by local port with the management app on
    ``settings.metrics_port`` (the process must listen on both: ``python -m gatehouse``)."""
    if settings.metrics_port is None:
        return edge
    management = ManagementApp(
        edge.metrics,
        readiness=lambda: readiness(edge.store),
        headers=security_headers(),
    )
    return PortSplit(edge, management, settings.metrics_port)


def build_service(settings: Settings) -> Edge:
    """The whole service for ``settings``: the FastAPI app wrapped in the edge.

    No checks beyond the settings' own and nothing process-wide: tests build many.
    """
    metrics = Metrics()
    primary = None
    peers = None
    if settings.redis_url:
        runner = connect_runner(
            settings.redis_url,
            password=settings.redis_password,
            timeout=settings.redis_timeout,
            client=settings.redis_client,
            ca_file=settings.redis_ca_file,
        )
        primary = RedisWindowStore(runner, observe_latency=metrics.hot_path.observe_redis)
        if settings.peer_heartbeat_interval > 0:  # 0: APP_REPLICAS is the count, fixed
            peers = PeerRegistry(
                runner.script(PEERS_SCRIPT),
                interval=settings.peer_heartbeat_interval,
                estimate=settings.replicas,
                logger=logging.getLogger("gatehouse.ratelimit"),
                on_error=metrics.ratelimit_peer_heartbeat_errors.inc,
            )
    store = FailoverStore(
        primary,
        mode=settings.rate_limit_failure_mode,
        replicas=settings.replicas,
        retry_interval=settings.redis_retry_interval,
        logger=logging.getLogger("gatehouse.ratelimit"),
        on_error=metrics.ratelimit_storage_errors.inc,
        on_fallback=lambda active: metrics.ratelimit_fallback.set(1 if active else 0),
    )
    background: list[Job] = []
    on_shutdown: list[Job] = [primary.close] if primary is not None else []
    # Memory only: no fallback, no division; this process is the only counter.
    metrics.ratelimit_peers.set(store.replicas if primary is not None else 1)
    if peers is not None:

        def follow_peers(count: int) -> None:
            store.use_replicas(count)
            metrics.ratelimit_peers.set(store.replicas)

        peers.on_count = follow_peers
        background.append(peers.run)
        on_shutdown.insert(0, peers.leave)  # before the connection closes
    api: Api = create_api(
        settings,
        metrics,
        readiness=lambda: readiness(store),
        background=background,
        on_shutdown=on_shutdown,
    )
    edge = Edge(api, settings, store, metrics, build_identity(settings, background))
    if settings.allowed_origins_file:
        watcher = ConfigWatcher(
            settings,
            edge.apply,
            logger=logging.getLogger("gatehouse.config"),
            count=lambda result: metrics.config_reloads.labels(result).inc(),
        )
        background.append(watcher.run)
    return edge


def build_identity(settings: Settings, background: list[Job]) -> IdentityResolver | None:
    """Who the limiter counts (``ratelimit/identity.py``); None: every client by address.

    A JWKS file is read now (the settings checked it parses); a URL is first fetched by
    the refresh job, which starts with the app: until then tokens count by IP. Both
    are refreshed in the background (``background``), never on a request's path.
    """
    tokens = None
    source = settings.rate_limit_jwks_file or settings.rate_limit_jwks_url
    if source is not None and settings.rate_limit_jwt_audience:
        algorithms = settings.rate_limit_jwt_algorithms
        file = settings.rate_limit_jwks_file
        fetch: Callable[[], bytes]
        initial = EMPTY_KEY_SET
        if file is not None:
            fetch = partial(read_file, file)
            initial = parse_jwks(fetch(), algorithms)
        else:
            fetch = partial(fetch_url, source)
        keys = JwksKeys(
            fetch,
            algorithms,
            refresh_interval=settings.rate_limit_jwks_refresh_interval,
            min_refresh_interval=settings.rate_limit_jwks_min_refresh_interval,
            initial=initial,
            logger=logging.getLogger("gatehouse.ratelimit"),
        )
        background.append(keys.run)
        tokens = TokenVerifier(
            keys,
            audience=settings.rate_limit_jwt_audience,
            issuer=settings.rate_limit_jwt_issuer,
            algorithms=algorithms,
            leeway=settings.rate_limit_jwt_leeway,
        )
    api_keys = None
    if settings.rate_limit_api_key_header and settings.rate_limit_api_keys_file:
        with open(settings.rate_limit_api_keys_file, encoding="utf-8") as digests:
            known = parse_api_key_digests(digests.read())
        api_keys = ApiKeys(settings.rate_limit_api_key_header, known)
    if tokens is None and api_keys is None:
        return None
    return IdentityResolver(tokens, api_keys)


async def readiness(store: FailoverStore) -> tuple[bool, dict[str, str | int]]:
    """Ready once started, with the rate-limit storage's state in the body.

    A Redis outage never makes a pod unready, in either failure mode: every pod shares
    the one Redis, so all of them would leave the Service at once and browsers would get
    the ingress's bare 503, without CORS. The API answers instead: in mode ``open`` by
    counting on its own, in mode ``closed`` with its own 503, ``Retry-After`` and CORS.
    """
    if store.primary is None:
        return True, {"status": "ready", "redis": "disabled", "rate_limit": "memory"}
    redis_ok = await store.primary.ping()
    return True, {
        "status": "ready",
        "redis": "ok" if redis_ok else "unavailable",
        "rate_limit": "shared" if store.shared else "fallback",
        "failure_mode": store.mode,
        "peers": store.replicas,  # the open-mode fallback's divisor (``ratelimit.peers``)
    }


def tune_garbage_collection() -> None:
    """Collector settings for a process that serves requests until it stops.

    What exists at the end of start-up (modules, the app, its routes and models) lives
    as long as the process: frozen, no collection scans it again. A check that waits
    on Redis keeps its request's objects alive while other requests allocate; with
    the default threshold those objects are collected young, promoted and scanned
    again in the older generations. ``make bench-profile`` measures what this buys
    (bench/results/profile.md).
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
