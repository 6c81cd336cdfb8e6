from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .response_fields import RESPONSE_FIELDS

REQUEST_ID_HEADER = b"x-request-id"
MAX_REQUEST_ID_LENGTH = 128
_REQUEST_ID_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:"
)
UNMATCHED_ROUTE = "<unmatched>"
LIMITED_ROUTE_KEY = "gatehouse.limited_route"
INTERNAL_ERROR_BODY = b'{"type":"about:blank","title":"Internal Server Error","status":500}'

# Called once per finished request: (scope, status, duration in seconds, request id).
RequestObserver = Callable[[Scope, int, float, str], None]


def route_template(scope: Scope) -> str:
    """The template of the route that answered (``/items/{item_id}``), not the URL."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    # A request refused before routing (429) carries the template the limiter matched.
    limited: str = scope.get(LIMITED_ROUTE_KEY, UNMATCHED_ROUTE)
    return limited


def _accepted_request_id(value: bytes) -> bool:
    """A caller's id is kept only if short and plain, so it is safe in logs and headers."""
    if not value or len(value) > MAX_REQUEST_ID_LENGTH:
        return False
    return all(char in _REQUEST_ID_CHARACTERS for char in value.decode("latin-1"))


class RequestContextMiddleware:
    """Request id, access log, request metrics, and a last-resort 500.

    ``X-Request-ID`` is taken from the request when it is a plain token, else a new one
    is made; it is returned on the response. After the response, ``observer`` gets the
    outcome. If anything inside raises before a response started, this answers 500
    itself, so the client still gets a well-formed response with the outer headers.
    It also opens the request's ``RESPONSE_FIELDS``: the header fields the layers
    inside it add are written with the id, on whichever response goes out.
    """

    def __init__(self, app: ASGIApp, observer: RequestObserver, logger: logging.Logger) -> None:
        self.app = app
        self.observer = observer
        self.logger = logger
        # New ids: a random per-process prefix and a counter, unique across replicas
        # and restarts; a tenth of uuid4's cost on the hot path. Not secrets.
        self.id_prefix = os.urandom(8).hex().encode()
        self.id_counter = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        raw_id = b""
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                if _accepted_request_id(value):
                    raw_id = value
                break
        if not raw_id:
            raw_id = b"%s%010x" % (self.id_prefix, next(self.id_counter))
        request_id = raw_id.decode("latin-1")
        scope.setdefault("state", {})["request_id"] = request_id
        fields = [(REQUEST_ID_HEADER, raw_id)]
        scope[RESPONSE_FIELDS] = fields
        status = 500
        response_started = False

        async def send_with_fields(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", ()), *fields]
            await send(message)

        try:
            await self.app(scope, receive, send_with_fields)
        except Exception:
            self.logger.exception(
                "unhandled exception", extra={"fields": {"request_id": request_id}}
            )
            if not response_started:
                await send_with_fields(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/problem+json")],
                    }
                )
                await send({"type": "http.response.body", "body": INTERNAL_ERROR_BODY})
        finally:
            self.observer(scope, status, time.perf_counter() - started, request_id)
