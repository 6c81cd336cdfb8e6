"""Who is counted, in the real process with the real Redis: a verified JWT subject has
its own budget, anything unverified counts by the IP, and JWKS keys are fetched from a
real HTTP server (on 127.0.0.1) and picked up again after the identity provider rotates."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.helpers import wait_until
from tests.jwt_keys import AUDIENCE, ISSUER, bearer, claims, jwks, rsa_key, sign


def subject_key(sub: str) -> bytes:
    named = hashlib.sha256(f"{ISSUER}\x00{sub}".encode()).hexdigest()[:32]
    return f"sub:{named}".encode()


def counted_clients(redis_db) -> set[bytes]:
    """The clients with a count in Redis: the part of each key inside the hash tag."""
    return {
        key.split(b"{", 1)[1].split(b"}", 1)[0] for key in redis_db.client().keys("gatehouse:*")
    }


def statuses(url: str, count: int, authorization: bytes | None = None) -> list[int]:
    headers = {"authorization": authorization.decode()} if authorization else {}
    return [httpx.get(f"{url}/search?q=x", headers=headers).status_code for _ in range(count)]


def test_rotating_tokens_buy_nothing_and_a_verified_subject_has_its_own_budget(
    api_server, redis_db, fresh_minute, tmp_path
):
    key = rsa_key("live-1")
    path = tmp_path / "jwks.json"
    path.write_text(jwks(key))
    server = api_server(
        {
            "APP_REDIS_URL": redis_db.url,
            "APP_RATE_LIMIT_SEARCH": "3/minute",
            "APP_RATE_LIMIT_JWKS_FILE": str(path),
            "APP_RATE_LIMIT_JWT_AUDIENCE": AUDIENCE,
            "APP_RATE_LIMIT_JWT_ISSUER": ISSUER,
        }
    )
    rotating = [
        httpx.get(
            f"{server.url}/search?q=x",
            headers={"authorization": f"Bearer {secrets.token_urlsafe(24)}.e30.{n}"},
        ).status_code
        for n in range(5)
    ]
    # Refused at the same count as a client sending none: the budget is the IP's.
    assert rotating == [200, 200, 200, 429, 429]
    assert statuses(server.url, 1) == [429]
    token = bearer(sign(key, claims("alice")))
    assert statuses(server.url, 4, token) == [200, 200, 200, 429]
    assert counted_clients(redis_db) == {b"ip:127.0.0.1", subject_key("alice")}


class _JwksServer:
    """A JWKS endpoint on 127.0.0.1 whose document the test replaces; counts fetches."""

    def __init__(self, document: str) -> None:
        self.document = document
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = owner.document.encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"


@pytest.fixture
def jwks_server() -> Iterator[_JwksServer]:
    first = rsa_key("idp-2026-05")
    server = _JwksServer(jwks(first))
    server.first_key = first  # type: ignore[attr-defined]
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_keys_from_a_jwks_url_and_a_rotation_picked_up(api_server, redis_db, jwks_server):
    first = jwks_server.first_key
    min_refresh = 0.5
    server = api_server(
        {
            "APP_REDIS_URL": redis_db.url,
            "APP_RATE_LIMIT_SEARCH": "1000/minute",
            "APP_RATE_LIMIT_JWKS_URL": jwks_server.url,
            "APP_RATE_LIMIT_JWKS_FILE": "",  # not the tests' own provider: this one
            "APP_RATE_LIMIT_JWKS_REFRESH_INTERVAL": "300",
            "APP_RATE_LIMIT_JWKS_MIN_REFRESH_INTERVAL": str(min_refresh),
            "APP_RATE_LIMIT_JWT_AUDIENCE": AUDIENCE,
            "APP_RATE_LIMIT_JWT_ISSUER": ISSUER,
        }
    )
    alice = bearer(sign(first, claims("alice")))
    wait_until(
        lambda: (
            statuses(server.url, 1, alice) and subject_key("alice") in counted_clients(redis_db)
        ),
        timeout=10,
        what="the JWKS fetched at start-up to verify alice's token",
    )

    # The IdP starts signing with a key the service has not fetched yet.
    second = rsa_key("idp-2026-06")
    bob = bearer(sign(second, claims("bob")))
    started = time.monotonic()
    for _ in range(20):  # an unknown kid: counted by IP, and never a fetch per request
        statuses(server.url, 1, bob)
    assert subject_key("bob") not in counted_clients(redis_db)
    assert b"ip:127.0.0.1" in counted_clients(redis_db)

    jwks_server.document = jwks(first, second)  # the new key is published
    wait_until(
        lambda: statuses(server.url, 1, bob) and subject_key("bob") in counted_clients(redis_db),
        timeout=10,
        what="the rotated key picked up after a refresh",
    )
    elapsed = time.monotonic() - started
    # Dozens of unknown-kid requests, yet at most one fetch per minimum interval.
    assert jwks_server.fetches <= 2 + elapsed / min_refresh
    assert statuses(server.url, 1, alice) == [200]  # the old key still verifies
