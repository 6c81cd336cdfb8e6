from __future__ import annotations

import pytest

from gatehouse.settings import ConfigError, load_settings, normalise_origin


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("https://App.Example.COM", "https://app.example.com"),
        ("HTTPS://app.example.com:443", "https://app.example.com"),
        ("http://localhost:80", "http://localhost"),
        ("http://localhost:5173", "http://localhost:5173"),
        ("https://[2001:DB8::1]:8443", "https://[2001:db8::1]:8443"),
    ],
)
def test_origins_are_normalised(raw, normalised):
    assert normalise_origin(raw) == normalised


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://a.example, https://b.example", ["https://a.example", "https://b.example"]),
        ('["https://a.example", "https://b.example"]', ["https://a.example", "https://b.example"]),
        ("https://a.example,https://A.example:443", ["https://a.example"]),
    ],
)
def test_origins_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("APP_ALLOWED_ORIGINS", value)
    assert load_settings().allowed_origins == expected


BAD = [
    ("APP_ALLOWED_ORIGINS", "*"),
    ("APP_ALLOWED_ORIGINS", "https://app.example.com/"),
    ("APP_ALLOWED_ORIGINS", "https://app.example.com/path"),
    ("APP_ALLOWED_ORIGINS", "app.example.com"),
    ("APP_ALLOWED_ORIGINS", "null"),
    ("APP_ALLOWED_ORIGINS", "ftp://app.example.com"),
    ("APP_ALLOWED_ORIGINS", "https://user:pw@app.example.com"),
    ("APP_ALLOWED_ORIGINS", "https://app.example.com:99999"),
    ("APP_ALLOWED_ORIGINS", '["https://a.example",'),
    ("APP_RATE_LIMIT_DEFAULT", "ten per minute"),
    ("APP_RATE_LIMIT_SEARCH", "0/minute"),
    ("APP_RATE_LIMIT_FAILURE_MODE", "sometimes"),
    ("APP_REDIS_URL", "http://redis:6379"),
    ("APP_REDIS_TIMEOUT", "-1"),
    ("APP_REPLICAS", "0"),
    ("APP_CORS_MAX_AGE", "86400"),
    ("APP_HTTPS_REDIRECT", "perhaps"),
    ("APP_TRUSTED_HOSTS", "https://api.example.com"),
    ("APP_REFERRER_POLICY", "unsafe-url"),
    ("APP_PORT", "http"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert name in message
    assert "\n" not in message


def test_the_defaults_are_valid_and_need_no_redis(monkeypatch):
    for name in ("APP_REDIS_URL", "APP_ALLOWED_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.redis_url is None
    assert "http://localhost:5173" in settings.allowed_origins
