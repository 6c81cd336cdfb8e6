"""A 403 for state-changing requests a page on another site made in a user's browser.

CORS only keeps a page from *reading* a response. A form post or a ``no-cors`` fetch
with a simple content type still reaches the route, with the user's cookies. So for
unsafe methods: an ``Origin`` outside the allowlist is refused with 403, and without
``Origin``, ``Sec-Fetch-Site: cross-site`` is refused too. A browser sets both headers
itself; a page cannot forge them. ``Sec-Fetch-Site: same-origin`` (the API's own pages,
such as /docs) passes, and so does a request with neither header: servers, curl and the
cluster probes are not browsers.

``policy``: ``refuse``, ``shadow`` (count and log only) or ``off``. With
``allow_all_origins`` (the allowlist is ``*``) every ``Origin`` is allowed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from starlette.types import Scope

from .request_head import RequestHead

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REFUSED_BODY = (
    b'{"type":"about:blank","title":"Forbidden","status":403,'
    b'"detail":"cross-site request refused: the origin is not allowed to make changes"}'
)

# Called per cross-site unsafe request: "refused" or "shadowed" (policy shadow).
CrossSiteObserver = Callable[[str], None]


class CrossSitePolicy:
    def __init__(
        self,
        allowed_origins: Collection[str],
        allow_all_origins: bool = False,
        policy: str = "refuse",
        on_cross_site: CrossSiteObserver | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if policy not in ("refuse", "shadow", "off"):
            raise ValueError(f"unknown cross-site policy {policy!r}")
        self.allowed_origins = frozenset(origin.encode("latin-1") for origin in allowed_origins)
        self.allow_all_origins = allow_all_origins
        self.policy = policy
        self.on_cross_site = on_cross_site or (lambda action: None)
        self.logger = logger or logging.getLogger("gatehouse.cross_site")

    def is_cross_site(self, head: RequestHead) -> bool:
        if head.fetch_site == b"same-origin":
            return False
        if head.origin is not None:
            return not self.allow_all_origins and head.origin not in self.allowed_origins
        return head.fetch_site == b"cross-site"

    def refuses(self, scope: Scope, head: RequestHead) -> bool:
        """True when the request must be refused; counts and logs what it finds."""
        if (
            self.policy == "off"
            or scope["method"] not in UNSAFE_METHODS
            or not self.is_cross_site(head)
        ):
            return False
        client = scope.get("client")
        fields = {
            "method": scope["method"],
            "path": scope["path"],
            "client_ip": client[0] if client else None,
        }
        if self.policy == "shadow":
            self.on_cross_site("shadowed")
            self.logger.info("cross-site request would have been refused", extra={"fields": fields})
            return False
        self.on_cross_site("refused")
        self.logger.info("cross-site request refused", extra={"fields": fields})
        return True
