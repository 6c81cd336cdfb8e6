"""Who a request is counted against: verified JWT subject, known API key, else the IP.

Every token here is real: keys made with ``cryptography``, tokens signed with PyJWT,
the hostile ones (``alg: none``, HS256 keyed with the public key) built by hand.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gatehouse.ratelimit.identity import (
    MAX_FAILED_TOKENS,
    ApiKeys,
    IdentityResolver,
    JwksKeys,
    TokenVerifier,
    fetch_url,
    parse_algorithms,
    parse_api_key_digests,
    parse_jwks,
)
from gatehouse.ratelimit.keys import address_key
from gatehouse.settings import ConfigError, load_settings
from tests.jwt_keys import (
    AUDIENCE,
    ISSUER,
    SigningKey,
    bearer,
    claims,
    ec_key,
    ed25519_key,
    hmac_with_public_key,
    jwks,
    rsa_key,
    sign,
    unsigned,
)
from tests.unit.conftest import make_client

CLIENT = ("198.51.100.9", 40000)
SCOPE = {"type": "http", "headers": [], "client": CLIENT}
IP_KEY = address_key(SCOPE)
API_KEY_HEADER = "X-API-Key"


@pytest.fixture(scope="module")
def rsa() -> SigningKey:
    return rsa_key("rsa-1")


@pytest.fixture(scope="module")
def ec() -> SigningKey:
    return ec_key("ec-1")


@pytest.fixture(scope="module")
def ed() -> SigningKey:
    return ed25519_key("ed-1")


@pytest.fixture(scope="module")
def impostor() -> SigningKey:
    """Another RSA key claiming the trusted key's kid."""
    return rsa_key("rsa-1")


class CountingVerifier(TokenVerifier):
    """Counts the signature checks it really makes (the caches avoid the rest)."""

    checks = 0

    def _verify(self, token: bytes) -> tuple[str, float] | None:
        self.checks += 1
        return super()._verify(token)


def verifier_for(*keys: SigningKey, issuer: str | None = ISSUER) -> CountingVerifier:
    document = jwks(*keys)
    key_set = JwksKeys(lambda: document.encode(), initial=parse_jwks(document))
    return CountingVerifier(key_set, audience=AUDIENCE, issuer=issuer)


def key_for(resolver: IdentityResolver, authorization: bytes | None, *headers) -> str:
    scope = {**SCOPE, "headers": [(b"authorization", authorization), *headers]}
    return resolver.key(scope, authorization)


# JWT ---------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["rsa", "ec", "ed"])
def test_a_valid_token_is_counted_by_its_subject(request, which):
    key = request.getfixturevalue(which)
    resolver = IdentityResolver(verifier_for(key))
    counted = key_for(resolver, bearer(sign(key, claims("alice"))))
    assert counted.startswith("sub:")
    assert counted != IP_KEY
    assert "alice" not in counted
    assert len(counted) <= 40


def test_tokens_reissued_to_one_subject_share_one_budget(rsa, ec):
    resolver = IdentityResolver(verifier_for(rsa, ec))
    first = key_for(resolver, bearer(sign(rsa, claims("alice", jti="1"))))
    second = key_for(
        resolver, bearer(sign(ec, claims("alice", jti="2", exp=int(time.time()) + 60)))
    )
    bob = key_for(resolver, bearer(sign(rsa, claims("bob"))))
    assert first == second
    assert bob != first


def test_one_subject_of_two_issuers_is_two_clients(rsa):
    resolver = IdentityResolver(verifier_for(rsa, issuer=None))
    here = key_for(resolver, bearer(sign(rsa, claims("alice"))))
    there = key_for(resolver, bearer(sign(rsa, claims("alice", iss="https://other.example/"))))
    assert here != there


