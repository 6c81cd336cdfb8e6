"""Who is counted, in the chart: the JWKS from a ConfigMap, a Secret or a URL, the API-key
digests from an existing Secret, and the values that cannot work refused at render time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import API, CHART, RELEASE, Doc, helm, one, render

IDENTITY = "config.rateLimit.identity"


def _pod(docs: list[Doc]) -> Doc:
    pod: Doc = one(docs, "Deployment", API)["spec"]["template"]
    return pod


def _api(docs: list[Doc]) -> Doc:
    (container,) = [c for c in _pod(docs)["spec"]["containers"] if c["name"] == "api"]
    return container


def _config(docs: list[Doc]) -> dict[str, str]:
    data: dict[str, str] = one(docs, "ConfigMap", API)["data"]
    return data


def _env(docs: list[Doc]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _api(docs)["env"] if "value" in e}


def test_identity_is_off_by_default() -> None:
    docs = render("default")
    assert not any(name.startswith("APP_RATE_LIMIT_JW") for name in _config(docs))
    assert "APP_RATE_LIMIT_API_KEY_HEADER" not in _config(docs)
    assert "APP_RATE_LIMIT_JWKS_FILE" not in _env(docs)
    assert "APP_RATE_LIMIT_API_KEYS_FILE" not in _env(docs)
    assert "checksum/api-keys" not in _pod(docs)["metadata"]["annotations"]


@pytest.mark.parametrize("source", ["secret", "configMap"])
def test_a_jwks_file_is_mounted_from_an_existing_object(source: str) -> None:
    docs = render(
        "default",
        "--set", f"{IDENTITY}.jwt.jwksFrom.{source}=idp-jwks",
        "--set", f"{IDENTITY}.jwt.jwksFrom.key=keys.json",
        "--set", f"{IDENTITY}.jwt.audience=orders-api",
        "--set", f"{IDENTITY}.jwt.issuer=https://idp.example.com/",
    )  # fmt: skip
    assert _env(docs)["APP_RATE_LIMIT_JWKS_FILE"] == "/etc/gatehouse-jwks/keys.json"
    config = _config(docs)
    assert config["APP_RATE_LIMIT_JWT_AUDIENCE"] == "orders-api"
    assert config["APP_RATE_LIMIT_JWT_ISSUER"] == "https://idp.example.com/"
    assert config["APP_RATE_LIMIT_JWT_ALGORITHMS"] == "RS256,PS256,ES256,ES384,EdDSA"
    assert "APP_RATE_LIMIT_JWKS_URL" not in config
    mounts = {m["name"]: m for m in _api(docs)["volumeMounts"]}
    assert mounts["jwks"] == {"name": "jwks", "mountPath": "/etc/gatehouse-jwks", "readOnly": True}
    (volume,) = [v for v in _pod(docs)["spec"]["volumes"] if v["name"] == "jwks"]
    if source == "secret":
        assert volume["secret"]["secretName"] == "idp-jwks"
        items = volume["secret"]["items"]
    else:
        assert volume["configMap"]["name"] == "idp-jwks"
        items = volume["configMap"]["items"]
    assert items == [{"key": "keys.json", "path": "keys.json"}]


def test_a_jwks_url_is_configuration_only() -> None:
    docs = render(
        "default",
        "--set", f"{IDENTITY}.jwt.jwksUrl=https://idp.example.com/.well-known/jwks.json",
        "--set", f"{IDENTITY}.jwt.audience=orders-api",
        "--set", f"{IDENTITY}.jwt.minRefreshIntervalSeconds=10",
    )  # fmt: skip
    config = _config(docs)
    assert config["APP_RATE_LIMIT_JWKS_URL"] == "https://idp.example.com/.well-known/jwks.json"
    assert config["APP_RATE_LIMIT_JWKS_MIN_REFRESH_INTERVAL"] == "10"
    assert "APP_RATE_LIMIT_JWKS_FILE" not in _env(docs)
    assert not any(v["name"] == "jwks" for v in _pod(docs)["spec"]["volumes"])


def test_api_key_digests_come_from_an_existing_secret_and_a_rotation_rolls_the_pods() -> None:
    def rendered(rotation: str) -> list[Doc]:
        return render(
            "default",
            "--set", f"{IDENTITY}.apiKeys.header=X-API-Key",
            "--set", f"{IDENTITY}.apiKeys.existingSecret=orders-api-keys",
            "--set", f"{IDENTITY}.apiKeys.rotation={rotation}",
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=2) as pool:
        before, after = pool.map(rendered, ["", "2026-05-01"])
    assert _config(before)["APP_RATE_LIMIT_API_KEY_HEADER"] == "X-API-Key"
    assert _env(before)["APP_RATE_LIMIT_API_KEYS_FILE"] == "/etc/gatehouse-api-keys/api-key-digests"
    (volume,) = [v for v in _pod(before)["spec"]["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"] == {
        "secretName": "orders-api-keys",
        "items": [{"key": "api-key-digests", "path": "api-key-digests"}],
    }
    annotations = [_pod(docs)["metadata"]["annotations"] for docs in (before, after)]
    assert annotations[0]["checksum/api-keys"] != annotations[1]["checksum/api-keys"]


REFUSED = [
    ("jwks-without-audience", [f"{IDENTITY}.jwt.jwksUrl=https://idp.example.com/jwks"], "audience"),
    (
        "jwks-url-and-file",
        [
            f"{IDENTITY}.jwt.jwksUrl=https://idp.example.com/jwks",
            f"{IDENTITY}.jwt.jwksFrom.secret=idp-jwks",
            f"{IDENTITY}.jwt.audience=a",
        ],
        "not both",
    ),
    (
        "jwks-configmap-and-secret",
        [
            f"{IDENTITY}.jwt.jwksFrom.secret=a",
            f"{IDENTITY}.jwt.jwksFrom.configMap=b",
            f"{IDENTITY}.jwt.audience=a",
        ],
        "/config/rateLimit/identity/jwt/jwksFrom",
    ),
    (
        "jwks-url-plain-http",
        [f"{IDENTITY}.jwt.jwksUrl=http://idp.example.com/jwks", f"{IDENTITY}.jwt.audience=a"],
        "/config/rateLimit/identity/jwt/jwksUrl",
    ),
    (
        "algorithm-hs256",
        [f"{IDENTITY}.jwt.algorithms={{HS256}}"],
        "/config/rateLimit/identity/jwt/algorithms/0",
    ),
    (
        "algorithm-none",
        [f"{IDENTITY}.jwt.algorithms={{none}}"],
        "/config/rateLimit/identity/jwt/algorithms/0",
    ),
    ("api-key-header-without-secret", [f"{IDENTITY}.apiKeys.header=X-API-Key"], "go together"),
    (
        "api-key-header-authorization",
        [f"{IDENTITY}.apiKeys.header=Authorization", f"{IDENTITY}.apiKeys.existingSecret=k"],
        "/config/rateLimit/identity/apiKeys/header",
    ),
]


@pytest.mark.parametrize(("case", "sets", "reason"), REFUSED, ids=[r[0] for r in REFUSED])
def test_values_that_cannot_work_are_refused(case: str, sets: list[str], reason: str) -> None:
    args = [arg for value in sets for arg in ("--set", value)]
    result = helm("template", RELEASE, str(CHART), *args)
    assert result.returncode != 0, f"{case}: helm template accepted {sets}"
    assert reason in result.stderr, result.stderr
