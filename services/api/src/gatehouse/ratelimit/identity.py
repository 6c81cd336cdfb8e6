"""Who a request is counted against: a verified JWT subject, a known API key, else the IP.

The order, first match wins:

1. ``Authorization: Bearer <jwt>`` whose signature verifies with a key of the configured
   JWKS (a file, or a URL fetched in the background), with an allowed asymmetric
   algorithm, and whose ``exp``, ``nbf``, ``aud`` (and ``iss`` when configured) hold:
   the key is a hash of issuer and subject, so every token issued to one subject
   shares one budget.
2. The API-key header (``APP_RATE_LIMIT_API_KEY_HEADER``) carrying a key whose SHA-256
   digest is in the configured set: ``apikey:<digest prefix>``.
3. Anything else, including every token or key that fails any check: the client's
   address (``keys.address_key``).

Trust assumption: nothing unverified ever gets a budget of its own. A key per raw
credential would hand a client inventing tokens a fresh budget per token, so a bad
credential is counted exactly like no credential at all, against the IP.

Verification (a signature check, 50-100 µs) is cached by the token's SHA-256: a valid
token until its ``exp``, a failing one for ``FAILURE_TTL`` seconds, both bounded in
size, so neither a busy client nor one replaying a bad token costs a check per request.
Keys are never fetched on the request path: an unknown ``kid`` asks the background
refresher for a fetch (rate-limited) and counts by IP meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import ssl
import time
import urllib.request
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
from starlette.types import Scope

from .keys import address_key

# Asymmetric algorithms only: with a symmetric one (HS*), a public key from the JWKS
# would become the HMAC secret anyone can sign with; ``none`` signs nothing.
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "ES256K",
    "EdDSA",
)
DEFAULT_ALGORITHMS = ("RS256", "PS256", "ES256", "ES384", "EdDSA")
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHM_BY_CURVE = {
    "P-256": "ES256",
    "P-384": "ES384",
    "P-521": "ES512",
    "secp256k1": "ES256K",
}

# An Authorization value longer than this is never parsed (real JWTs are 1-4 KiB).
MAX_TOKEN_BYTES = 8192
MAX_API_KEY_BYTES = 1024
# A JWKS document larger than this is refused (an IdP's holds a few keys: a few KiB).
MAX_JWKS_BYTES = 1024 * 1024
# Cache bounds: the oldest entry makes room when full.
MAX_VERIFIED_TOKENS = 10_000
MAX_FAILED_TOKENS = 10_000
# Seconds a failing token stays failed without a new check (the key set changing
# clears it sooner: a token with a kid not yet fetched may verify after a refresh).
FAILURE_TTL = 30.0
JWKS_FETCH_TIMEOUT = 5.0
_BEARER = b"bearer"


# Parsing (also run by the settings at start-up) ------------------------------------


@dataclass(frozen=True)
class VerificationKey:
    """One JWKS key: the public key and the algorithms it may verify."""

    kid: str | None
    key: Any  # a ``cryptography`` public key object
    algorithms: frozenset[str]


@dataclass(frozen=True)
class KeySet:
    """The signing keys of one JWKS document, by ``kid``."""

    by_kid: dict[str, VerificationKey]
    # A key without a kid is only usable when it is the document's only key.
    only: VerificationKey | None
    fingerprint: str  # the document's keys, canonical: equal for the same keys

    def find(self, kid: object) -> VerificationKey | None:
        if isinstance(kid, str):
            return self.by_kid.get(kid)
        return self.only if kid is None else None

    def __len__(self) -> int:
        return len(self.by_kid) or (1 if self.only else 0)


EMPTY_KEY_SET = KeySet({}, None, "")


def parse_jwks(text: str | bytes, algorithms: Collection[str] = DEFAULT_ALGORITHMS) -> KeySet:
    """The signing keys of a JWKS document; ValueError when none is usable.

    Keys for encryption (``use: enc``) and symmetric keys (``kty: oct``) are skipped:
    neither may verify a signature here. A key whose declared or implied algorithms
    are all outside ``algorithms`` is skipped too.
    """
    if not text or not text.strip():
        raise ValueError("the JWKS document is empty")
    if len(text) > MAX_JWKS_BYTES:
        raise ValueError(f"the JWKS document is larger than {MAX_JWKS_BYTES} bytes")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError("the JWKS document is not JSON (half-written?)") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('the JWKS document has no "keys" list')
    keys: list[VerificationKey] = []
    canonical: list[str] = []
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        usable = _key_algorithms(jwk, algorithms)
        if not usable:
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise ValueError("a key's kid is not a string")
        try:
            public = jwt.PyJWK(jwk, algorithm=min(usable)).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as error:
            raise ValueError(f"key {kid!r} does not load: {error}") from None
        if hasattr(public, "private_bytes"):
            raise ValueError(f"key {kid!r} is a private key; publish only public keys")
        keys.append(VerificationKey(kid, public, usable))
        canonical.append(json.dumps(jwk, sort_keys=True))
    if not keys:
        raise ValueError(
            "the JWKS document has no signing key for the allowed algorithms"
            f" ({', '.join(sorted(algorithms))})"
        )
    by_kid: dict[str, VerificationKey] = {}
    for key in keys:
        if key.kid is None:
            continue
        if key.kid in by_kid:
            raise ValueError(f"two keys have the kid {key.kid!r}")
        by_kid[key.kid] = key
    only = keys[0] if len(keys) == 1 else None
    if only is None and len(by_kid) != len(keys):
        raise ValueError("with several keys, every key needs a kid")
    return KeySet(by_kid, only, "\n".join(sorted(canonical)))


def _key_algorithms(jwk: dict[str, Any], allowed: Collection[str]) -> frozenset[str]:
    """The allowed algorithms ``jwk`` may verify: its ``alg``, else its key type's."""
    declared = jwk.get("alg")
    kty = jwk.get("kty")
    if isinstance(declared, str):
        candidates: Iterable[str] = (declared,)
    elif kty == "RSA":
        candidates = _RSA_ALGORITHMS
    elif kty == "EC":
        # The curve fixes the algorithm: ES256 is P-256, never another curve.
        curve = _EC_ALGORITHM_BY_CURVE.get(str(jwk.get("crv")))
        candidates = (curve,) if curve else ()
    elif kty == "OKP" and jwk.get("crv") == "Ed25519":
        candidates = ("EdDSA",)
    else:
        candidates = ()  # "oct" (symmetric) and anything unknown
    return frozenset(
        name for name in candidates if name in allowed and name in ASYMMETRIC_ALGORITHMS
    )