def _bad_tokens(rsa: SigningKey, impostor: SigningKey) -> dict[str, str]:
    now = int(time.time())
    huge = "x" * 20_000
    return {
        "expired": sign(rsa, claims(exp=now - 3600, nbf=now - 7200, iat=now - 7200)),
        "not yet valid": sign(rsa, claims(nbf=now + 3600)),
        "wrong audience": sign(rsa, claims(aud="another-service")),
        "no audience": sign(rsa, claims(aud=None)),
        "wrong issuer": sign(rsa, claims(iss="https://evil.example/")),
        "no expiry": sign(rsa, claims(exp=None)),
        "no subject": sign(rsa, claims(sub=None)),
        "empty subject": sign(rsa, claims(sub="")),
        "wrong key, same kid": sign(impostor, claims()),
        "unknown kid": sign(rsa, claims(), kid="not-in-the-jwks"),
        "alg none": unsigned(claims(), rsa.kid),
        "HS256 keyed with the public key": hmac_with_public_key(rsa, claims()),
        "garbage": "not.a.token",
        "three dots of nothing": "..",
        "huge": f"{huge}.{huge}.{huge}",
        "tampered payload": _tampered(sign(rsa, claims("alice")), sign(rsa, claims("mallory"))),
    }


def _tampered(genuine: str, other: str) -> str:
    header, _, signature = genuine.split(".")
    return f"{header}.{other.split('.')[1]}.{signature}"


def test_every_failing_token_counts_by_the_ip(rsa, impostor):
    resolver = IdentityResolver(verifier_for(rsa))
    for reason, token in _bad_tokens(rsa, impostor).items():
        assert key_for(resolver, bearer(token)) == IP_KEY, reason
    # The same checks do pass a good token: the refusals above are the claims' doing.
    assert key_for(resolver, bearer(sign(rsa, claims()))) != IP_KEY


@pytest.mark.parametrize(
    "authorization",
    [b"Basic YWxpY2U6cw==", b"Bearer", b"Bearer ", b"bearer", b"Token abc.def.ghi", b"\xff\x00"],
)
def test_anything_but_a_bearer_jwt_counts_by_the_ip(rsa, authorization):
    resolver = IdentityResolver(verifier_for(rsa))
    assert key_for(resolver, authorization) == IP_KEY


def test_the_bearer_scheme_is_case_insensitive(rsa):
    resolver = IdentityResolver(verifier_for(rsa))
    token = sign(rsa, claims())
    assert key_for(resolver, b"bearer " + token.encode()) == key_for(resolver, bearer(token))


def test_invented_tokens_from_one_ip_all_share_the_ips_budget(rsa):
    resolver = IdentityResolver(verifier_for(rsa))
    keys = {key_for(resolver, bearer(f"{secrets.token_urlsafe(16)}.x.y")) for _ in range(200)}
    keys |= {
        key_for(resolver, bearer(sign(rsa, claims(), kid=secrets.token_hex(4)))) for _ in range(20)
    }
    assert keys == {IP_KEY}


def test_a_verified_token_is_checked_once_until_it_expires(rsa):
    now = [time.time()]
    verifier = verifier_for(rsa)
    verifier.clock = lambda: now[0]
    token = bearer(sign(rsa, claims(exp=int(now[0]) + 60)))
    keys = {verifier.subject_key(token) for _ in range(50)}
    assert len(keys) == 1 and None not in keys
    assert verifier.checks == 1
    now[0] += 60 + verifier.leeway - 1  # still inside exp and the leeway: from the cache
    verifier.subject_key(token)
    assert verifier.checks == 1
    now[0] += 2  # past them: the cache entry is gone, the token is checked again
    verifier.subject_key(token)
    assert verifier.checks == 2


def test_a_bad_token_replayed_costs_one_check(rsa, impostor):
    verifier = verifier_for(rsa)
    token = bearer(sign(impostor, claims()))
    assert all(verifier.subject_key(token) is None for _ in range(50))
    assert verifier.checks == 1


def test_the_failure_cache_is_bounded(rsa):
    verifier = verifier_for(rsa)
    for n in range(MAX_FAILED_TOKENS + 50):
        verifier.subject_key(bearer(f"{n}.x.y"))
    assert len(verifier.failed) == MAX_FAILED_TOKENS


