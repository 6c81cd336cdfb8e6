"""Real signing keys and tokens for the identity tests: keys made with ``cryptography``,
tokens signed with PyJWT, and the hostile ones built by hand (PyJWT refuses to make them)."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

AUDIENCE = "gatehouse-api"
ISSUER = "https://idp.example.com/"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private: Any
    public_jwk: dict[str, Any]

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def rsa_key(kid: str, algorithm: str = "RS256") -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return SigningKey(kid, algorithm, private, {**jwk, "kid": kid, "use": "sig"})


def ec_key(kid: str) -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return SigningKey(kid, "ES256", private, {**jwk, "kid": kid})


def ed25519_key(kid: str) -> SigningKey:
    private = ed25519.Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return SigningKey(kid, "EdDSA", private, {**jwk, "kid": kid})


def jwks(*keys: SigningKey) -> str:
    return json.dumps({"keys": [key.public_jwk for key in keys]})


def claims(sub: str = "alice", **changes: Any) -> dict[str, Any]:
    """Claims that pass every check, changed by ``changes`` (None removes a claim)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": sub,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "nbf": now - 5,
        "exp": now + 600,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def sign(key: SigningKey, payload: dict[str, Any], kid: str | None = None) -> str:
    return jwt.encode(
        payload, key.private, algorithm=key.algorithm, headers={"kid": kid or key.kid}
    )


def _segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_segment(value: dict[str, Any]) -> str:
    return _segment(json.dumps(value).encode())


def unsigned(payload: dict[str, Any], kid: str) -> str:
    """``alg: none``: a token anyone can make, with an empty signature."""
    return f"{_json_segment({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_json_segment(payload)}."


def hmac_with_public_key(key: SigningKey, payload: dict[str, Any]) -> str:
    """HS256 keyed with the public key's PEM bytes: the classic algorithm confusion."""
    signing_input = (
        f"{_json_segment({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid})}.{_json_segment(payload)}"
    )
    mac = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_segment(mac)}"


def bearer(token: str) -> bytes:
    return b"Bearer " + token.encode()


# The test layers' identity provider: every ``ApiServer`` trusts it (``identity_env``), so
# a test wanting a budget of its own for a client presents a token signed for that client
# (``client_authorization``), as a real client would; an invented token buys nothing.


@functools.cache
def test_identity_provider() -> SigningKey:
    return rsa_key("gatehouse-tests")


@functools.cache
def identity_env() -> dict[str, str]:
    """The variables that make a gatehouse process trust ``test_identity_provider``."""
    directory = Path(os.environ.get("TMPDIR", tempfile.gettempdir()))
    path = directory / f"gatehouse-test-jwks-{os.getpid()}.json"
    path.write_text(jwks(test_identity_provider()))
    return {
        "APP_RATE_LIMIT_JWKS_FILE": str(path),
        "APP_RATE_LIMIT_JWT_AUDIENCE": AUDIENCE,
        "APP_RATE_LIMIT_JWT_ISSUER": ISSUER,
    }


def client_authorization(client: str) -> str:
    """An Authorization value verified as subject ``client``: a budget of its own."""
    return "Bearer " + sign(test_identity_provider(), claims(client, exp=int(time.time()) + 3600))


def subject_key(client: str) -> str:
    """The rate-limit client key of a token verified as subject ``client``."""
    named = hashlib.sha256(f"{ISSUER}\x00{client}".encode()).hexdigest()[:32]
    return f"sub:{named}"
