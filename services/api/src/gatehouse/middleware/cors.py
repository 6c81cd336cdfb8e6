from __future__ import annotations

from collections.abc import Callable, Collection

from starlette.middleware.cors import CORSMiddleware as StarletteCORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from .response_fields import add_response_fields

VARY_ORIGIN = ((b"vary", b"Origin"),)


class CORSMiddleware(StarletteCORSMiddleware):
    """Starlette's CORS middleware with a count of refused origins.

    Starlette answers preflights, mirrors an allowed origin with credentials and adds
    ``Vary: Origin`` to every response. Gatehouse adds a count of refused origins
    (``on_refused``) and a fast path
    for requests without ``Origin`` (same-origin GETs, servers, probes): they only
    need ``Vary: Origin``, which Starlette adds by parsing the request and response
    headers into objects (a large share of the edge's cost, ``make bench-profile``).
    """

    def __init__(
        self,
        app: ASGIApp,
        allow_origins: Collection[str],
        allow_methods: Collection[str],
        allow_headers: Collection[str],
        expose_headers: Collection[str],
        max_age: int,
        allow_credentials: bool = True,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            app,
            allow_origins=frozenset(allow_origins),
            allow_methods=allow_methods,
            allow_headers=allow_headers,
            allow_credentials=allow_credentials,
            expose_headers=expose_headers,
            max_age=max_age,
        )
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, _value in scope["headers"]:
            if name == b"origin":
                await super().__call__(scope, receive, send)
                return
        # A second Vary field is the same as a comma-joined one (RFC 9110, 5.3).
        await self.app(scope, receive, add_response_fields(scope, send, VARY_ORIGIN))

    def is_allowed_origin(self, origin: str) -> bool:
        allowed = self.allow_all_origins or origin in self.allow_origins
        if not allowed and self.on_refused is not None:
            self.on_refused()
        return allowed
