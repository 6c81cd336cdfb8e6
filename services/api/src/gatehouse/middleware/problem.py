"""The one way an edge layer refuses a request: an ``application/problem+json`` answer.

RFC 9457 problem details, sent on the spot so the app never runs. The outer layers
(security headers, request id, CORS for an allowed origin) still add their fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import Send

PROBLEM_JSON = (b"content-type", b"application/problem+json")


def problem_body(status: int, title: str, detail: str | None = None) -> bytes:
    """The JSON body: ``type``, ``title``, ``status`` and, when given, ``detail``."""
    body: dict[str, object] = {"type": "about:blank", "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    return json.dumps(body, separators=(",", ":")).encode()


async def send_problem(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answer ``status`` with a prebuilt problem ``body`` and any extra ``headers``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [PROBLEM_JSON, (b"content-length", b"%d" % len(body)), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
