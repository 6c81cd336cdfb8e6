from __future__ import annotations

import hashlib
import ipaddress

from starlette.requests import Request
from starlette.types import Scope

AUTHORIZATION = b"authorization"


def client_key(scope: Scope) -> str:
    """Who a request is counted against.

    A caller presenting a credential (``Authorization``) is counted by a hash of it,
    so users behind one NAT do not share a budget and the secret never reaches Redis.
    Otherwise the client IP, as uvicorn's proxy-headers middleware resolved it from
    trusted proxies only. An IPv6 client is counted by its /64, the smallest block a
    site is usually given, so rotating addresses inside it buys nothing. An
    IPv4-mapped address (``::ffff:192.0.2.7``, what a dual-stack socket reports for an
    IPv4 peer) is the IPv4 client it carries: one key for both forms, not one ``::/64``
    for every IPv4 client.

    Known weak spot: a credential is counted before anything verifies it, so a client
    inventing tokens gets a budget per token. Routes that take credentials must reject
    bad ones cheaply, or key on the verified identity with a per-route ``key_func``.
    """
    for name, value in scope["headers"]:
        if name == AUTHORIZATION and value:
            return credential_key(value)
    return address_key(scope)


def credential_key(authorization: bytes) -> str:
    """The key of a caller presenting ``authorization``: a hash, never the secret."""
    return "cred:" + hashlib.sha256(authorization).hexdigest()[:32]


def address_key(scope: Scope) -> str:
    """The key of an anonymous caller: its address (see ``client_key``)."""
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
