from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Headers that advertise the implementation (OWASP secure-headers "remove" list, the
# ones a Python stack can emit). uvicorn's own Server header is off by --no-server-header;
# this catches anything a route or library adds.
STRIPPED_HEADERS = frozenset({b"server", b"x-powered-by", b"powered-by", b"x-generator"})

# A JSON API renders nothing, so its policy refuses everything.
API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"
# Swagger UI and ReDoc load scripts and styles from a CDN and run an inline script.
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "font-src https://fonts.gstatic.com; connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'"
)
PERMISSIONS_POLICY = (
    "accelerometer=(), autoplay=(), camera=(), display-capture=(), encrypted-media=(), "
    "fullscreen=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), midi=(), "
    "payment=(), picture-in-picture=(), publickey-credentials-get=(), screen-wake-lock=(), "
    "sync-xhr=(), usb=(), xr-spatial-tracking=(), clipboard-read=(), clipboard-write=(), "
    "hid=(), idle-detection=(), serial=()"
)


def _encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]


def security_headers(
    referrer_policy: str = "no-referrer", csp: str = API_CONTENT_SECURITY_POLICY
) -> list[tuple[bytes, bytes]]:
    """The fields every response carries, HSTS aside; also what the server itself adds to
    the responses it writes (``server_protocol``), so they are the same set."""
    return _encode(
        {
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": referrer_policy,
            "Cross-Origin-Opener-Policy": "same-origin",
            "Cross-Origin-Resource-Policy": "same-origin",
            "Permissions-Policy": PERMISSIONS_POLICY,
            "X-Permitted-Cross-Domain-Policies": "none",
            "Cache-Control": "no-store",
            "Content-Security-Policy": csp,
        }
    )


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response, errors and preflights included.

    It must wrap everything that can answer (host check, CORS preflight, rate limit,
    the app's 500 handler), so it sits outermost in ``gatehouse.edge``. HSTS is sent
    only when the request's scheme is https: over plain http a browser ignores it,
    and the scheme is only https when a trusted proxy said so.
    """

    def __init__(
        self,
        app: ASGIApp,
        referrer_policy: str = "no-referrer",
        hsts_max_age: int = 63072000,
        docs_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.api_headers = security_headers(referrer_policy)
        self.docs_headers = security_headers(referrer_policy, DOCS_CONTENT_SECURITY_POLICY)
        self.hsts_header = (
            b"strict-transport-security",
            f"max-age={hsts_max_age}; includeSubDomains".encode("latin-1"),
        )
        self.docs_paths = frozenset(docs_paths)
        # Names this middleware sets: a value the app set is replaced, never doubled.
        self.owned_names = frozenset(name for name, _ in self.api_headers) | STRIPPED_HEADERS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        extra = self.docs_headers if scope["path"] in self.docs_paths else self.api_headers
        if scope.get("scheme") == "https":
            extra = [*extra, self.hsts_header]
        owned = self.owned_names

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                # ASGI header names are lower-case; most responses set none of ours.
                if owned.isdisjoint(dict(headers)):
                    message["headers"] = [*headers, *extra]
                else:
                    message["headers"] = [pair for pair in headers if pair[0] not in owned] + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)
