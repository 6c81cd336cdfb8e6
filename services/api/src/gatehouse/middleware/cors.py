"""CORS for the namespace's allowlist: the fields of an answer, and preflights.

Preflights are Starlette's (``preflight_response``: origin, method and requested headers
checked, 200 or 400 with the reason); the edge answers them before any other concern.
Every other answer gets ``cors_fields``: for an allowed origin, the origin mirrored
(never ``*`` with credentials), credentials, the exposed headers and ``Vary: Origin``;
for a request without ``Origin`` or from a refused one, ``Vary: Origin`` alone, so a
cache never serves one origin's answer to another.

A refusal is named by one of ``REFUSAL_REASONS`` (a fixed vocabulary, so a metric label
stays bounded), given to ``on_refused`` and put in the request's scope as a
``CorsRefusal`` for the access log; the method, header or origin it concerns goes only
there, escaped and truncated (``printable``). Only a refusal pays for this: an allowed
origin's fields are built once, here, and handed out as they are.

Origins in ``debug_origins`` (each also allowed) get ``Gatehouse-CORS-Debug``, saying
what the policy decided and allows, and may read it (``Access-Control-Expose-Headers``).
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
DEBUG_HEADER = "Gatehouse-CORS-Debug"
DEBUG_FIELD = DEBUG_HEADER.lower().encode("latin-1")

# Why CORS refused, in the order a preflight is checked (the first failing one is named).
ORIGIN_NOT_LISTED = "origin_not_listed"
METHOD_NOT_ALLOWED = "method_not_allowed"
HEADER_NOT_ALLOWED = "header_not_allowed"
PRIVATE_NETWORK_NOT_ALLOWED = "private_network_not_allowed"
REFUSAL_REASONS = (
    ORIGIN_NOT_LISTED,
    METHOD_NOT_ALLOWED,
    HEADER_NOT_ALLOWED,
    PRIVATE_NETWORK_NOT_ALLOWED,
)
# Where the edge leaves a request's refusal for its access line.
REFUSAL_SCOPE_KEY = "gatehouse.cors_refusal"

# What a request sent is shown as, at most: an origin is at most about 270 characters
# (scheme, a 253-character host, a port); a method or a header name far less.
MAX_SHOWN = 128
# Shown as they are: an HTTP token's characters, and an origin's ``:/[]``. Everything
# else (controls, quotes, backslash, spaces, non-ASCII) is written as ``\\xNN``.
_SHOWN_AS_IS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz:/[]"
)


def printable(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` a client sent, safe in a log line or a header value: ASCII, no controls,
    no quotes or separators, at most ``limit`` characters of it (``...`` when cut)."""
    shown = "".join(c if c in _SHOWN_AS_IS else f"\\x{ord(c):02x}" for c in text[:limit])
    return shown + "..." if len(text) > limit else shown


class CorsRefusal:
    """One refused request: the reason, and the method, header or origin it concerns."""

    __slots__ = ("field", "reason", "value")

    def __init__(self, reason: str, field: str, value: str) -> None:
        self.reason = reason
        # The access log's name for what was refused (``cors_refused_method``...).
        self.field = field
        self.value = printable(value)

    def describe(self) -> str:
        """The refusal as ``Gatehouse-CORS-Debug`` starts it."""
        return f"refused={self.reason}; {self.field.removeprefix('cors_refused_')}={self.value}"