def test_an_unknown_kid_asks_for_a_refresh_and_a_new_key_then_verifies(tmp_path, rsa, ec):
    path = tmp_path / "jwks.json"
    path.write_text(jwks(rsa))
    keys = JwksKeys(path.read_bytes, initial=parse_jwks(path.read_text()))
    verifier = TokenVerifier(keys, audience=AUDIENCE, issuer=ISSUER)
    token = bearer(sign(ec, claims()))
    assert verifier.subject_key(token) is None
    assert keys._wanted.is_set()  # the background job is woken; the request did not wait
    keys._wanted.clear()
    assert asyncio.run(keys.refresh()) is False  # fetched before the IdP published it
    assert verifier.subject_key(token) is None
    assert keys._wanted.is_set()  # the next request asks again: an unknown kid is not cached

    path.write_text(jwks(rsa, ec))  # the IdP rotates: a new kid appears
    assert asyncio.run(keys.refresh()) is True
    assert verifier.subject_key(token) is not None  # the failure was forgotten with the old keys


def test_a_failed_refresh_keeps_the_keys(tmp_path, rsa):
    path = tmp_path / "jwks.json"
    path.write_text(jwks(rsa))
    keys = JwksKeys(path.read_bytes, initial=parse_jwks(path.read_text()))
    verifier = TokenVerifier(keys, audience=AUDIENCE, issuer=ISSUER)
    token = bearer(sign(rsa, claims()))
    for broken in ('{"keys": [', ""):
        path.write_text(broken)
        assert asyncio.run(keys.refresh()) is False
        assert verifier.subject_key(token) is not None
    path.unlink()
    assert asyncio.run(keys.refresh()) is False
    assert len(keys.keys) == 1


def test_a_flood_of_unknown_kids_fetches_at_most_once_per_minimum_interval(rsa):
    document = jwks(rsa).encode()

    async def flood() -> int:
        keys = JwksKeys(lambda: document, refresh_interval=60, min_refresh_interval=0.25)
        runner = asyncio.create_task(keys.run())
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            keys.request_refresh()
            await asyncio.sleep(0.001)
        runner.cancel()
        return keys.fetches

    fetches = asyncio.run(flood())
    # One at start, then at most one per 0.25 s over one second (hundreds were asked).
    assert 2 <= fetches <= 6


# API keys ------------------------------------------------------------------------------


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_key_resolver(*known: str, tokens: TokenVerifier | None = None) -> IdentityResolver:
    return IdentityResolver(tokens, ApiKeys(API_KEY_HEADER, [digest(k) for k in known]))


def test_a_known_api_key_is_counted_by_its_digest_never_the_key():
    raw = "gh_live_" + secrets.token_hex(16)
    resolver = api_key_resolver(raw)
    counted = resolver.key({**SCOPE, "headers": [(b"x-api-key", raw.encode())]}, None)
    assert counted == "apikey:" + digest(raw)[:32]
    assert raw not in counted


@pytest.mark.parametrize("sent", ["rotated-key", "", "k" * 5000])
def test_an_unknown_api_key_counts_by_the_ip(sent):
    resolver = api_key_resolver("the-real-key")
    assert resolver.key({**SCOPE, "headers": [(b"x-api-key", sent.encode())]}, None) == IP_KEY


def test_rotating_api_keys_from_one_ip_share_the_ips_budget():
    resolver = api_key_resolver("the-real-key")
    keys = {
        resolver.key({**SCOPE, "headers": [(b"x-api-key", secrets.token_bytes(24))]}, None)
        for _ in range(100)
    }
    assert keys == {IP_KEY}


def test_a_verified_token_comes_before_an_api_key_and_a_bad_one_falls_through(rsa):
    resolver = api_key_resolver("the-real-key", tokens=verifier_for(rsa))
    api_key = (b"x-api-key", b"the-real-key")
    good = key_for(resolver, bearer(sign(rsa, claims())), api_key)
    bad = key_for(resolver, bearer(unsigned(claims(), rsa.kid)), api_key)
    assert good.startswith("sub:")
    assert bad.startswith("apikey:")


