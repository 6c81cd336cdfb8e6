"""What the edge knows of a request from start to end: its id, its route, its outcome.

``X-Request-ID`` is taken from the request when it is a plain token, else a new one is
made (``RequestIds``); it goes back on the response and into the access log. After the
response, a ``RequestObserver`` gets the outcome (metrics, access log). If anything
raises before a response started, the edge answers ``INTERNAL_ERROR_BODY`` itself, so
the client still gets a well-formed response with every field the edge adds.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

from starlette.types import Scope

REQUEST_ID_HEADER = b"x-request-id"
MAX_REQUEST_ID_LENGTH = 128
_REQUEST_ID_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:"
)
UNMATCHED_ROUTE = "<unmatched>"
LIMITED_ROUTE_KEY = "gatehouse.limited_route"
# The last three hex digits of a made id, by the counter's low 12 bits.
_LOW_DIGITS = tuple(b"%03x" % n for n in range(4096))
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


class RequestIds:
    """Request ids: the caller's when acceptable, else a random per-process prefix and a
    counter, unique across replicas and restarts; a tenth of uuid4's cost. Not secrets."""

    def __init__(self) -> None:
        self.prefix = os.urandom(8).hex().encode()
        self.counter = itertools.count()
        # The id is the prefix and the counter in ten hex digits; all but the last three
        # change once per 4,096 ids, so they are formatted then, not per request.
        self.head = b""

    def take(self, sent: bytes | None) -> bytes:
        """The id for a request that sent ``sent`` (its first X-Request-ID, or None)."""
        if sent is not None and _accepted_request_id(sent):
            return sent
        number = next(self.counter)
        low = number & 0xFFF
        if low == 0 or not self.head:
            self.head = b"%s%07x" % (self.prefix, number >> 12)
        return self.head + _LOW_DIGITS[low]