class CorsPolicy:
    def __init__(
        self,
        allow_origins: Collection[str],
        allow_methods: Collection[str],
        allow_headers: Collection[str],
        expose_headers: Collection[str],
        max_age: int,
        allow_credentials: bool = True,
        on_refused: Callable[[str], None] | None = None,
        debug_origins: Collection[str] = (),
    ) -> None:
        self.preflights = StarletteCORSMiddleware(
            None,  # type: ignore[arg-type]  # only its preflight answers are used
            allow_origins=frozenset(allow_origins),
            allow_methods=allow_methods,
            allow_headers=allow_headers,
            allow_credentials=allow_credentials,
            expose_headers=expose_headers,
            max_age=max_age,
        )
        self.on_refused = on_refused
        self.allow_all = "*" in allow_origins
        # With credentials a browser refuses ``*``: the origin is mirrored instead.
        self.mirror = not self.allow_all or allow_credentials
        self.vary_only: Fields = [VARY_ORIGIN]
        self.allowed_tail = self._tail(allow_credentials, expose_headers)
        self.any_origin_fields: Fields = [
            (b"access-control-allow-origin", b"*"),
            *self.allowed_tail,
        ]

        # What the policy allows, as a preflight answers it, for the debug header.
        preflight = self.preflights.preflight_headers
        self.debug_allows = "; ".join(
            (
                f"methods={preflight['Access-Control-Allow-Methods']}",
                f"headers={preflight.get('Access-Control-Allow-Headers', '*')}",
                f"credentials={'true' if allow_credentials else 'false'}",
                f"max-age={max_age}",
            )
        )
        debug_tail = self._tail(allow_credentials, (*expose_headers, DEBUG_HEADER))
        debug_tail.append((DEBUG_FIELD, f"allowed; {self.debug_allows}".encode("latin-1")))
        self.debug_origins = frozenset(origin.encode("latin-1") for origin in debug_origins)

        # Every listed origin's fields, whole: an allowed request takes its list as it is.
        self.answers: dict[bytes, Fields] = {}
        for text in allow_origins:
            if text != "*":
                origin = text.encode("latin-1")
                self.answers[origin] = [
                    (b"access-control-allow-origin", origin),
                    *self.allowed_tail,
                ]
        for origin in self.debug_origins:
            allow_origin = origin if self.mirror else b"*"
            self.answers[origin] = [(b"access-control-allow-origin", allow_origin), *debug_tail]

    @staticmethod
    def _tail(allow_credentials: bool, expose_headers: Collection[str]) -> Fields:
        """The fields after ``Access-Control-Allow-Origin`` on an allowed answer."""
        tail: Fields = []
        if allow_credentials:
            tail.append((b"access-control-allow-credentials", b"true"))
        if expose_headers:
            tail.append(
                (b"access-control-expose-headers", ", ".join(expose_headers).encode("latin-1"))
            )
        tail.append(VARY_ORIGIN)
        return tail

    @staticmethod
    def is_preflight(scope: Scope, head: RequestHead) -> bool:
        return (
            scope["method"] == "OPTIONS"
            and head.origin is not None
            and head.cors_request_method is not None
        )

    def preflight(self, scope: Scope, origin: bytes | None = None) -> Response:
        """Starlette's answer to a preflight; a refusal named, counted and left in the
        scope; the debug header when ``origin`` (the request's) is a debug origin."""
        headers = Headers(scope=scope)
        response = self.preflights.preflight_response(request_headers=headers)
        refusal = None
        if response.status_code != 200:
            refusal = self.preflight_refusal(headers)
            self._refused(scope, refusal)
        if origin is not None and origin in self.debug_origins:
            decision = "allowed" if refusal is None else refusal.describe()
            value = f"{decision}; {self.debug_allows}".encode("latin-1")
            response.raw_headers.append((DEBUG_FIELD, value))
        return response

    def preflight_refusal(self, headers: Headers) -> CorsRefusal:
        """Why Starlette refused this preflight: its checks, in its order, named."""
        preflights = self.preflights
        origin = headers["origin"]
        if not preflights.is_allowed_origin(origin):
            return CorsRefusal(ORIGIN_NOT_LISTED, "cors_refused_origin", origin)
        method = headers["access-control-request-method"]
        if method not in preflights.allow_methods:
            return CorsRefusal(METHOD_NOT_ALLOWED, "cors_refused_method", method)
        requested = headers.get("access-control-request-headers")
        if requested is not None and not preflights.allow_all_headers:
            for name in requested.split(","):
                if name.strip().lower() not in preflights.allow_headers:
                    return CorsRefusal(HEADER_NOT_ALLOWED, "cors_refused_header", name.strip())
        network = headers.get("access-control-request-private-network", "")
        return CorsRefusal(PRIVATE_NETWORK_NOT_ALLOWED, "cors_refused_private_network", network)

    def cors_fields(self, origin: bytes | None, scope: Scope) -> Fields:
        """The CORS fields of an answer to a request with this ``Origin`` (None: none)."""
        if origin is None:
            return self.vary_only
        answer = self.answers.get(origin)
        if answer is not None:
            return answer
        if self.allow_all:
            if self.mirror:
                return [(b"access-control-allow-origin", origin), *self.allowed_tail]
            return self.any_origin_fields
        self._refused(
            scope, CorsRefusal(ORIGIN_NOT_LISTED, "cors_refused_origin", origin.decode("latin-1"))
        )
        return self.vary_only

    def _refused(self, scope: Scope, refusal: CorsRefusal) -> None:
        scope[REFUSAL_SCOPE_KEY] = refusal
        if self.on_refused is not None:
            self.on_refused(refusal.reason)
