"""The request's path through Gatehouse, in one place: ``Edge.__call__``.

    uvicorn --proxy-headers      client IP and scheme from X-Forwarded-* of trusted peers only
    RequestHead                  the header fields every concern reads, in one pass
    request_context              X-Request-ID; at the end, access log and metrics
    single_headers               400 for a repeated Host or Origin, before any concern reads one
    cors                         preflights answered; the allowlist's fields on every answer
    request_body                 413 for a body over its route's limit, 408 for a slow one
    trusted_hosts                Host allowlist; infrastructure paths exempt
    https_redirect               optional; infrastructure paths exempt
    cross_site                   403 for unsafe requests a page on another site made
    ratelimit.limiter            slowapi's declarations, counted in the shared Redis
    FastAPI app                  routing, validation, the routes
    security_headers             on the way out: the block for the answer's content type

Each concern lives in its module as plain decisions; ``Edge`` calls them in this order
and writes every answer through one ``send`` that adds the security block, the request
id, the CORS fields and the rate-limit fields. So a 400 from the host check, a 429, a
preflight and a 500 all carry the security headers and, for an allowed origin, the CORS
headers: a browser then reads the real status instead of a CORS error. One layer, not
one per concern: each ASGI layer costs a coroutine frame per request and each send
wrapper another per message (``make bench-profile``), and the whole edge must cost
little more than the headers it writes (``make bench``).

Before any of this, the server's protocol (``server_protocol``) bounds the request
head's size (431) and time (408), with the same security headers on what it answers.

Every decision comes from one immutable ``EdgePolicy``, built from the settings by a
pure function, and the concerns built from it (``Concerns``). A reload builds new ones,
then replaces the one reference: a request reads it once, so it runs wholly under the
old policy or wholly under the new one, never a mix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass

from starlette.types import Message, Receive, Scope, Send

from .app import Api
from .metrics import KNOWN_METHODS, Metrics
from .middleware.cors import REFUSAL_SCOPE_KEY, CorsPolicy, CorsRefusal
from .middleware.cross_site import REFUSED_BODY as CROSS_SITE_REFUSED_BODY
from .middleware.cross_site import CrossSitePolicy
from .middleware.https_redirect import HTTPSRedirect
from .middleware.problem import PROBLEM_JSON
from .middleware.request_body import CLOSE, BodyLimits, RouteBodyLimits
from .middleware.request_context import (
    INTERNAL_ERROR_BODY,
    LIMITED_ROUTE_KEY,
    REQUEST_ID_HEADER,
    UNMATCHED_ROUTE,
    RequestIds,
    RequestObserver,
    route_template,
)
from .middleware.request_head import RequestHead
from .middleware.security_headers import HeaderBlocks
from .middleware.single_headers import AMBIGUOUS_BODY, repeats_a_single_header
from .middleware.trusted_hosts import INVALID_HOST_BODY, HostAllowlist
from .ratelimit.failover import FailoverStore
from .ratelimit.identity import IdentityResolver
from .ratelimit.keys import request_key
from .ratelimit.limiter import RATE_LIMIT_HEADERS, ExemptNetworks, RateLimiter, Refusal
from .ratelimit.policy import RouteTable, build_route_table
from .settings import Settings

Fields = list[tuple[bytes, bytes]]
EXPOSED_HEADERS = (*RATE_LIMIT_HEADERS, "X-Request-ID")


@dataclass(frozen=True)
class EdgePolicy:
    """Everything the edge decides with, for one version of the settings."""

    allowed_origins: frozenset[str]
    allow_all_origins: bool
    allow_credentials: bool
    cors_allow_methods: tuple[str, ...]
    cors_allow_headers: tuple[str, ...]
    cors_max_age: int
    cors_debug_origins: tuple[str, ...]
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
        default_algorithm=settings.rate_limit_algorithm,
        headers_draft=settings.rate_limit_headers_draft,
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
        cors_debug_origins=tuple(settings.cors_debug_origins),
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


@dataclass(frozen=True)
class Concerns:
    """The edge's concerns, built for one ``EdgePolicy``: what a request reads once."""

    policy: EdgePolicy
    headers: HeaderBlocks
    cors: CorsPolicy
    body: BodyLimits
    hosts: HostAllowlist
    redirect: HTTPSRedirect | None
    cross_site: CrossSitePolicy
    limiter: RateLimiter


