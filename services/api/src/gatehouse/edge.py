"""The request's path through Gatehouse, in one place.

    uvicorn --proxy-headers      client IP and scheme from X-Forwarded-* of trusted peers only
    SecurityHeadersMiddleware    security headers on every response, errors included
    RequestContextMiddleware     X-Request-ID, access log, metrics, last-resort 500, and one
                                 send wrapper for the fields the layers inside it add
    CORSMiddleware               the namespace's allowlist; preflights answered here
    TrustedHostMiddleware        Host allowlist; probe paths exempt
    HTTPSRedirectMiddleware      optional; probe paths exempt
    CrossSiteRequestMiddleware   403 for unsafe requests a page on another site made
    RateLimitMiddleware          slowapi's declarations, counted in the shared Redis
    FastAPI app                  routing, validation, the routes

Outer layers wrap everything that can answer, so a 400 from the host check, a 429,
a preflight and a 500 all carry the security headers and, for an allowed origin,
the CORS headers: a browser then reads the real status instead of a CORS error.
The FastAPI app's own 500 handler sits inside all of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI
from slowapi import Limiter
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Scope

from .metrics import Metrics
from .middleware.cors import CORSMiddleware
from .middleware.cross_site import CrossSiteRequestMiddleware
from .middleware.https_redirect import HTTPSRedirectMiddleware
from .middleware.request_context import (
    RequestContextMiddleware,
    RequestObserver,
    route_template,
)
from .middleware.security_headers import SecurityHeadersMiddleware
from .middleware.trusted_hosts import TrustedHostMiddleware
from .ratelimit.failover import FailoverStore
from .ratelimit.keys import request_key
from .ratelimit.middleware import (
    RATE_LIMIT_HEADERS,
    DecisionObserver,
    ExemptNetworks,
    RateLimitMiddleware,
)
from .ratelimit.policy import RouteTable, build_route_table
from .settings import Settings

# The kubelet probes and Prometheus scrapes by pod IP: no Host allowlist can name it,
# and neither follows a redirect to https.
INFRASTRUCTURE_PATHS = ("/healthz", "/readyz", "/metrics")
DOCS_PATHS = ("/docs", "/redoc", "/docs/oauth2-redirect")
EXPOSED_HEADERS = (*RATE_LIMIT_HEADERS, "X-Request-ID")
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass
class Edge:
    """The composed edge and the layers a configuration reload reaches into."""

    app: ASGIApp
    cors: CORSMiddleware
    cross_site: CrossSiteRequestMiddleware
    rate_limit: RateLimitMiddleware
    routes: list[BaseRoute]
    limiter: Limiter

    def apply(self, settings: Settings) -> None:
        """Reloaded settings: the limit policy is built first, so a bad one changes nothing."""
        table, exempt = rate_limit_policy(self.routes, self.limiter, settings)
        self.rate_limit.replace_policy(table, exempt)
        self.cors.replace_origins(settings.allowed_origins)
        self.cross_site.replace_origins(settings.allowed_origins)
        self.cross_site.policy = settings.cross_site_policy


def rate_limit_policy(
    routes: list[BaseRoute], limiter: Limiter, settings: Settings
) -> tuple[RouteTable, ExemptNetworks]:
    """The route table and exempt networks the settings describe (ValueError if unusable)."""
    table = build_route_table(
        routes,
        limiter,
        settings.rate_limit_default,
        request_key,
        # The search limit is a setting of its own; the code's declaration is its default.
        overrides={"/search": settings.rate_limit_search, **settings.rate_limit_routes},
        shadow_routes=settings.rate_limit_shadow_routes,
        shadow_all=settings.rate_limit_mode == "shadow",
    )
    return table, ExemptNetworks(settings.rate_limit_exempt_cidrs)


def build_edge(
    app: FastAPI,
    limiter: Limiter,
    settings: Settings,
    store: FailoverStore,
    metrics: Metrics,
) -> Edge:
    """Wrap ``app`` in the edge, innermost first."""
    table, exempt = rate_limit_policy(app.routes, limiter, settings)
    rate_limit = RateLimitMiddleware(
        app, table, store, on_decision=_decision_counter(metrics), exempt=exempt
    )
    cross_site = CrossSiteRequestMiddleware(
        rate_limit,
        allowed_origins=settings.allowed_origins,
        policy=settings.cross_site_policy,
        on_cross_site=lambda action: metrics.cross_site.labels(action).inc(),
    )
    edge: ASGIApp = cross_site
    if settings.https_redirect:
        edge = HTTPSRedirectMiddleware(edge, exempt_paths=INFRASTRUCTURE_PATHS)
    if "*" not in settings.trusted_hosts:
        edge = TrustedHostMiddleware(
            edge, allowed_hosts=settings.trusted_hosts, exempt_paths=INFRASTRUCTURE_PATHS
        )
    cors = CORSMiddleware(
        edge,
        allow_origins=settings.allowed_origins,
        allow_methods=settings.cors_allow_methods,
        allow_headers=settings.cors_allow_headers,
        allow_credentials=settings.allow_credentials,
        expose_headers=EXPOSED_HEADERS,
        max_age=settings.cors_max_age,
        on_refused=metrics.cors_rejections.inc,
    )
    edge = RequestContextMiddleware(
        cors,
        observer=_request_observer(metrics, settings.access_log),
        logger=logging.getLogger("gatehouse.access"),
    )
    edge = SecurityHeadersMiddleware(
        edge,
        referrer_policy=settings.referrer_policy,
        hsts_max_age=settings.hsts_max_age,
        docs_paths=DOCS_PATHS if settings.docs_enabled else (),
    )
    return Edge(edge, cors, cross_site, rate_limit, app.routes, limiter)


def _decision_counter(metrics: Metrics) -> DecisionObserver:
    return metrics.hot_path.count_decision


def _request_observer(metrics: Metrics, access_log: bool) -> RequestObserver:
    logger = logging.getLogger("gatehouse.access")
    observe_request = metrics.hot_path.observe_request

    def observe(scope: Scope, status: int, duration: float, request_id: str) -> None:
        route = route_template(scope)
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
        observe_request(route, method, status, duration)
        if access_log:
            client = scope.get("client")
            logger.info(
                "request",
                extra={
                    "fields": {
                        "client_ip": client[0] if client else None,
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(duration * 1000, 3),
                        "request_id": request_id,
                    }
                },
            )

    return observe