def test_the_digest_file_grammar():
    text = (
        f"# keys of the billing team\n{digest('a').upper()}\n\n{digest('b')}  # rotated 2026-05\n"
    )
    assert parse_api_key_digests(text) == {digest("a"), digest("b")}
    for bad in ("", "# nothing\n", "the-raw-key\n", digest("a")[:-1]):
        with pytest.raises(ValueError):
            parse_api_key_digests(bad)


# The JWKS and algorithm grammar --------------------------------------------------------


def test_jwks_documents_that_give_no_key_are_refused(rsa):
    private = {**rsa.public_jwk, "d": "AQAB"}
    for document in (
        "",
        '{"keys": [',
        "[]",
        '{"keys": []}',
        '{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}',
        jwks(rsa).replace('"sig"', '"enc"'),
        '{"keys": [' + ",".join([json_of(rsa.public_jwk)] * 2) + "]}",
        '{"keys": [' + json_of(private) + "]}",
    ):
        with pytest.raises(ValueError):
            parse_jwks(document)


def json_of(value: object) -> str:
    return json.dumps(value)


@pytest.mark.parametrize("name", ["none", "HS256", "hs512", "RS1"])
def test_symmetric_and_none_algorithms_are_refused(name):
    with pytest.raises(ValueError):
        parse_algorithms([name])


def test_a_key_outside_the_allowlist_verifies_nothing(rsa, ec):
    document = jwks(rsa, ec)
    keys = JwksKeys(lambda: document.encode(), initial=parse_jwks(document, ["ES256"]))
    verifier = TokenVerifier(keys, audience=AUDIENCE, algorithms=["ES256"])
    assert verifier.subject_key(bearer(sign(rsa, claims()))) is None
    assert verifier.subject_key(bearer(sign(ec, claims()))) is not None


# Settings --------------------------------------------------------------------------------


def config_error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as raised:
        load_settings(**overrides)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_jwks_settings_load(tmp_path, rsa):
    path = tmp_path / "jwks.json"
    path.write_text(jwks(rsa))
    settings = load_settings(rate_limit_jwks_file=str(path), rate_limit_jwt_audience=AUDIENCE)
    assert settings.rate_limit_jwks_file == str(path)


@pytest.mark.parametrize(
    "content", ["", '{"keys": [{"kty": "RSA", "n": "', "{}", '{"keys": []}', "not json"]
)
def test_an_empty_half_written_or_invalid_jwks_file_stops_start_up(tmp_path, content):
    path = tmp_path / "jwks.json"
    path.write_text(content)
    message = config_error(rate_limit_jwks_file=str(path), rate_limit_jwt_audience=AUDIENCE)
    assert "APP_RATE_LIMIT_JWKS_FILE" in message


def test_a_missing_jwks_file_stops_start_up(tmp_path):
    message = config_error(
        rate_limit_jwks_file=str(tmp_path / "absent.json"), rate_limit_jwt_audience=AUDIENCE
    )
    assert "APP_RATE_LIMIT_JWKS_FILE" in message


def test_a_jwks_needs_an_audience(tmp_path, rsa):
    path = tmp_path / "jwks.json"
    path.write_text(jwks(rsa))
    assert "APP_RATE_LIMIT_JWT_AUDIENCE" in config_error(rate_limit_jwks_file=str(path))
    assert "APP_RATE_LIMIT_JWT_AUDIENCE" in config_error(
        rate_limit_jwks_url="https://idp.example.com/jwks"
    )


def test_a_jwks_file_and_url_together_are_refused(tmp_path, rsa):
    path = tmp_path / "jwks.json"
    path.write_text(jwks(rsa))
    message = config_error(
        rate_limit_jwks_file=str(path),
        rate_limit_jwks_url="https://idp.example.com/jwks",
        rate_limit_jwt_audience=AUDIENCE,
    )
    assert "APP_RATE_LIMIT_JWKS_URL" in message


@pytest.mark.parametrize(
    "url",
    ["http://idp.example.com/jwks", "ftp://idp.example.com/jwks", "https://u:p@idp.example.com/k"],
)
def test_a_jwks_url_must_be_https_unless_loopback(url):
    message = config_error(rate_limit_jwks_url=url, rate_limit_jwt_audience=AUDIENCE)
    assert "APP_RATE_LIMIT_JWKS_URL" in message


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/jwks", "http://[::1]/jwks"])
def test_plain_http_to_loopback_is_allowed(url):
    settings = load_settings(rate_limit_jwks_url=url, rate_limit_jwt_audience=AUDIENCE)
    assert settings.rate_limit_jwks_url == url


