"""The grammar of configuration values (``gatehouse.settings.values``), parser by parser."""

from __future__ import annotations

import pytest

from gatehouse.settings import ConfigError, load_proxy_settings, load_settings
from gatehouse.settings.values import (
    RedisTarget,
    parse_network,
    parse_origins,
    parse_redis_url,
    parse_trusted_proxies,
    redact_url,
)

SECRET = "s3cr#t/p@ss"
ENCODED = "s3cr%23t%2Fp%40ss"  # the same password, percent-encoded as a URL needs it


# --- networks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.244.0.0/16", "10.244.0.0/16"),
        ("127.0.0.1", "127.0.0.1/32"),
        ("fd00::/8", "fd00::/8"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("::ffff:10.0.0.0/104", "::ffff:a00:0/104"),
    ],
)
def test_specific_networks_are_accepted_in_canonical_form(value: str, canonical: str) -> None:
    assert str(parse_network(value)) == canonical


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0.0.0.0/0", "'0.0.0.0/0' is broader than a /8"),
        ("0.0.0.0/1", "'0.0.0.0/1' is broader than a /8"),
        ("128.0.0.0/7", "'128.0.0.0/7' is broader than a /8"),
        ("::/0", "'::/0' is broader than a /8"),
        ("fc00::/7", "'fc00::/7' is broader than a /8"),
        # Every IPv4 client, as a dual-stack socket reports them.
        ("::ffff:0:0/96", "'::ffff:0:0/96' is broader than a /8"),
        ("::ffff:0.0.0.0/97", "'::ffff:0.0.0.0/97' is broader than a /8"),
        ("10.64.0.1/16", "'10.64.0.1/16' has host bits set after the prefix; did you mean 10.64.0.0/16?"),
        ("fd00::1/64", "'fd00::1/64' has host bits set after the prefix; did you mean fd00::/64?"),
        ("10.0.0.0/33", "'10.0.0.0/33' is not an IP network in CIDR form"),
        ("ingress", "'ingress' is not an IP network in CIDR form"),
    ],
)  # fmt: skip
def test_networks_that_trust_too_much_or_mean_something_else_are_refused(
    value: str, reason: str
) -> None:
    with pytest.raises(ValueError) as raised:
        parse_network(value)
    assert str(raised.value).startswith(reason), str(raised.value)


@pytest.mark.parametrize(
    "values",
    [["*"], ["10.0.0.0/8", "*"], ["0.0.0.0/1", "128.0.0.0/1"], ["::/0"], []],
)
def test_trusted_proxy_lists_that_trust_everyone_are_refused(values: list[str]) -> None:
    with pytest.raises(ValueError):
        parse_trusted_proxies(values)


@pytest.mark.parametrize(
    "value",
    ["*", "0.0.0.0/0", "0.0.0.0/1,128.0.0.0/1", "::/0", "10.64.0.1/16", "::ffff:0:0/96"],
)
def test_forwarded_allow_ips_refusal_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", value)
    with pytest.raises(ConfigError) as raised:
        load_proxy_settings()
    message = str(raised.value)
    assert message.startswith(f"invalid configuration: FORWARDED_ALLOW_IPS = {value!r}: ")
    assert "\n" not in message


def test_exempt_networks_follow_the_same_grammar() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(rate_limit_exempt_cidrs="10.70.200.1/24")
    assert str(raised.value) == (
        "invalid configuration: APP_RATE_LIMIT_EXEMPT_CIDRS = '10.70.200.1/24': "
        "'10.70.200.1/24' has host bits set after the prefix; did you mean 10.70.200.0/24?"
    )


# --- origins -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_an_empty_allowlist_is_refused_not_read_as_nothing_allowed(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_origins(text)
    assert str(raised.value) == "the list is empty (write [] to allow no origin)"


def test_an_explicit_empty_list_allows_no_origin() -> None:
    assert parse_origins("[]") == []


def test_the_wildcard_is_refused_with_credentials_and_kept_without() -> None:
    with pytest.raises(ValueError) as raised:
        parse_origins("*", allow_credentials=True)
    assert "'*' cannot be combined with credentials" in str(raised.value)
    assert parse_origins("*", allow_credentials=False) == ["*"]


