"""A 400 for a request that repeats a header the edge decides on (Host, Origin).

With two ``Origin`` fields, one concern could judge the first and another the last: a
refused origin's POST would pass the cross-site check on the allowed one. With two
``Host`` fields, proxies and the service may disagree on where a request was sent
(RFC 9112 3.2 asks for a 400). Refusing the request is the only reading on which every
concern agrees, so the edge checks this before any of them looks.
"""

from __future__ import annotations

from .request_head import RequestHead

AMBIGUOUS_BODY = (
    b'{"type":"about:blank","title":"Bad Request","status":400,'
    b'"detail":"a header that must appear once appears more than once"}'
)


def repeats_a_single_header(head: RequestHead) -> bool:
    """True when Host or Origin appears more than once."""
    return head.hosts > 1 or head.origins > 1
