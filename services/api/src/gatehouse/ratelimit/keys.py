from __future__ import annotations

import ipaddress

from starlette.requests import Request
from starlette.types import Scope


def client_key(scope: Scope) -> str:
    """Who a request is counted against before any identity is verified: its address.

    The edge puts a verified identity first (``identity.IdentityResolver``: a JWT
    subject whose signature and claims check out, or a known API key); everything
    else lands here. A raw credential never makes a key of its own: a client
    inventing tokens, or rotating an Authorization header, would get a fresh budget
    per token, so an unverified one counts exactly like none.
    """
    return address_key(scope)


def address_key(scope: Scope) -> str:
    """The key of an anonymous caller: its address.

    The client IP, as uvicorn's proxy-headers middleware resolved it from trusted
    proxies only. An IPv6 client is counted by its /64, the smallest block a site is
    usually given, so rotating addresses inside it buys nothing. An IPv4-mapped
    address (``::ffff:192.0.2.7``, what a dual-stack socket reports for an IPv4 peer)
    is the IPv4 client it carries: one key for both forms, not one ``::/64`` for every
    IPv4 client.
    """
    client = scope.get("client")
    host: str = client[0] if client else "unknown"
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return "host:" + host[:64]
        mapped = address.ipv4_mapped
        if mapped is not None:
            return "ip:" + str(mapped)
        return "net:" + str(ipaddress.IPv6Network((address, 64), strict=False))
    return "ip:" + host


def request_key(request: Request) -> str:
    """``client_key`` in the form slowapi's ``key_func`` takes."""
    return client_key(request.scope)