# --- Redis URLs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("redis://localhost", RedisTarget("redis", (("localhost", 6379),), 0, None)),
        ("redis://:pw@redis:6380/2", RedisTarget("redis", (("redis", 6380),), 2, None)),
        ("rediss://user:pw@10.0.0.5/", RedisTarget("rediss", (("10.0.0.5", 6379),), 0, None)),
        ("redis://[::1]:7000/0", RedisTarget("redis", (("::1", 7000),), 0, None)),
        (
            "redis+sentinel://:pw@s1,s2:26380/mymaster",
            RedisTarget("redis+sentinel", (("s1", 26379), ("s2", 26380)), 0, "mymaster"),
        ),
        (
            "redis+cluster://:pw@n1:7000,n2:7001",
            RedisTarget("redis+cluster", (("n1", 7000), ("n2", 7001)), 0, None),
        ),
        (f"redis://:{ENCODED}@redis:6379/1", RedisTarget("redis", (("redis", 6379),), 1, None)),
    ],
)
def test_valid_redis_urls_name_their_endpoints(url: str, target: RedisTarget) -> None:
    assert parse_redis_url(url) == target


BAD_REDIS_URLS = [
    ("http://redis:6379", "scheme must be one of redis, rediss, redis+sentinel, redis+cluster"),
    ("redis+sentinel://:{pw}@h1:26379", "name the primary after the sentinels"),
    ("redis+sentinel://:{pw}@h1:26379/mymaster/3", "name the primary after the sentinels"),
    ("redis://:{pw}@h1:99999/0", "the port of 'h1' is not a number from 1 to 65535"),
    ("redis://:{pw}@h1:abc/0", "the port of 'h1' is not a number from 1 to 65535"),
    ("redis+cluster://:{pw}@h1:7000,h2:bad", "the port of 'h2' is not a number from 1 to 65535"),
    ("redis://:{pw}@h1:6379/x", "database 'x' is not a number from 0 to 65535"),
    ("redis://:{pw}@h1:6379/0/1", "the path '/0/1' is not /<database>"),
    ("redis+cluster://:{pw}@h1:7000/3", "Redis Cluster has only database 0"),
    ("redis://:{pw}@h1,h2", "redis:// takes one host"),
    ("redis://:{pw}@h1:6379/0?socket_timeout=1", "no query or fragment"),
    ("rediss://:{pw}@[::1:6379", "'[::1:6379' has no closing ']'"),
    ("rediss://:{pw}@[::g]:6379", "'[::g]:6379' is not a valid IPv6 address in brackets"),
    ("redis://:{pw}@/0", "no host"),
    ("redis://@h1", "'@' with no user or password before it"),
]


@pytest.mark.parametrize(("template", "reason"), BAD_REDIS_URLS)
@pytest.mark.parametrize("password", [SECRET, ENCODED, "plainpassword"])
def test_bad_redis_urls_are_one_line_without_the_password(
    template: str, reason: str, password: str
) -> None:
    url = template.format(pw=password)
    with pytest.raises(ConfigError) as raised:
        load_settings(redis_url=url)
    message = str(raised.value)
    assert message.startswith("invalid configuration: APP_REDIS_URL = "), message
    assert "\n" not in message
    for secret in (password, SECRET, ENCODED):
        assert secret not in message
    if password == SECRET and "{pw}" in template:
        # '/', '#' and '@' unencoded: where the password ends is unknown
        reason = "the user or password holds '/', '?' or '#': percent-encode it"
    assert reason in message, message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:pw@h", "redis://user:***@h"),
        ("redis://token@h", "redis://***@h"),
        (f"redis://:{SECRET}@h:6379", "redis://:***@h:6379"),  # '/', '#', '@' unencoded
        ("redis+sentinel://:pw@s1,s2/mymaster", "redis+sentinel://:***@s1,s2/mymaster"),
        ("redis://h:6379", "redis://h:6379"),
        ("redis://h:6379/0?password=pw", "redis://h:6379/0?***"),
        ("redis://:pw@h/0?a=1#frag", "redis://:***@h/0?***"),
    ],
)
def test_redaction_hides_everything_up_to_the_last_at_sign(url: str, shown: str) -> None:
    assert redact_url(url) == shown
