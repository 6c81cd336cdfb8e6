"""CORS for the namespace's allowlist: the fields of an answer, and preflights.

Preflights are Starlette's (``preflight_response``: origin, method and requested headers
checked, 200 or 400 with the reason); the edge answers them before any other concern.
Every other answer gets ``cors_fields``: for an allowed origin, the origin mirrored
(never ``*`` with credentials), credentials, the exposed headers and ``Vary: Origin``;
for a request without ``Origin`` or from a refused one, ``Vary: Origin`` alone, so a
cache never serves one origin's answer to another. Refused origins are counted.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware as StarletteCORSMiddleware
from starlette.responses import Response
from starlette.types import Scope

from .request_head import RequestHead

Fields = list[tuple[bytes, bytes]]
VARY_ORIGIN = (b"vary", b"Origin")


class _Preflights(StarletteCORSMiddleware):
    """Starlette's preflight answers, with refused origins counted."""

    on_refused: Callable[[], None] | None = None

    def is_allowed_origin(self, origin: str) -> bool:
        allowed = super().is_allowed_origin(origin)
        if not allowed and self.on_refused is not None:
            self.on_refused()
        return allowed


class CorsPolicy:
    def __init__(
        self,
        allow_origins: Collection[str],
        allow_methods: Collection[str],
        allow_headers: Collection[str],
        expose_headers: Collection[str],
        max_age: int,
        allow_credentials: bool = True,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self.preflights = _Preflights(
            None,  # type: ignore[arg-type]  # only its preflight answers are used
            allow_origins=frozenset(allow_origins),
            allow_methods=allow_methods,
            allow_headers=allow_headers,
            allow_credentials=allow_credentials,
            expose_headers=expose_headers,
            max_age=max_age,
        )
        self.preflights.on_refused = on_refused
        self.on_refused = on_refused
        self.allow_all = "*" in allow_origins
        self.allowed = frozenset(origin.encode("latin-1") for origin in allow_origins)
        # With credentials a browser refuses ``*``: the origin is mirrored instead.
        self.mirror = not self.allow_all or allow_credentials
        allowed_tail: Fields = []
        if allow_credentials:
            allowed_tail.append((b"access-control-allow-credentials", b"true"))
        if expose_headers:
            allowed_tail.append(
                (b"access-control-expose-headers", ", ".join(expose_headers).encode("latin-1"))
            )
        allowed_tail.append(VARY_ORIGIN)
        self.allowed_tail = allowed_tail
        self.any_origin_fields: Fields = [(b"access-control-allow-origin", b"*"), *allowed_tail]
        self.vary_only: Fields = [VARY_ORIGIN]

    @staticmethod
    def is_preflight(scope: Scope, head: RequestHead) -> bool:
        return (
            scope["method"] == "OPTIONS"
            and head.origin is not None
            and head.cors_request_method is not None
        )

    def preflight(self, scope: Scope) -> Response:
        return self.preflights.preflight_response(request_headers=Headers(scope=scope))

    def cors_fields(self, origin: bytes | None) -> Fields:
        """The CORS fields of an answer to a request with this ``Origin`` (None: none)."""
        if origin is None:
            return self.vary_only
        if self.allow_all or origin in self.allowed:
            if self.mirror:
                return [(b"access-control-allow-origin", origin), *self.allowed_tail]
            return self.any_origin_fields
        if self.on_refused is not None:
            self.on_refused()
        return self.vary_only
