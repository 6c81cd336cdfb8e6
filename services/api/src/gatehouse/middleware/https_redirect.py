from __future__ import annotations

from collections.abc import Collection

from starlette.middleware.httpsredirect import HTTPSRedirectMiddleware as StarletteHTTPSRedirect
from starlette.types import ASGIApp, Receive, Scope, Send


class HTTPSRedirectMiddleware:
    """Redirects plain-http requests to https, except the probe paths.

    Behind a TLS-terminating ingress the scheme comes from ``X-Forwarded-Proto``,
    which uvicorn applies only for trusted proxies; so a request that reached the
    ingress over https is seen as https and never redirected (no loop). The kubelet
    probes plain http and must get its answer, not a 307.
    """

    def __init__(self, app: ASGIApp, exempt_paths: Collection[str] = ()) -> None:
        self.app = app
        self.exempt_paths = frozenset(exempt_paths)
        self.redirecting = StarletteHTTPSRedirect(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        await self.redirecting(scope, receive, send)
