"""The optional redirect of plain-http requests to https (``APP_HTTPS_REDIRECT``).

Behind a TLS-terminating ingress the scheme comes from ``X-Forwarded-Proto``, which
uvicorn applies only for trusted proxies; so a request that reached the ingress over
https is seen as https and never redirected (no loop). The kubelet probes plain http
and must get its answer, not a 307: exempt paths are never redirected.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import URL
from starlette.responses import RedirectResponse, Response
from starlette.types import Scope


class HTTPSRedirect:
    def __init__(self, exempt_paths: Collection[str] = ()) -> None:
        self.exempt_paths = frozenset(exempt_paths)

    def redirect(self, scope: Scope) -> Response | None:
        """The 307 to the same URL over https, or None when the request may stay."""
        if scope.get("scheme") != "http" or scope["path"] in self.exempt_paths:
            return None
        url = URL(scope=scope)
        # Starlette's rule: the default ports are dropped, any other is kept.
        netloc = url.hostname if url.port in (80, 443) else url.netloc
        return RedirectResponse(url.replace(scheme="https", netloc=netloc), status_code=307)