def parse_algorithms(names: Iterable[str]) -> tuple[str, ...]:
    """The JWT algorithm allowlist; ValueError for ``none``, HS* or an unknown name."""
    chosen: list[str] = []
    for name in names:
        if name not in ASYMMETRIC_ALGORITHMS:
            if name.lower() == "none" or name.upper().startswith("HS"):
                raise ValueError(
                    f"{name!r} is refused: only asymmetric algorithms verify tokens"
                    " (none signs nothing; HS* would turn a public key into a shared secret)"
                )
            raise ValueError(
                f"{name!r} is not a JWT algorithm ({', '.join(ASYMMETRIC_ALGORITHMS)})"
            )
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ValueError("give at least one algorithm")
    return tuple(chosen)


def parse_api_key_digests(text: str) -> frozenset[str]:
    """SHA-256 hex digests, one a line (``#`` comments and blank lines allowed)."""
    digests: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip().lower()
        if not line:
            continue
        if len(line) != 64 or any(c not in "0123456789abcdef" for c in line):
            raise ValueError(
                f"line {number} is not a SHA-256 hex digest (64 hex digits);"
                " the file holds digests of the keys, never the keys"
            )
        digests.add(line)
    if not digests:
        raise ValueError("the file holds no key digest")
    return frozenset(digests)


