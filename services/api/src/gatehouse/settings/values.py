"""The grammar of configuration values: pure parsers, one per kind of value.

Each takes the text an operator wrote and returns the canonical value or raises
``ValueError`` with a message that never repeats a secret. The settings model
(``model.py``) calls them; the chart's values schema refuses the same values.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from limits import parse_many

DEFAULT_PORTS = {"http": 80, "https": 443}
# What a browser puts in an Origin: an ASCII host name (IDNs arrive as punycode), an
# IPv4 address, or an IPv6 literal in brackets.
HOST_NAME = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
# An HTTP token (RFC 9110, 5.6.2): what a header name may be.
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# The broadest network a trust or exemption list may name: a /8 holds 16.7 million
# addresses, more than any ingress controller's or office's range; anything broader
# includes addresses that clients on the internet hold.
WIDEST_PREFIX = 8
_MAPPED_IPV4 = ipaddress.IPv6Network("::ffff:0:0/96")


def split_list(value: Any) -> Any:
    """Accept a comma-separated string or a JSON list (``["a", "b"]``)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except RecursionError:
            raise ValueError("the JSON list is nested too deeply") from None
        if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
            raise ValueError("expected a JSON list of strings")
        return [item.strip() for item in parsed if item.strip()]
    return [item.strip() for item in text.split(",") if item.strip()]


# Origins --------------------------------------------------------------------------


def normalise_origin(raw: str) -> str:
    """Return the serialised origin a browser sends, or raise ValueError.

    An origin is scheme://host[:port] with nothing after it: no path (not even "/"),
    query, fragment or credentials. Scheme and host are lower-cased and a default
    port is dropped, so the allowlist compares equal to the Origin header.
    """
    if raw == "*":
        return raw
    if raw.lower() == "null":
        raise ValueError(
            "'null' is not an allowable origin (sandboxed frames and file: pages send it)"
        )
    if "://" not in raw:
        raise ValueError(f"origin {raw!r} has no scheme (write https://{raw})")
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"origin {raw!r} must use http or https")
    if parts.path or parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise ValueError(f"origin {raw!r} must not have a path, query or trailing slash")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"origin {raw!r} must not carry credentials")
    try:
        port = parts.port
    except ValueError as error:
        raise ValueError(f"origin {raw!r} has an invalid port") from error
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal keeps its brackets in an origin
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            raise ValueError(f"origin {raw!r} has no valid host") from None
    elif not HOST_NAME.fullmatch(host) or len(host) > 253:
        raise ValueError(
            f"origin {raw!r} has no valid host (an ASCII name, IDNs as punycode, or an IP)"
        )
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def normalise_origins(origins: Iterable[str], allow_credentials: bool) -> list[str]:
    """Each origin normalised, duplicates dropped in order; ``*`` never with credentials."""
    normalised = list(dict.fromkeys(normalise_origin(origin) for origin in origins))
    if "*" in normalised and allow_credentials:
        # A wildcard with credentials would let any site read a logged-in user's data.
        raise ValueError("'*' cannot be combined with credentials (APP_ALLOW_CREDENTIALS=true)")
    return normalised


def parse_origins(text: str, allow_credentials: bool = True) -> list[str]:
    """An allowlist as APP_ALLOWED_ORIGINS or its file holds it.

    Comma-separated or a JSON list. An empty text is refused: a file emptied by a
    half-finished write must not silently refuse every origin; ``[]`` says so on purpose.
    """
    if not text.strip():
        raise ValueError("the list is empty (write [] to allow no origin)")
    try:
        raw = split_list(text)
    except ValueError as error:
        raise ValueError(f"not a list of origins: {error}") from None
    return normalise_origins(raw, allow_credentials)


# Networks -------------------------------------------------------------------------


def _effective(network: IPNetwork) -> IPNetwork:
    """An IPv4-mapped IPv6 network (``::ffff:10.0.0.0/104``) as the IPv4 network it holds."""
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED_IPV4):
        prefix = network.prefixlen - _MAPPED_IPV4.prefixlen
        address = network.network_address.ipv4_mapped
        assert address is not None  # inside ::ffff:0:0/96
        return ipaddress.IPv4Network((address, prefix))
    return network


def parse_network(value: str) -> IPNetwork:
    """One CIDR (or a single address) naming a few trusted machines, never the internet.

    Refused: a value that is not an address or CIDR, host bits after the prefix
    (``10.64.0.1/16`` is not ``10.64.0.0/16``: say which one is meant), and any network
    broader than a /8, IPv4-mapped IPv6 included.
    """
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP network in CIDR form") from None
    if str(network.network_address) != str(ipaddress.ip_interface(value).ip):
        raise ValueError(f"{value!r} has host bits set after the prefix; did you mean {network}?")
    effective = _effective(network)
    if effective.prefixlen < WIDEST_PREFIX:
        raise ValueError(
            f"{value!r} is broader than a /{WIDEST_PREFIX}: it holds addresses any client "
            "may have; give the proxies' own networks"
        )
    return network


def parse_networks(values: Iterable[str]) -> list[str]:
    """Validate CIDRs with ``parse_network``; return them in canonical form."""
    return [str(parse_network(value)) for value in values]


def parse_trusted_proxies(values: list[str]) -> list[str]:
    """FORWARDED_ALLOW_IPS: the CIDRs of the proxies whose X-Forwarded-* is believed."""
    if "*" in values:
        raise ValueError("'*' would let any client choose its own IP; give the ingress CIDRs")
    if not values:
        raise ValueError("give at least one CIDR (the ingress controller's)")
    return parse_networks(values)


# Routes and rates -----------------------------------------------------------------


