"""Security header fields by what a response is, following OWASP's REST cheat sheet.

A JSON answer (and any other non-HTML one: problem details, plain text, a preflight)
renders nothing: it needs ``X-Content-Type-Options: nosniff``, ``Cache-Control:
no-store``, a CSP that refuses everything including framing, ``X-Frame-Options`` for
browsers without CSP 2, and HSTS over https. The fields that govern a *document*
(Referrer-Policy, Permissions-Policy, COOP/COEP/CORP, X-Permitted-Cross-Domain-Policies)
go on HTML only, such as the docs pages: on JSON they are bytes a browser never uses,
written and parsed on every response.

Each block is built once per policy (``HeaderBlocks``); a response gets one of them,
chosen by its Content-Type, the request's path (the docs pages' own CSP) and scheme.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Field = tuple[bytes, bytes]
Fields = list[Field]

# Headers that advertise the implementation (OWASP secure-headers "remove" list, the
# ones a Python stack can emit). uvicorn's own Server header is off by --no-server-header;
# this catches anything a route or library adds.
STRIPPED_HEADERS = frozenset({b"server", b"x-powered-by", b"powered-by", b"x-generator"})

# A response renders nothing, so its policy refuses everything.
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
# A page of this API embeds only what allows it; the docs pages load their CDN's scripts
# without credentials (``credentialless``), which a CDN need not opt into.
DOCUMENT_EMBEDDER_POLICY = "require-corp"
DOCS_EMBEDDER_POLICY = "credentialless"
HTML = b"text/html"


def _encode(headers: dict[str, str]) -> Fields:
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]


def security_headers(csp: str = API_CONTENT_SECURITY_POLICY) -> Fields:
    """The fields of every non-HTML response, HSTS aside; also what the server itself adds
    to the responses it writes (``server_protocol``), so they are the same set."""
    return _encode(
        {
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-store",
            "Content-Security-Policy": csp,
        }
    )


def document_headers(
    referrer_policy: str, csp: str = API_CONTENT_SECURITY_POLICY, embedder: str = "require-corp"
) -> Fields:
    """The fields of an HTML response, HSTS aside: the API set plus the document-only ones."""
    return security_headers(csp) + _encode(
        {
            "Referrer-Policy": referrer_policy,
            "Permissions-Policy": PERMISSIONS_POLICY,
            "Cross-Origin-Opener-Policy": "same-origin",
            "Cross-Origin-Embedder-Policy": embedder,
            "Cross-Origin-Resource-Policy": "same-origin",
            "X-Permitted-Cross-Domain-Policies": "none",
        }
    )


class HeaderBlocks:
    """Every block of security fields one policy gives, built once.

    ``api`` and ``api_https`` are the hot path's (chosen per request by scheme);
    ``for_html`` picks a document block. ``owned`` are the names the blocks set or
    strip: a value the app set for one of them is replaced, never doubled.
    """

    def __init__(
        self,
        referrer_policy: str = "no-referrer",
        hsts_max_age: int = 63072000,
        docs_paths: Iterable[str] = (),
    ) -> None:
        hsts = (
            b"strict-transport-security",
            f"max-age={hsts_max_age}; includeSubDomains".encode("latin-1"),
        )
        self.api = security_headers()
        self.api_https = [*self.api, hsts]
        document = document_headers(referrer_policy)
        docs = document_headers(referrer_policy, DOCS_CONTENT_SECURITY_POLICY, DOCS_EMBEDDER_POLICY)
        self.document = (document, [*document, hsts])
        self.docs = (docs, [*docs, hsts])
        self.docs_paths = frozenset(docs_paths)
        self.owned = frozenset(name for name, _ in document) | {hsts[0]} | STRIPPED_HEADERS

    def for_html(self, path: str, https: bool) -> Fields:
        blocks = self.docs if path in self.docs_paths else self.document
        return blocks[https]

    def apply(
        self,
        headers: Sequence[Field],
        block: Fields,
        path: str,
        https: bool,
        more: Sequence[Field] = (),
    ) -> Fields:
        """``headers`` (a response's own) with the security fields, then ``more``: the
        fields are ``block`` unless the response is HTML, then the document block; the
        app's values for owned names go. One new list, the response's own is untouched."""
        owned = self.owned
        replaced = False
        for name, value in headers:
            if name == b"content-type":
                if value.startswith(HTML):
                    block = self.for_html(path, https)
            elif name in owned:
                replaced = True
        if replaced:
            return [*(pair for pair in headers if pair[0] not in owned), *block, *more]
        return [*headers, *block, *more]


class SecurityHeadersMiddleware:
    """``HeaderBlocks`` as an ASGI layer of its own, for an app served without the edge.

    Gatehouse's edge (``gatehouse.edge``) applies the same blocks in its one send
    wrapper; this serves tests and any app that wants only the headers. HSTS goes out
    only when the request's scheme is https, which is only so when a trusted proxy said.
    """

    def __init__(self, app: ASGIApp, blocks: HeaderBlocks | None = None) -> None:
        self.app = app
        self.blocks = blocks or HeaderBlocks()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        blocks = self.blocks
        path: str = scope["path"]
        https = scope.get("scheme") == "https"
        block = blocks.api_https if https else blocks.api

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = blocks.apply(message.get("headers", []), block, path, https)
            await send(message)

        await self.app(scope, receive, send_with_headers)