def check_jwks_url(url: str) -> str:
    """``url`` when it may serve keys: https, or http to a loopback host only."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ValueError("the URL carries credentials; a JWKS is public")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("keys must come over https (plain http only for a loopback host)")
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Keys, refreshed in the background --------------------------------------------------


def read_file(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read(MAX_JWKS_BYTES + 1)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL the settings would take: an https JWKS URL
    redirected to plain http would let anyone on the path hand the service its keys."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        try:
            check_jwks_url(newurl)
        except ValueError as error:
            raise OSError(f"refused redirect to {newurl[:100]!r}: {error}") from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_url(url: str, timeout: float = JWKS_FETCH_TIMEOUT) -> bytes:
    """The JWKS document at ``url`` (blocking: run it in a thread)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 (https or loopback http, checked at start-up)
    handlers: list[urllib.request.BaseHandler] = [_CheckedRedirects()]
    if url.startswith("https:"):
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context()))
    opener = urllib.request.build_opener(*handlers)
    with opener.open(request, timeout=timeout) as response:
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
        body: bytes = response.read(MAX_JWKS_BYTES + 1)
        return body


class JwksKeys:
    """The current JWKS keys, and the background job that keeps them fresh.

    ``run`` fetches at once, then every ``refresh_interval`` seconds, and sooner when a
    request met an unknown kid (``request_refresh``); never more often than once per
    ``min_refresh_interval``, so a flood of invented kids cannot make the service
    hammer the identity provider. A failed fetch or a document that does not parse
    keeps the keys there were.
    """

    def __init__(
        self,
        fetch: Callable[[], bytes],
        algorithms: Collection[str] = DEFAULT_ALGORITHMS,
        refresh_interval: float = 300.0,
        min_refresh_interval: float = 30.0,
        initial: KeySet = EMPTY_KEY_SET,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fetch = fetch
        self.algorithms = frozenset(algorithms)
        self.refresh_interval = refresh_interval
        self.min_refresh_interval = min_refresh_interval
        self.keys = initial
        self.logger = logger or logging.getLogger("gatehouse.ratelimit")
        self.clock = clock
        self.on_change: Callable[[], None] = lambda: None
        self.last_attempt = -float("inf")
        self.fetches = 0
        self._wanted = asyncio.Event()

    def request_refresh(self) -> None:
        """Ask for a fetch soon (an unknown kid); cheap, never waits."""
        self._wanted.set()

    async def refresh(self) -> bool:
        """Fetch and parse once; True when the keys changed."""
        self.last_attempt = self.clock()
        self.fetches += 1
        try:
            document = await asyncio.to_thread(self.fetch)
            keys = parse_jwks(document, self.algorithms)
        except (OSError, ValueError) as error:
            self.logger.warning(
                "JWKS refresh failed; keeping the current keys",
                extra={"fields": {"error": str(error)[:200], "keys": len(self.keys)}},
            )
            return False
        if keys.fingerprint == self.keys.fingerprint:
            return False
        self.keys = keys
        self.logger.info("JWKS keys changed", extra={"fields": {"keys": len(keys)}})
        self.on_change()
        return True

    async def run(self) -> None:
        while True:
            self._wanted.clear()
            await self.refresh()
            with contextlib.suppress(TimeoutError):  # the interval passed: a routine fetch
                await asyncio.wait_for(self._wanted.wait(), timeout=self.refresh_interval)
            wait = self.last_attempt + self.min_refresh_interval - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)


# The resolver the limiter calls -----------------------------------------------------


# What ``_verify`` returns for a kid the key set lacks (a parse, no signature check).
_UNKNOWN_KID = ("", 0.0)