def parse_route_template(template: str) -> str:
    """A route template as the app declares it (``/items/{item_id}``); whether the app has
    it is checked when the edge's policy is built."""
    if not template.startswith("/"):
        raise ValueError(f"{template!r} is not a route template (it starts with '/')")
    return template


RATE_ALGORITHMS = ("fixed", "sliding", "gcra")  # ratelimit.policy.ALGORITHMS


def validate_rate(value: str) -> str:
    """A limits rate string such as ``10/minute`` or ``10/second;100/minute``, optionally
    naming its algorithm: ``gcra:10/second``."""
    algorithm, colon, rate = value.partition(":")
    if colon and algorithm.strip().lower() not in RATE_ALGORITHMS:
        raise ValueError(
            f"{value!r}: unknown algorithm {algorithm!r} (one of {', '.join(RATE_ALGORITHMS)})"
        )
    rate = rate if colon else value
    try:
        items = parse_many(rate)
    except ValueError as error:
        raise ValueError(f"{value!r} is not a rate limit (expected e.g. '10/minute')") from error
    if not items or any(item.amount < 1 or item.get_expiry() < 1 for item in items):
        raise ValueError(f"{value!r} is not a rate limit (expected e.g. '10/minute')")
    windows = [(item.amount, item.get_expiry()) for item in items]
    if len(set(windows)) < len(windows):
        raise ValueError(f"{value!r} names the same window twice")
    if any(item.amount * item.get_expiry() * 1000 > 2**50 for item in items):
        raise ValueError(f"{value!r} is too large a rate limit")
    return value


# Redis URLs -----------------------------------------------------------------------

REDIS_SCHEMES = ("redis", "rediss", "redis+sentinel", "redis+cluster")
MAX_REDIS_DB = 65535
_SERVICE_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True)
class RedisTarget:
    """What a valid APP_REDIS_URL names (its credentials are never kept here)."""

    scheme: str
    endpoints: tuple[tuple[str, int], ...]
    db: int
    service_name: str | None  # Sentinel: the primary's name


def redact_url(url: str) -> str:
    """``url`` with its password (or a lone user-info part) and any query replaced by ``***``.

    The user info is everything between ``://`` and the last ``@``: a password holding
    ``/``, ``#`` or ``@`` unencoded still ends there, so it is hidden whole. A query may
    carry one too (redis-py reads ``?password=``), so none is shown.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    userinfo, at, location = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:***@{location}" if colon else f"***@{location}"
    else:
        location = rest
    for mark in "?#":
        if mark in location:
            rest = rest[: len(rest) - len(location)] + location.split(mark, 1)[0] + mark + "***"
            break
    return f"{scheme}://{rest}"


def _endpoint(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        literal, bracket, tail = text[1:].partition("]")
        if not bracket:
            raise ValueError(f"{text!r} has no closing ']'")
        try:
            host = str(ipaddress.IPv6Address(literal))
        except ValueError:
            raise ValueError(f"{text!r} is not a valid IPv6 address in brackets") from None
        if tail and not tail.startswith(":"):
            raise ValueError(f"{text!r} is not [address]:port")
        port_text = tail[1:] if tail else ""
    else:
        host, _, port_text = text.partition(":")
        if not host or not HOST_NAME.fullmatch(host.lower()):
            raise ValueError(f"{host!r} is not a host name or address")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        # The port is not quoted: with the '@' forgotten, it may be a password.
        raise ValueError(f"the port of {host!r} is not a number from 1 to 65535")
    return host, int(port_text)


def parse_redis_url(url: str) -> RedisTarget:
    """Check an APP_REDIS_URL completely before any client sees it.

    ``redis://`` and ``rediss://``: one host, optional ``/db``; ``redis+sentinel://h:p,h:p/
    <primary>``; ``redis+cluster://h:p,h:p`` (database 0 only). No query string:
    each option is a variable of its own. Messages never repeat the password.
    """
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in REDIS_SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(REDIS_SCHEMES)}")
    userinfo, at, location = rest.rpartition("@")
    if at and any(char in userinfo for char in "/?#"):
        raise ValueError("the user or password holds '/', '?' or '#': percent-encode it")
    if at and not unquote(userinfo.partition(":")[2]) and not userinfo.partition(":")[0]:
        raise ValueError("'@' with no user or password before it")
    if "?" in location or "#" in location:
        raise ValueError("no query or fragment (each option is an APP_REDIS_* variable)")
    authority, _, path = location.partition("/")
    if not authority:
        raise ValueError("no host")
    default_port = 26379 if scheme == "redis+sentinel" else 6379
    endpoints = tuple(_endpoint(part, default_port) for part in authority.split(","))
    segments = path.split("/") if path else []
    if scheme == "redis+sentinel":
        if len(segments) != 1 or not _SERVICE_NAME.fullmatch(segments[0]):
            raise ValueError(
                "name the primary after the sentinels, and nothing more "
                "(redis+sentinel://h:26379,h:26379/mymaster)"
            )
        return RedisTarget(scheme, endpoints, 0, segments[0])
    if len(endpoints) > 1 and scheme != "redis+cluster":
        raise ValueError(
            f"{scheme}:// takes one host; several are for redis+sentinel or redis+cluster"
        )
    if len(segments) > 1:
        raise ValueError(f"the path {('/' + path)!r} is not /<database>")
    db_text = segments[0] if segments else ""
    if db_text and (not db_text.isdigit() or int(db_text) > MAX_REDIS_DB):
        raise ValueError(f"database {db_text!r} is not a number from 0 to {MAX_REDIS_DB}")
    db = int(db_text) if db_text else 0
    if scheme == "redis+cluster" and db != 0:
        raise ValueError("Redis Cluster has only database 0")
    return RedisTarget(scheme, endpoints, db, None)
