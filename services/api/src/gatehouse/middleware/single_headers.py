from __future__ import annotations

from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from .problem import send_problem

AMBIGUOUS_BODY = (
    b'{"type":"about:blank","title":"Bad Request","status":400,'
    b'"detail":"a header that must appear once appears more than once"}'
)


class SingleHeaderMiddleware:
    """Answers 400 to a request that repeats a header the edge decides on.

    With two ``Origin`` fields, one layer could judge the first and another the last: a
    refused origin's POST would pass the cross-site check on the allowed one. With two
    ``Host`` fields, proxies and the service may disagree on where a request was sent
    (RFC 9112 3.2 asks for a 400). Refusing the request is the only reading on which
    every layer agrees, so it happens before any of them looks.
    """

    def __init__(self, app: ASGIApp, names: Collection[bytes] = (b"host", b"origin")) -> None:
        self.app = app
        self.names = frozenset(name.lower() for name in names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        names = self.names
        seen: set[bytes] = set()
        for name, _value in scope["headers"]:
            if name in names:
                if name in seen:
                    await send_problem(send, 400, AMBIGUOUS_BODY)
                    return
                seen.add(name)
        await self.app(scope, receive, send)
