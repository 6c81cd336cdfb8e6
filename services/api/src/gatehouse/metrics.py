"""Prometheus metrics, on a registry per application so tests can build many apps."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from .middleware.cors import REFUSAL_REASONS as CORS_REFUSAL_REASONS

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REDIS_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)


def _cumulative(bounds: tuple[float, ...], histogram: list[float]) -> list[tuple[str, float]]:
    """Prometheus buckets (cumulative, ``le`` labels) from per-bucket counts."""
    total, buckets = 0.0, []
    for bound, observed in zip((*bounds, float("inf")), histogram, strict=False):
        total += observed
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
    return buckets


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The outcomes of a rate-limit check, as exported (``decision`` label), in label order.
DECISIONS = ("allowed", "denied", "shadow_denied", "unavailable")


class DecisionCounts:
    """One route's rate-limit decisions, by outcome (``DECISIONS``).

    The limiter holds each route's counts and increments an attribute per check: one
    addition instead of a call and a dictionary update keyed by (route, decision).
    """

    __slots__ = ("allowed", "denied", "shadow_denied", "unavailable")

    def __init__(self) -> None:
        self.allowed = self.denied = self.shadow_denied = self.unavailable = 0


class HotPathStats:
    """The per-request metrics, kept as plain numbers and exported at scrape time.

    prometheus-client's labelled Counter and Histogram take a lock per increment and
    walk the buckets in Python: three of them per request cost a tenth of the edge
    (``make bench-profile``, bench/results/profile.md). All of this runs on the one
    event loop (the scrape too), so plain dictionaries are exact and need no lock.

    A request is one lookup: its series, by (route, method, status), holds the count,
    the sum of seconds and the duration buckets; the scrape adds the series of a
    route together for its histogram.
    """

    def __init__(self) -> None:
        # (route, method, status) -> [count, sum of seconds, count per bucket (+Inf last)]
        self.series: dict[tuple[str, str, int], list[float]] = {}
        # route -> its decisions; never replaced, so a reload's limiter counts on.
        self.decisions: dict[str, DecisionCounts] = {}
        self.redis_latency = [0.0] * (len(REDIS_BUCKETS) + 2)  # buckets, then the sum

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        series = self.series.get((route, method, status))
        if series is None:
            series = self._new_series(route, method, status)
        series[0] += 1
        series[1] += seconds
        series[2 + bisect_left(REQUEST_BUCKETS, seconds)] += 1

    def _new_series(self, route: str, method: str, status: int) -> list[float]:
        # Methods outside the known few share one label: the label set stays bounded.
        key = (route, method if method in KNOWN_METHODS else "OTHER", status)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = [0.0] * (len(REQUEST_BUCKETS) + 3)
        return series

    def observe_redis(self, seconds: float) -> None:
        self.redis_latency[bisect_left(REDIS_BUCKETS, seconds)] += 1
        self.redis_latency[-1] += seconds

    def decision_counts(self, route: str) -> DecisionCounts:
        """Where ``route``'s decisions are counted: the same object for the process's life."""
        counts = self.decisions.get(route)
        if counts is None:
            counts = self.decisions[route] = DecisionCounts()
        return counts

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "gatehouse_http_requests",
            "HTTP requests by route template, method and status.",
            labels=("route", "method", "status"),
        )
        by_route: dict[str, list[float]] = {}
        for (route, method, status), series in sorted(self.series.items()):
            requests.add_metric((route, method, str(status)), series[0])
            total = by_route.setdefault(route, [0.0] * (len(REQUEST_BUCKETS) + 2))
            for index, value in enumerate(series[2:]):
                total[index] += value
            total[-1] += series[1]
        yield requests
        durations = HistogramMetricFamily(
            "gatehouse_http_request_duration_seconds",
            "Time from request to the end of the response, by route template.",
            labels=("route",),
        )
        for route, histogram in sorted(by_route.items()):
            durations.add_metric((route,), _cumulative(REQUEST_BUCKETS, histogram), histogram[-1])
        yield durations
        redis = HistogramMetricFamily(
            "gatehouse_redis_latency_seconds", "Round-trip time of the rate-limit script."
        )
        redis.add_metric((), _cumulative(REDIS_BUCKETS, self.redis_latency), self.redis_latency[-1])
        yield redis
        decisions = CounterMetricFamily(
            "gatehouse_ratelimit_decisions",
            "Rate-limit checks by route template and outcome "
            "(allowed, denied, unavailable, shadow_denied: a shadow limit that would refuse).",
            labels=("route", "decision"),
        )
        for route, counts in sorted(self.decisions.items()):
            for decision in DECISIONS:
                count = getattr(counts, decision)
                if count:  # a series appears with its route's first such decision
                    decisions.add_metric((route, decision), count)
        yield decisions


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.hot_path = HotPathStats()
        self.registry.register(self.hot_path)
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
        self.ratelimit_peers = Gauge(
            "gatehouse_ratelimit_peers",
            "Processes sharing the rate limit, as last learned through Redis (APP_REPLICAS "
            "until the first heartbeat answers): the open-mode fallback divides by it.",
            registry=self.registry,
        )
        self.ratelimit_peer_heartbeat_errors = Counter(
            "gatehouse_ratelimit_peer_heartbeat_errors",
            "Peer-registry heartbeats Redis failed to answer (the count learned before holds).",
            registry=self.registry,
        )
        self.cors_rejections = Counter(
            "gatehouse_cors_rejections",
            "Requests CORS refused, by reason (origin_not_listed: a preflight or a request "
            "from an origin off the allowlist; method_not_allowed, header_not_allowed, "
            "private_network_not_allowed: a preflight asking for more than the policy allows).",
            ("reason",),
            registry=self.registry,
        )
        # Every reason's series from the start, at 0: a rate over them is never empty.
        for reason in CORS_REFUSAL_REASONS:
            self.cors_rejections.labels(reason)
        self.cross_site = Counter(
            "gatehouse_cross_site_requests",
            "Unsafe requests from a page on another site, by action (refused, shadowed).",
            ("action",),
            registry=self.registry,
        )
        self.request_refusals = Counter(
            "gatehouse_request_refusals",
            "Requests refused for their size or pace, by reason (too_large, timeout, "
            "bad_length: the body; header_too_large, header_timeout, idle, bad_request: "
            "the head, refused by the server before the app).",
            ("reason",),
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "gatehouse_config_reloads",
            "Reloads of the mounted ConfigMap, by result (applied, rejected).",
            ("result",),
            registry=self.registry,
        )