class TokenVerifier:
    """``Authorization: Bearer <jwt>`` to a subject key, or None when anything fails."""

    def __init__(
        self,
        keys: JwksKeys,
        audience: str,
        issuer: str | None = None,
        algorithms: Collection[str] = DEFAULT_ALGORITHMS,
        leeway: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.audience = audience
        self.issuer = issuer
        self.algorithms = frozenset(parse_algorithms(algorithms))
        self.leeway = leeway
        self.clock = clock
        # SHA-256 of the token -> (key, valid until) / failed until. Digests, not tokens:
        # bounded memory whatever a client sends.
        self.verified: dict[bytes, tuple[str, float]] = {}
        self.failed: dict[bytes, float] = {}
        keys.on_change = self.forget

    def forget(self) -> None:
        """New keys: verdicts made with the old ones no longer hold."""
        self.verified.clear()
        self.failed.clear()

    def subject_key(self, authorization: bytes) -> str | None:
        if len(authorization) > MAX_TOKEN_BYTES:
            return None
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != _BEARER or token.count(b".") != 2:
            return None
        digest = hashlib.sha256(token).digest()
        now = self.clock()
        verified = self.verified.get(digest)
        if verified is not None:
            if now < verified[1]:
                return verified[0]
            del self.verified[digest]
        failed_until = self.failed.get(digest)
        if failed_until is not None:
            if now < failed_until:
                return None
            del self.failed[digest]
        outcome = self._verify(token)
        if outcome is _UNKNOWN_KID:
            # Not cached: the next request with this kid asks for a refresh again, and
            # may verify once the refresher has fetched the new key.
            return None
        if outcome is None:
            if len(self.failed) >= MAX_FAILED_TOKENS:
                del self.failed[next(iter(self.failed))]
            self.failed[digest] = now + FAILURE_TTL
            return None
        key, expires = outcome
        if len(self.verified) >= MAX_VERIFIED_TOKENS:
            del self.verified[next(iter(self.verified))]
        self.verified[digest] = (key, expires + self.leeway)
        return key

    def _verify(self, token: bytes) -> tuple[str, float] | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            return None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            return None  # none, HS*, or anything not allowed: never verified
        key = self.keys.keys.find(header.get("kid"))
        if key is None:
            self.keys.request_refresh()  # perhaps a new key: fetched in the background
            return _UNKNOWN_KID
        if algorithm not in key.algorithms:
            return None
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "sub", "aud"]},
            )
        except (jwt.InvalidTokenError, jwt.InvalidKeyError, ValueError, TypeError):
            return None
        subject = claims.get("sub")
        expires = claims.get("exp")
        if not isinstance(subject, str) or not subject or not isinstance(expires, int | float):
            return None
        issuer = claims.get("iss")
        issued_by = issuer if isinstance(issuer, str) else ""
        # Issuer and subject, hashed: bounded length, and one subject of two issuers
        # stays two clients. Every token of one subject lands here: one budget.
        named = hashlib.sha256(f"{issued_by}\x00{subject}".encode()).hexdigest()[:32]
        return "sub:" + named, float(expires)


class ApiKeys:
    """Known API keys, held only as SHA-256 digests."""

    def __init__(self, header: str, digests: Collection[str]) -> None:
        self.header = header.lower().encode("latin-1")
        self.digests = frozenset(digest.lower() for digest in digests)

    def key(self, value: bytes) -> str | None:
        if not value or len(value) > MAX_API_KEY_BYTES:
            return None
        # The lookup is of the key's hash, never the key: timing can only reveal how
        # much of a digest matched, which says nothing about any key (no constant-time
        # comparison needed). Only a digest prefix reaches Redis.
        digest = hashlib.sha256(value).hexdigest()
        if digest in self.digests:
            return "apikey:" + digest[:32]
        return None


class IdentityResolver:
    """The rate-limit key of a request (the order is the module's docstring)."""

    def __init__(
        self, tokens: TokenVerifier | None = None, api_keys: ApiKeys | None = None
    ) -> None:
        self.tokens = tokens
        self.api_keys = api_keys

    def key(self, scope: Scope, authorization: bytes | None) -> str:
        """``authorization``: the request's first non-empty Authorization value."""
        if self.tokens is not None and authorization is not None:
            subject = self.tokens.subject_key(authorization)
            if subject is not None:
                return subject
        api_keys = self.api_keys
        if api_keys is not None:
            for name, value in scope["headers"]:
                if name == api_keys.header:
                    known = api_keys.key(value)
                    if known is not None:
                        return known
                    break  # only the first: a second cannot rescue a bad first
        return address_key(scope)