def build_concerns(
    policy: EdgePolicy,
    store: FailoverStore,
    metrics: Metrics,
    identity: IdentityResolver | None = None,
) -> Concerns:
    """The concerns ``policy`` describes, counting into ``metrics``; the limiter counts
    clients by ``identity`` (kept across reloads: it holds fetched keys and caches)."""
    return Concerns(
        policy=policy,
        headers=HeaderBlocks(
            referrer_policy=policy.referrer_policy,
            hsts_max_age=policy.hsts_max_age,
            docs_paths=policy.docs_paths,
        ),
        cors=CorsPolicy(
            allow_origins=policy.allowed_origins,
            allow_methods=policy.cors_allow_methods,
            allow_headers=policy.cors_allow_headers,
            allow_credentials=policy.allow_credentials,
            expose_headers=policy.expose_headers,
            max_age=policy.cors_max_age,
            on_refused=lambda reason: metrics.cors_rejections.labels(reason).inc(),
            debug_origins=policy.cors_debug_origins,
        ),
        body=BodyLimits(
            max_body_bytes=policy.max_body_bytes,
            body_timeout=policy.body_timeout,
            limit_for=policy.body_limits,
            on_refused=lambda reason: metrics.request_refusals.labels(reason).inc(),
        ),
        hosts=HostAllowlist(policy.trusted_hosts, exempt_paths=policy.infrastructure_paths),
        redirect=HTTPSRedirect(policy.infrastructure_paths) if policy.https_redirect else None,
        cross_site=CrossSitePolicy(
            allowed_origins=policy.allowed_origins,
            allow_all_origins=policy.allow_all_origins,
            policy=policy.cross_site_policy,
            on_cross_site=lambda action: metrics.cross_site.labels(action).inc(),
        ),
        limiter=RateLimiter(
            policy.rate_limits,
            store,
            decision_counts=metrics.hot_path.decision_counts,
            exempt=policy.rate_limit_exempt,
            identity=identity,
        ),
    )


