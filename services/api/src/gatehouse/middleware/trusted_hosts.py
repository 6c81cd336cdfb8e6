"""The Host allowlist: a 400 for a request whose ``Host`` the service does not answer for.

Same rules as Starlette's ``TrustedHostMiddleware`` (exact names, ``*.example.com``
wildcards, port ignored), stricter on syntax (an invalid Host value, or none, is a 400
as RFC 9112 3.2 asks), and without building a ``Headers`` object per request. No www
redirect: an API answers for the names it is given, it does not move clients between
them. Exempt paths are the kubelet's probes and the metrics scrape, which arrive with
``Host: <pod IP>:<port>`` that no allowlist can name in advance.
"""

from __future__ import annotations

import re
from collections.abc import Collection

INVALID_HOST_BODY = (
    b'{"type":"about:blank","title":"Bad Request","status":400,"detail":"invalid host header"}'
)
MAX_HOST_CACHE = 1024
# RFC 9112 3.2 / RFC 3986: a host name (or IPv4), or an IPv6 literal, then an optional port.
_HOST_HEADER = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::\d{1,5})?")


def _hostname(raw: bytes) -> str | None:
    """``Host`` without its port, lower-cased; None when it is not a valid Host value."""
    match = _HOST_HEADER.fullmatch(raw.decode("latin-1").strip().lower())
    return match.group(1) if match else None


class HostAllowlist:
    """Which ``Host`` values the service answers for; ``*`` alone allows every host."""

    def __init__(self, allowed_hosts: Collection[str], exempt_paths: Collection[str] = ()) -> None:
        for pattern in allowed_hosts:
            if pattern == "*":
                continue
            if "*" in pattern[1:] or (pattern.startswith("*") and not pattern.startswith("*.")):
                raise ValueError(f"{pattern!r}: a wildcard may only start a host ('*.example.com')")
        self.allow_all = "*" in allowed_hosts
        self.exact_hosts = frozenset(h.lower() for h in allowed_hosts if not h.startswith("*"))
        self.host_suffixes = tuple(h[1:].lower() for h in allowed_hosts if h.startswith("*."))
        self.exempt_paths = frozenset(exempt_paths)
        self.verdicts: dict[bytes, bool] = {}

    def refuses(self, path: str, raw_host: bytes | None) -> bool:
        """True when a request for ``path`` with this Host (None: none sent) is refused."""
        if self.allow_all or path in self.exempt_paths:
            return False
        return raw_host is None or not self.is_allowed(raw_host)

    def is_allowed(self, raw_host: bytes) -> bool:
        verdict = self.verdicts.get(raw_host)
        if verdict is None:
            hostname = _hostname(raw_host)
            verdict = hostname is not None and (
                hostname in self.exact_hosts
                or (bool(self.host_suffixes) and hostname.endswith(self.host_suffixes))
            )
            if len(self.verdicts) < MAX_HOST_CACHE:  # bounded: hosts are client input
                self.verdicts[raw_host] = verdict
        return verdict
