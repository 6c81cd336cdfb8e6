"""The request's path through Gatehouse, in one place.

    uvicorn --proxy-headers      client IP and scheme from X-Forwarded-* of trusted peers only
    SecurityHeadersMiddleware    security headers on every response, errors included
    RequestContextMiddleware     X-Request-ID, access log, metrics, last-resort 500, and one
                                 send wrapper for the fields the layers inside it add
    SingleHeaderMiddleware       400 for a repeated Host or Origin, before any layer reads one
    CORSMiddleware               the namespace's allowlist; preflights answered here
    RequestBodyMiddleware        413 for a body over its route's limit, 408 for a slow one
    TrustedHostMiddleware        Host allowlist; infrastructure paths exempt
    HTTPSRedirectMiddleware      optional; infrastructure paths exempt
    CrossSiteRequestMiddleware   403 for unsafe requests a page on another site made
    RateLimitMiddleware          slowapi's declarations, counted in the shared Redis
    FastAPI app                  routing, validation, the routes

Outer layers wrap everything that can answer, so a 400 from the host check, a 429,
a preflight and a 500 all carry the security headers and, for an allowed origin,
the CORS headers: a browser then reads the real status instead of a CORS error.
The FastAPI app's own 500 handler sits inside all of them. Before any of this, the
server's protocol (``server_protocol``) bounds the request head's size (431) and time
(408), with the same security headers on what it answers.

Every decision the layers make comes from one immutable ``EdgePolicy``, built from the
settings by a pure function. ``Edge`` serves the chain built for the current policy; a
reload builds a new policy and a new chain, then replaces the one reference: a request
runs wholly under the old policy or wholly under the new one, never a mix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from .app import Api
from .metrics import Metrics
from .middleware.cors import CORSMiddleware
from .middleware.cross_site import CrossSiteRequestMiddleware
from .middleware.https_redirect import HTTPSRedirectMiddleware
from .middleware.request_body import RequestBodyMiddleware, RouteBodyLimits
from .middleware.request_context import (
    RequestContextMiddleware,
    RequestObserver,
    route_template,
)
from .middleware.security_headers import SecurityHeadersMiddleware
from .middleware.single_headers import SingleHeaderMiddleware
from .middleware.trusted_hosts import TrustedHostMiddleware
from .ratelimit.failover import FailoverStore
from .ratelimit.keys import request_key
from .ratelimit.middleware import RATE_LIMIT_HEADERS, ExemptNetworks, RateLimitMiddleware
from .ratelimit.policy import RouteTable, build_route_table
from .settings import Settings

EXPOSED_HEADERS = (*RATE_LIMIT_HEADERS, "X-Request-ID")
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class EdgePolicy:
    """Everything the edge decides with, for one version of the settings."""

    allowed_origins: frozenset[str]
    allow_all_origins: bool
    allow_credentials: bool
    cors_allow_methods: tuple[str, ...]
    cors_allow_headers: tuple[str, ...]
    cors_max_age: int
    expose_headers: tuple[str, ...]
    trusted_hosts: tuple[str, ...]
    https_redirect: bool
    referrer_policy: str
    hsts_max_age: int
    cross_site_policy: str
    rate_limits: RouteTable
    rate_limit_exempt: ExemptNetworks
    max_body_bytes: int
    body_limits: RouteBodyLimits
    body_timeout: float
    infrastructure_paths: tuple[str, ...]
    docs_paths: tuple[str, ...]


def edge_policy(settings: Settings, api: Api) -> EdgePolicy:
    """The policy ``settings`` describe for ``api`` (ValueError when it cannot apply)."""
    table = build_route_table(
        api.app.routes,
        api.limiter,
        settings.rate_limit_default,
        request_key,
        overrides=api.setting_limits(settings),
        shadow_routes=settings.rate_limit_shadow_routes,
        shadow_all=settings.rate_limit_mode == "shadow",
    )
    try:
        body_limits = RouteBodyLimits(api.app.routes, settings.max_body_bytes_routes)
    except ValueError as error:
        raise ValueError(f"APP_MAX_BODY_BYTES_ROUTES: {error}") from None
    return EdgePolicy(
        allowed_origins=frozenset(settings.allowed_origins),
        allow_all_origins="*" in settings.allowed_origins,
        allow_credentials=settings.allow_credentials,
        cors_allow_methods=tuple(settings.cors_allow_methods),
        cors_allow_headers=tuple(settings.cors_allow_headers),
        cors_max_age=settings.cors_max_age,
        expose_headers=EXPOSED_HEADERS,
        trusted_hosts=tuple(settings.trusted_hosts),
        https_redirect=settings.https_redirect,
        referrer_policy=settings.referrer_policy,
        hsts_max_age=settings.hsts_max_age,
        cross_site_policy=settings.cross_site_policy,
        rate_limits=table,
        rate_limit_exempt=ExemptNetworks(settings.rate_limit_exempt_cidrs),
        max_body_bytes=settings.max_body_bytes,
        body_limits=body_limits,
        body_timeout=settings.body_timeout,
        infrastructure_paths=api.infrastructure_paths,
        docs_paths=api.docs_paths,
    )


def build_chain(
    api: Api, policy: EdgePolicy, store: FailoverStore, metrics: Metrics, access_log: bool
) -> ASGIApp:
    """Wrap the app in the edge for ``policy``, innermost first."""
    edge: ASGIApp = RateLimitMiddleware(
        api.app,
        policy.rate_limits,
        store,
        on_decision=metrics.hot_path.count_decision,
        exempt=policy.rate_limit_exempt,
    )
    edge = CrossSiteRequestMiddleware(
        edge,
        allowed_origins=policy.allowed_origins,
        allow_all_origins=policy.allow_all_origins,
        policy=policy.cross_site_policy,
        on_cross_site=lambda action: metrics.cross_site.labels(action).inc(),
    )
    if policy.https_redirect:
        edge = HTTPSRedirectMiddleware(edge, exempt_paths=policy.infrastructure_paths)
    if "*" not in policy.trusted_hosts:
        edge = TrustedHostMiddleware(
            edge, allowed_hosts=policy.trusted_hosts, exempt_paths=policy.infrastructure_paths
        )
    # Inside CORS: a browser reads the 413 as a 413, not as a CORS error; outside the
    # limiter: an oversized body costs no Redis round trip.
    edge = RequestBodyMiddleware(
        edge,
        max_body_bytes=policy.max_body_bytes,
        body_timeout=policy.body_timeout,
        limit_for=policy.body_limits,
        on_refused=lambda reason: metrics.request_refusals.labels(reason).inc(),
    )
    edge = CORSMiddleware(
        edge,
        allow_origins=policy.allowed_origins,
        allow_methods=policy.cors_allow_methods,
        allow_headers=policy.cors_allow_headers,
        allow_credentials=policy.allow_credentials,
        expose_headers=policy.expose_headers,
        max_age=policy.cors_max_age,
        on_refused=metrics.cors_rejections.inc,
    )
    edge = SingleHeaderMiddleware(edge)
    edge = RequestContextMiddleware(
        edge,
        observer=_request_observer(metrics, access_log),
        logger=logging.getLogger("gatehouse.access"),
    )
    return SecurityHeadersMiddleware(
        edge,
        referrer_policy=policy.referrer_policy,
        hsts_max_age=policy.hsts_max_age,
        docs_paths=policy.docs_paths,
    )


class Edge:
    """The ASGI app uvicorn serves: the chain built for the current ``EdgePolicy``."""

    def __init__(
        self, api: Api, settings: Settings, store: FailoverStore, metrics: Metrics
    ) -> None:
        self.api = api
        self.store = store
        self.metrics = metrics
        self.access_log = settings.access_log
        self.policy = edge_policy(settings, api)
        # The outermost layer of the chain, named as every layer names its inner app.
        self.app = build_chain(api, self.policy, store, metrics, self.access_log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def apply(self, settings: Settings) -> None:
        """Reloaded settings: the new policy and chain are built first, so a policy that
        cannot apply (ValueError) changes nothing; then one assignment swaps both."""
        policy = edge_policy(settings, self.api)
        chain = build_chain(self.api, policy, self.store, self.metrics, self.access_log)
        # Requests read only ``app``: this assignment is the switch.
        self.policy, self.app = policy, chain


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
