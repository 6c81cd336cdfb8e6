"""The application factory: ``create_app(settings)``, the one way Gatehouse is built.

``python -m gatehouse`` (the chart, the image, ``make run``, the tests) calls it, and so
does ``uvicorn --factory gatehouse.service:create_app`` (the benchmarks). Every check
made before serving is in it; importing this module does nothing.
"""

from __future__ import annotations

import gc
import logging

from .app import Api, Job, create_api
from .config_reload import ConfigWatcher
from .edge import Edge
from .logs import configure_logging
from .metrics import Metrics
from .ratelimit.failover import FailoverStore
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


def build_service(settings: Settings) -> Edge:
    """The whole service for ``settings``: the FastAPI app wrapped in the edge.

    No checks beyond the settings' own and nothing process-wide: tests build many.
    """
    metrics = Metrics()
    primary = None
    if settings.redis_url:
        runner = connect_runner(
            settings.redis_url,
            password=settings.redis_password,
            timeout=settings.redis_timeout,
            client=settings.redis_client,
            ca_file=settings.redis_ca_file,
        )
        primary = RedisWindowStore(runner, observe_latency=metrics.hot_path.observe_redis)
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
    api: Api = create_api(
        settings,
        metrics,
        readiness=lambda: readiness(store),
        background=background,
        on_shutdown=on_shutdown,
    )
    edge = Edge(api, settings, store, metrics)
    if settings.allowed_origins_file:
        watcher = ConfigWatcher(
            settings,
            edge.apply,
            logger=logging.getLogger("gatehouse.config"),
            count=lambda result: metrics.config_reloads.labels(result).inc(),
        )
        background.append(watcher.run)
    return edge


async def readiness(store: FailoverStore) -> tuple[bool, dict[str, str]]:
    """Ready, with the rate-limit storage's state.

    Mode ``open`` serves through a Redis outage, so the pod stays ready; mode
    ``closed`` refuses limited requests then, so it reports not ready.
    """
    if store.primary is None:
        return True, {"status": "ready", "redis": "disabled", "rate_limit": "memory"}
    redis_ok = await store.primary.ping()
    ready = redis_ok or store.mode == "open"
    return ready, {
        "status": "ready" if ready else "unavailable",
        "redis": "ok" if redis_ok else "unavailable",
        "rate_limit": "shared" if store.shared else "fallback",
        "failure_mode": store.mode,
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