@pytest.mark.parametrize("value", ["HS256", "none", "RS256,none"])
def test_symmetric_algorithms_stop_start_up(value):
    assert "APP_RATE_LIMIT_JWT_ALGORITHMS" in config_error(rate_limit_jwt_algorithms=value)


def test_api_key_settings(tmp_path):
    path = tmp_path / "digests"
    path.write_text(digest("k1") + "\n")
    settings = load_settings(
        rate_limit_api_key_header=API_KEY_HEADER, rate_limit_api_keys_file=str(path)
    )
    assert settings.rate_limit_api_keys_file == str(path)
    raw = tmp_path / "raw"
    raw.write_text("the-raw-key\n")
    assert "APP_RATE_LIMIT_API_KEYS_FILE" in config_error(
        rate_limit_api_key_header=API_KEY_HEADER, rate_limit_api_keys_file=str(raw)
    )
    assert "APP_RATE_LIMIT_API_KEYS_FILE" in config_error(rate_limit_api_key_header=API_KEY_HEADER)
    assert "APP_RATE_LIMIT_API_KEY_HEADER" in config_error(
        rate_limit_api_key_header="Authorization", rate_limit_api_keys_file=str(path)
    )
    assert "APP_RATE_LIMIT_API_KEY_HEADER" in config_error(
        rate_limit_api_key_header="X API Key", rate_limit_api_keys_file=str(path)
    )


@pytest.mark.anyio
async def test_the_service_counts_a_verified_subject_apart_from_its_ip(tmp_path: Path, rsa):
    """In process, the whole edge: a token's subject has its own budget; invented
    tokens share the anonymous one."""
    path = tmp_path / "jwks.json"
    path.write_text(jwks(rsa))
    token = sign(rsa, claims("alice"))
    async with make_client(
        rate_limit_search="2/minute",
        rate_limit_jwks_file=str(path),
        rate_limit_jwt_audience=AUDIENCE,
        rate_limit_jwt_issuer=ISSUER,
    ) as client:
        invented = []
        for _ in range(3):
            headers = {"authorization": f"Bearer {secrets.token_hex(8)}.a.b"}
            invented.append((await client.get("/search?q=x", headers=headers)).status_code)
        anonymous = (await client.get("/search?q=x")).status_code
        verified = []
        for _ in range(3):
            headers = {"authorization": f"Bearer {token}"}
            verified.append((await client.get("/search?q=x", headers=headers)).status_code)
    assert invented == [200, 200, 429]
    assert anonymous == 429
    assert verified == [200, 200, 429]


# Fetching a JWKS over HTTP (a real server on 127.0.0.1) -----------------------------------


@pytest.fixture
def idp(rsa) -> Iterator[str]:
    """An identity provider on 127.0.0.1: /jwks, a redirect to it, and one to plain http
    on a non-loopback host (where keys must never come from)."""
    document = jwks(rsa).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            targets = {
                "/moved": f"http://127.0.0.1:{self.server.server_address[1]}/jwks",
                "/downgraded": "http://192.0.2.1/jwks",
            }
            if self.path in targets:
                self.send_response(302)
                self.send_header("location", targets[self.path])
                self.send_header("content-length", "0")
                self.end_headers()
                return
            status, body = (200, document) if self.path == "/jwks" else (404, b"{}")
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_jwks_is_fetched_over_http_and_redirects_only_where_keys_may_come_from(idp, rsa):
    assert len(parse_jwks(fetch_url(f"{idp}/jwks"))) == 1
    assert len(parse_jwks(fetch_url(f"{idp}/moved"))) == 1
    with pytest.raises(OSError, match="refused redirect"):
        fetch_url(f"{idp}/downgraded")
    with pytest.raises(OSError):
        fetch_url(f"{idp}/absent")
