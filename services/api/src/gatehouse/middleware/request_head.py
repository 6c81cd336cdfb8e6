"""The request header fields the edge decides on, read in one pass over the head.

Every edge concern looks at a few fields (Host, Origin, Content-Length, ...). Each
scanning ``scope["headers"]`` on its own cost a loop per concern per request; one pass
here reads them all, and each concern takes what it needs from ``RequestHead``.

Repeated fields are counted, not merged: the single-header rule (``single_headers``)
refuses a repeated Host or Origin before any concern reads one, so ``host`` and
``origin`` are the only value whenever a request goes further.
"""

from __future__ import annotations

# A Content-Length of more than 18 digits is kept as this (too large for any limit)
# without being parsed: int() of thousands of digits is slow, and refused past 4300.
_MAX_LENGTH_DIGITS = 18
OVERSIZED_LENGTH = 10**_MAX_LENGTH_DIGITS


class RequestHead:
    """The fields of one request head that the edge reads, as sent (bytes)."""

    __slots__ = (
        "authorization",
        "body_framing_valid",
        "content_length",
        "cors_request_method",
        "fetch_site",
        "host",
        "hosts",
        "origin",
        "origins",
        "request_id",
        "streamed",
    )

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        host = origin = request_id = authorization = fetch_site = method = None
        hosts = origins = 0
        length = -1
        streamed = False
        valid = True
        for name, value in headers:
            if name == b"host":
                hosts += 1
                host = value
            elif name == b"origin":
                origins += 1
                origin = value
            elif name == b"content-length":
                if not value.isdigit():
                    valid = False
                    continue
                declared = int(value) if len(value) <= _MAX_LENGTH_DIGITS else OVERSIZED_LENGTH
                if length not in (-1, declared):
                    valid = False  # two different lengths: a request-smuggling vector
                length = declared
            elif name == b"transfer-encoding":
                streamed = True
                # Only chunked is decoded (by the server); a coding nothing decodes
                # (gzip, chunked) would hand the app bytes it cannot read.
                if value.strip().lower() != b"chunked":
                    valid = False
            elif name == b"x-request-id":
                if request_id is None:
                    request_id = value
            elif name == b"authorization":
                if authorization is None and value:
                    authorization = value
            elif name == b"sec-fetch-site":
                fetch_site = value
            elif name == b"access-control-request-method":
                method = value
        self.host = host
        self.hosts = hosts
        self.origin = origin
        self.origins = origins
        self.request_id = request_id
        self.authorization = authorization
        self.fetch_site = fetch_site
        self.cors_request_method = method
        self.content_length = length
        self.streamed = streamed
        # Content-Length and Transfer-Encoding together are refused too (RFC 9112 6.3).
        self.body_framing_valid = valid and not (streamed and length >= 0)

    @property
    def has_body(self) -> bool:
        """A body is announced (a length above 0, or chunked), or the framing is invalid."""
        return self.content_length > 0 or self.streamed or not self.body_framing_valid
