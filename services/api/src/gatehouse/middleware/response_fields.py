"""Header fields inner layers add to a response, written by one layer instead of each.

A layer that adds a field by wrapping ``send`` pays for a closure, a coroutine per
ASGI message and another copy of the header list, on every request: about three
times what a layer that only passes the request on costs (``make bench-profile``,
the scaffolding rows of bench/results/profile.md). In Gatehouse's edge
``RequestContextMiddleware``, which wraps ``send`` anyway to see the status, opens
one list per request under ``RESPONSE_FIELDS``; the layers inside it extend the
list and it is written once when the response starts, whichever layer answers.

A layer with no such list around it (built alone, as some tests and the profile
do) gets a ``send`` that adds its fields itself, so each layer is correct alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Message, Scope, Send

RESPONSE_FIELDS = "gatehouse.response_fields"


def add_response_fields(scope: Scope, send: Send, fields: Iterable[tuple[bytes, bytes]]) -> Send:
    """The ``send`` to use from here on: the response will carry ``fields``."""
    collected: list[tuple[bytes, bytes]] | None = scope.get(RESPONSE_FIELDS)
    if collected is not None:
        collected += fields
        return send
    own = list(fields)

    async def send_with_fields(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *own]
        await send(message)

    return send_with_fields
