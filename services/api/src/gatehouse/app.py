"""The FastAPI application: routes and their declared limits. The edge is in ``edge``.

The app knows nothing of the rate-limit store or the edge: readiness and shutdown come
in as callables, and it describes itself to the edge (``Api``): which routes are for
infrastructure, where the docs are, which limits follow a setting.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, field_validator
from slowapi import Limiter

from .metrics import Metrics
from .ratelimit.declarations import DeclaringLimiter
from .ratelimit.keys import request_key
from .settings import Settings

MAX_ITEMS = 1000  # a demo store: bounded, so no client can grow the process
SEARCH_PATH = "/search"
# Routes the kubelet and Prometheus call by pod IP: the edge exempts them from the Host
# allowlist and the https redirect.
INFRASTRUCTURE_TAG = "infrastructure"

# (ready, body): what /readyz answers; the service decides from its storage's state.
Readiness = Callable[[], Awaitable[tuple[bool, dict[str, str | int]]]]
Job = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Api:
    """The FastAPI app and what the edge must know of it."""

    app: FastAPI
    limiter: Limiter
    infrastructure_paths: tuple[str, ...]
    docs_paths: tuple[str, ...]

    @staticmethod
    def setting_limits(settings: Settings) -> dict[str, str]:
        """Route limits that come from settings (reloadable), over the code's declarations."""
        # The search limit is a setting of its own; its declaration below is its default.
        return {SEARCH_PATH: settings.rate_limit_search, **settings.rate_limit_routes}


class ItemIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    quantity: int = Field(default=1, ge=0, le=1_000_000)

    @field_validator("name")
    @classmethod
    def _encodable(cls, name: str) -> str:
        # JSON may carry a lone surrogate ("\\ud800"); it could never be sent back.
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("not valid Unicode text") from None
        return name


class Item(ItemIn):
    id: int


def create_limiter(settings: Settings) -> DeclaringLimiter:
    # slowapi is how routes declare their limits; the edge enforces what is declared
    # here (``gatehouse.ratelimit``), slowapi's own check never runs.
    return DeclaringLimiter(key_func=request_key, default_limit=settings.rate_limit_default)


def create_api(
    settings: Settings,
    metrics: Metrics,
    readiness: Readiness,
    background: list[Job] | None = None,
    on_shutdown: list[Job] | None = None,
) -> Api:
    """The routes. ``background`` jobs run for the app's lifetime (config watchers);
    ``on_shutdown`` jobs run once after they stop (closing the Redis connection)."""
    limiter = create_limiter(settings)
    jobs = background if background is not None else []
    closers = on_shutdown if on_shutdown is not None else []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(job()) for job in jobs]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for close in closers:
            await close()

    app = FastAPI(
        title="Gatehouse API",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    app.state.limiter = limiter
    items: dict[int, Item] = {}
    next_id = itertools.count(1)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the input back, which fails on NaN and lone
        # surrogates (a 500) and reflects whatever a client sent; say where and why only.
        errors = [
            {
                "loc": [str(part) for part in error["loc"]],
                "msg": error["msg"],
                "type": error["type"],
            }
            for error in exc.errors()
        ]
        return JSONResponse(
            {
                "type": "about:blank",
                "title": "Unprocessable Content",
                "status": 422,
                "errors": errors,
            },
            status_code=422,
            media_type="application/problem+json",
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs nothing here and re-raises after sending; the request
        # context middleware logs the exception with the request id.
        return JSONResponse(
            {"type": "about:blank", "title": "Internal Server Error", "status": 500},
            status_code=500,
            media_type="application/problem+json",
        )

    @app.get(SEARCH_PATH)
    @limiter.limit(settings.rate_limit_search)
    async def search(
        request: Request, q: Annotated[str, Query(min_length=1, max_length=200)]
    ) -> dict[str, Any]:
        matches = [item for item in items.values() if q.lower() in item.name.lower()]
        return {"query": q, "results": [item.model_dump() for item in matches[:20]]}

    @app.post("/items", status_code=201)
    async def create_item(request: Request, item: ItemIn) -> Item:
        if len(items) >= MAX_ITEMS:
            del items[next(iter(items))]  # the oldest goes; a demo store stays bounded
        created = Item(id=next(next_id), **item.model_dump())
        items[created.id] = created
        return created

    @app.get("/items/{item_id}")
    async def read_item(request: Request, item_id: int) -> Item:
        if item_id not in items:
            raise HTTPException(status_code=404, detail="no such item")
        return items[item_id]

    @app.put("/items/{item_id}")
    async def replace_item(request: Request, item_id: int, item: ItemIn) -> Item:
        if item_id not in items:
            raise HTTPException(status_code=404, detail="no such item")
        items[item_id] = Item(id=item_id, **item.model_dump())
        return items[item_id]

    @app.delete("/items/{item_id}", status_code=204)
    async def delete_item(request: Request, item_id: int) -> Response:
        if items.pop(item_id, None) is None:
            raise HTTPException(status_code=404, detail="no such item")
        return Response(status_code=204)

    # Declared after the API routes: the router tries routes in order, and the API's
    # take thousands of requests for each probe or scrape. With a management port
    # (APP_METRICS_PORT) they are served there instead (``gatehouse.management``).
    if settings.metrics_port is None:

        @app.get("/healthz", tags=[INFRASTRUCTURE_TAG])
        @limiter.exempt
        async def healthz(request: Request) -> dict[str, str]:
            """Liveness: the process answers. Touches nothing else, Redis least of all."""
            return {"status": "ok"}

        @app.get("/readyz", tags=[INFRASTRUCTURE_TAG])
        @limiter.exempt
        async def readyz(request: Request) -> JSONResponse:
            """Readiness, with the rate-limit storage's state (``readiness`` decides)."""
            ready, body = await readiness()
            return JSONResponse(body, status_code=200 if ready else 503)

        @app.get("/metrics", include_in_schema=False, tags=[INFRASTRUCTURE_TAG])
        @limiter.exempt
        async def prometheus_metrics(request: Request) -> Response:
            return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        """The client as this service sees it, after proxy trust was applied."""
        client = request.scope.get("client")
        return {
            "client_ip": client[0] if client else None,
            "scheme": request.url.scheme,
            "host": request.headers.get("host"),
            "request_id": request.scope.get("state", {}).get("request_id"),
        }

    if settings.test_routes_enabled:

        @app.get("/test/error")
        async def failing_route(request: Request) -> None:
            raise RuntimeError("deliberate failure for tests (APP_TEST_ROUTES_ENABLED)")

    docs = (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    return Api(
        app=app,
        limiter=limiter,
        infrastructure_paths=tuple(
            route.path
            for route in app.routes
            if isinstance(route, APIRoute) and INFRASTRUCTURE_TAG in route.tags
        ),
        docs_paths=tuple(path for path in docs if path) if settings.docs_enabled else (),
    )
