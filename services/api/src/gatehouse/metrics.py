"""Prometheus metrics, on a registry per application so tests can build many apps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REDIS_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gatehouse_http_requests",
            "HTTP requests by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "gatehouse_http_request_duration_seconds",
            "Time from request to the end of the response, by route template.",
            ("route",),
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.ratelimit_decisions = Counter(
            "gatehouse_ratelimit_decisions",
            "Rate-limit checks by route template and outcome "
            "(allowed, denied, unavailable, shadow_denied: a shadow limit that would refuse).",
            ("route", "decision"),
            registry=self.registry,
        )
        self.ratelimit_storage_errors = Counter(
            "gatehouse_ratelimit_storage_errors",
            "Rate-limit checks that Redis failed to answer (timeouts, refused connections).",
            registry=self.registry,
        )
        self.ratelimit_fallback = Gauge(
            "gatehouse_ratelimit_fallback_active",
            "1 while checks use the local fallback because Redis is unavailable.",
            registry=self.registry,
        )
        self.cors_rejections = Counter(
            "gatehouse_cors_rejections",
            "Requests whose Origin is not on the allowlist.",
            registry=self.registry,
        )
        self.redis_latency = Histogram(
            "gatehouse_redis_latency_seconds",
            "Round-trip time of the rate-limit script.",
            buckets=REDIS_BUCKETS,
            registry=self.registry,
        )
        self.cross_site = Counter(
            "gatehouse_cross_site_requests",
            "Unsafe requests from a page on another site, by action (refused, shadowed).",
            ("action",),
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "gatehouse_config_reloads",
            "Reloads of the mounted ConfigMap, by result (applied, rejected).",
            ("result",),
            registry=self.registry,
        )