class Edge:
    """The ASGI app uvicorn serves: the FastAPI app behind the concerns of the current policy."""

    def __init__(
        self,
        api: Api,
        settings: Settings,
        store: FailoverStore,
        metrics: Metrics,
        identity: IdentityResolver | None = None,
    ) -> None:
        self.api = api
        self.app = api.app  # the app behind the edge, named as ASGI layers name it
        self.store = store
        self.metrics = metrics
        self.request_ids = RequestIds()
        self.observe: RequestObserver = _request_observer(metrics, settings.access_log)
        self.logger = logging.getLogger("gatehouse.access")
        self.identity = identity
        self.concerns = build_concerns(edge_policy(settings, api), store, metrics, identity)

    @property
    def policy(self) -> EdgePolicy:
        return self.concerns.policy

    def apply(self, settings: Settings) -> None:
        """Reloaded settings: the new concerns are built first, so a policy that cannot
        apply (ValueError) changes nothing; then one assignment swaps them."""
        concerns = build_concerns(
            edge_policy(settings, self.api), self.store, self.metrics, self.identity
        )
        self.concerns = concerns  # requests read this once: the switch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: the app's start-up and shutdown
            await self.app(scope, receive, send)
            return
        concerns = self.concerns  # read once: the whole request runs under one policy
        started = time.perf_counter()
        head = RequestHead(scope["headers"])
        raw_id = self.request_ids.take(head.request_id)
        request_id = raw_id.decode("latin-1")
        scope.setdefault("state", {})["request_id"] = request_id
        # The fields every answer gets besides the security block; concerns add theirs.
        fields: Fields = [(REQUEST_ID_HEADER, raw_id)]
        blocks = concerns.headers
        path: str = scope["path"]
        https = scope.get("scheme") == "https"
        block = blocks.api_https if https else blocks.api
        status = 500
        response_started = False

        # Not a coroutine: it returns the server's own awaitable, which the app awaits
        # as it would ours, so a message costs no coroutine frame here.
        def send_with_fields(message: Message) -> Awaitable[None]:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                own = message.get("headers", ())
                message["headers"] = blocks.apply(own, block, path, https, fields)
            return send(message)

        try:
            if repeats_a_single_header(head):
                await _answer(send_with_fields, 400, AMBIGUOUS_BODY)
                return
            if concerns.cors.is_preflight(scope, head):
                preflight = concerns.cors.preflight(scope, head.origin)
                await preflight(scope, receive, send_with_fields)
                return
            fields += concerns.cors.cors_fields(head.origin, scope)
            # An oversized body is refused here: inside CORS, so a browser reads the 413
            # as a 413; before the limiter, so it costs no Redis round trip.
            body_limit = -1
            if head.has_body:
                body_limit = concerns.body.limit(scope)
                refused = concerns.body.refusal(head, body_limit)
                if refused is not None:
                    await _answer(send_with_fields, *refused, CLOSE)
                    return
            if concerns.hosts.refuses(path, head.host):
                await _answer(send_with_fields, 400, INVALID_HOST_BODY)
                return
            if concerns.redirect is not None:
                redirect = concerns.redirect.redirect(scope)
                if redirect is not None:
                    await redirect(scope, receive, send_with_fields)
                    return
            if concerns.cross_site.refuses(scope, head):
                await _answer(send_with_fields, 403, CROSS_SITE_REFUSED_BODY)
                return
            limited = await concerns.limiter.check(scope, head.authorization)
            if limited is not None:
                if isinstance(limited, Refusal):
                    await _answer(send_with_fields, limited.status, limited.body, limited.fields)
                    return
                fields += limited
            if body_limit < 0:
                await self.app(scope, receive, send_with_fields)
            else:  # the body is counted and timed as the app reads it
                await concerns.body.serve(self.app, scope, receive, send_with_fields, body_limit)
        except Exception:
            self.logger.exception(
                "unhandled exception", extra={"fields": {"request_id": request_id}}
            )
            if not response_started:
                await _answer(send_with_fields, 500, INTERNAL_ERROR_BODY)
        finally:
            self.observe(scope, status, time.perf_counter() - started, request_id)


async def _answer(
    send: Send, status: int, body: bytes, fields: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A problem+json answer from the edge itself (the app never runs)."""
    headers = [PROBLEM_JSON, (b"content-length", b"%d" % len(body)), *fields]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _request_observer(metrics: Metrics, access_log: bool) -> RequestObserver:
    logger = logging.getLogger("gatehouse.access")
    observe_request = metrics.hot_path.observe_request

    def observe(scope: Scope, status: int, duration: float, request_id: str) -> None:
        # ``route_template`` inline: this runs once per request.
        template = getattr(scope.get("route"), "path", None)
        if template is None:
            template = scope.get(LIMITED_ROUTE_KEY, UNMATCHED_ROUTE)
        observe_request(template, scope["method"], status, duration)
        if access_log:
            client = scope.get("client")
            fields: dict[str, object] = {
                "client_ip": client[0] if client else None,
                "method": scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER",
                "route": route_template(scope),
                "status": status,
                "duration_ms": round(duration * 1000, 3),
                "request_id": request_id,
            }
            refusal: CorsRefusal | None = scope.get(REFUSAL_SCOPE_KEY)
            if refusal is not None:  # the reason, and what was refused (printable already)
                fields["cors_refused"] = refusal.reason
                fields[refusal.field] = refusal.value
            logger.info("request", extra={"fields": fields})

    return observe
