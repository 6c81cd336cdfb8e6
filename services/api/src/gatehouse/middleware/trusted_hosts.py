from __future__ import annotations

from collections.abc import Collection

from starlette.middleware.trustedhost import TrustedHostMiddleware as StarletteTrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send


class TrustedHostMiddleware:
    """Starlette's Host check, with the kubelet's probe paths exempt.

    The kubelet sends ``Host: <pod IP>:<port>`` to probes, which no allowlist can
    name in advance, so ``exempt_paths`` bypass the check. No www redirect: an API
    answers for the names it is given, it does not move clients between them.
    """

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: Collection[str],
        exempt_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self.exempt_paths = frozenset(exempt_paths)
        self.checked = StarletteTrustedHostMiddleware(
            app, allowed_hosts=list(allowed_hosts), www_redirect=False
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        await self.checked(scope, receive, send)
