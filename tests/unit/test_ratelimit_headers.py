"""The RateLimit header fields against draft-ietf-httpapi-ratelimit-headers, per revision.

The EXAMPLES below are copied from the drafts themselves (-07 to -10 from the working
group's repository at their revision tags, -11 from its published text of 23 May 2026):
only those a server without partition keys or quota units can send. Each is rebuilt
from its numbers and must come out byte for byte, or, where a draft writes a list
without the space RFC 9651 serialization puts after a comma, as the same parsed value.
A small strict Structured Fields parser (RFC 9651 section 4.2), written here, checks
that every emitted value is valid.
"""

from __future__ import annotations

import base64
import re

import pytest

from gatehouse.ratelimit.headers import (
    DEFAULT_DRAFT,
    DRAFTS,
    MAX_INTEGER,
    LimitFields,
    policy_items,
    sf_string,
)
from gatehouse.ratelimit.limiter import RATE_LIMIT_HEADERS, rate_limit_headers, refusal_fields
from gatehouse.ratelimit.memory import MemoryWindowStore
from gatehouse.ratelimit.policy import RoutePolicy, Window
from gatehouse.settings import ConfigError, load_settings
from tests.unit.conftest import make_client

# --- a strict Structured Fields parser (lists and dictionaries of items) -------------

Bare = int | str | bytes | bool
Params = tuple[tuple[str, Bare], ...]
Member = tuple[Bare, Params]

_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_INTEGER = re.compile(r"-?[0-9]{1,15}")


class Token(str):
    """A token, told apart from a string of the same characters."""


class Parser:
    def __init__(self, text: str) -> None:
        self.text, self.at = text, 0

    def fail(self, why: str) -> None:
        raise ValueError(f"{why} at {self.at} in {self.text!r}")

    def peek(self) -> str:
        return self.text[self.at] if self.at < len(self.text) else ""

    def skip_ows(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.at += 1

    def skip_sp(self) -> None:
        while self.peek() == " ":
            self.at += 1

    def key(self) -> str:
        found = _KEY.match(self.text, self.at)
        if not found:
            self.fail("no key")
        self.at = found.end()
        return found.group()

    def bare(self) -> Bare:
        char = self.peek()
        if char == "-" or char.isdigit():
            found = _INTEGER.match(self.text, self.at)
            end = found.end() if found else self.at
            if not found or self.text[end : end + 1].isdigit() or self.text[end : end + 1] == ".":
                self.fail("not an integer of at most 15 digits")
            self.at = end
            return int(found.group())
        if char == '"':
            self.at += 1
            out = []
            while True:
                char = self.peek()
                if not char:
                    self.fail("unterminated string")
                self.at += 1
                if char == "\\":
                    escaped = self.peek()
                    if escaped not in ('"', "\\") or not escaped:
                        self.fail("bad escape")
                    out.append(escaped)
                    self.at += 1
                elif char == '"':
                    return "".join(out)
                elif not " " <= char <= "~":
                    self.fail("character outside a string")
                else:
                    out.append(char)
        if char == ":":
            end = self.text.find(":", self.at + 1)
            if end < 0:
                self.fail("unterminated byte sequence")
            encoded = self.text[self.at + 1 : end]
            if not re.fullmatch(r"[A-Za-z0-9+/=]*", encoded):
                self.fail("not base64")
            self.at = end + 1
            return base64.b64decode(encoded + "=" * (-len(encoded) % 4))
        if char == "?":
            value = self.text[self.at + 1 : self.at + 2]
            if value not in ("0", "1"):
                self.fail("bad boolean")
            self.at += 2
            return value == "1"
        found = _TOKEN.match(self.text, self.at)
        if not found:
            self.fail("no bare item")
        self.at = found.end()
        return Token(found.group())

    def parameters(self) -> Params:
        params: dict[str, Bare] = {}
        while self.peek() == ";":
            self.at += 1
            self.skip_sp()
            name = self.key()
            value: Bare = True
            if self.peek() == "=":
                self.at += 1
                value = self.bare()
            params[name] = value
        return tuple(params.items())

    def members(self, keyed: bool) -> list[tuple[str, Member]]:
        out: list[tuple[str, Member]] = []
        self.skip_sp()
        while self.peek():
            name = self.key() if keyed else ""
            if keyed and self.peek() != "=":
                item: Member = (True, self.parameters())
            else:
                if keyed:
                    self.at += 1
                if self.peek() == "(":
                    self.fail("inner lists are not expected here")
                item = (self.bare(), self.parameters())
            out.append((name, item))
            self.skip_ows()
            if not self.peek():
                return out
            if self.peek() != ",":
                self.fail("expected a comma")
            self.at += 1
            self.skip_ows()
            if not self.peek():
                self.fail("trailing comma")
        return out


def parse_list(text: str | bytes) -> list[Member]:
    value = text.decode("ascii") if isinstance(text, bytes) else text
    return [member for _, member in Parser(value).members(keyed=False)]


def parse_dictionary(text: str | bytes) -> dict[str, Member]:
    value = text.decode("ascii") if isinstance(text, bytes) else text
    return dict(Parser(value).members(keyed=True))


def test_the_parser_is_strict():
    assert parse_list('"a";q=1, b;w=2') == [("a", (("q", 1),)), ("b", (("w", 2),))]
    assert isinstance(parse_list("b")[0][0], Token)
    assert parse_list('"x";pk=:cHsdsRa894==:')[0][1][0][0] == "pk"
    for broken in ('"a', '"a";q=1,', '"a";Q=1', '"a";q=1234567890123456', '"\x01"', "a;q=1 b"):
        with pytest.raises(ValueError):
            parse_list(broken)


# --- the drafts' examples ------------------------------------------------------------

# Revisions 08 to 11 share the syntax and these examples (a few changed numbers: the
# "daily" example's t is 36400 in 08-10, 86400 in 11).
NAMED_POLICY_EXAMPLES = [
    ([("default", 100, 10)], '"default";q=100;w=10'),
    ([("burst", 100, 60), ("daily", 1000, 86400)], '"burst";q=100;w=60,"daily";q=1000;w=86400'),
    ([("permin", 50, 60), ("perhr", 1000, 3600)], '"permin";q=50;w=60,"perhr";q=1000;w=3600'),
    ([("basic", 100, 60)], '"basic";q=100;w=60'),
    ([("fixedwindow", 100, 60)], '"fixedwindow";q=100;w=60'),
    ([("dynamic", 100, 60)], '"dynamic";q=100;w=60'),
    ([("dynamic", 15, 20)], '"dynamic";q=15;w=20'),
    ([("somepolicy", 10000, 1000)], '"somepolicy";q=10000;w=1000'),
    ([("sliding", 12, 1)], '"sliding";q=12;w=1'),
    ([("hour", 1000, 3600), ("day", 5000, 86400)], '"hour";q=1000;w=3600, "day";q=5000;w=86400'),
]
NAMED_LIMIT_EXAMPLES = [
    ("default", 50, 30, '"default";r=50;t=30'),
    ("problemPolicy", 0, 10, '"problemPolicy";r=0;t=10'),
    ("default", 1, 7, '"default";r=1;t=7'),
    ("somepolicy", 10000, 10, '"somepolicy";r=10000;t=10'),
    ("default", 0, 50, '"default";r=0;t=50'),
    ("default", 0, 48, '"default";r=0;t=48'),
    ("dayLimit", 100, 36000, '"dayLimit";r=100;t=36000'),
    ("basic", 60, 58, '"basic";r=60;t=58'),
    ("basic", 20, 56, '"basic";r=20;t=56'),
    ("default", 0, 5, '"default";r=0;t=5'),
    ("fixedwindow", 99, 50, '"fixedwindow";r=99;t=50'),
    ("dynamic", 9, 50, '"dynamic";r=9;t=50'),
    ("dynamic", 0, 20, '"dynamic";r=0;t=20'),
    ("dynamic", 15, 40, '"dynamic";r=15;t=40'),
    ("day", 100, 36000, '"day";r=100;t=36000'),
    ("sliding", 50, 44, '"sliding";r=50;t=44'),
]
DAILY = {"08": 36400, "09": 36400, "10": 36400, "11": 86400}

# Revision 07: unnamed integer quotas, and RateLimit as a dictionary.
UNNAMED_POLICY_EXAMPLES = [
    ([100], [10], "100;w=10"),
    ([100], [60], "100;w=60"),
    ([12], [1], "12;w=1"),
    ([15], [20], "15;w=20"),
    ([10000], [1000], "10000;w=1000"),
    ([1000, 5000], [3600, 86400], "1000;w=3600, 5000;w=86400"),
    ([10, 50, 1000, 5000], [1, 60, 3600, 86400], "10;w=1, 50;w=60, 1000;w=3600, 5000;w=86400"),
]
DICTIONARY_LIMIT_EXAMPLES = [
    (100, 50, 5),
    (10, 0, 10),
    (10, 1, 7),
    (1, 1, 36000),
    (10000, 10000, 10),
    (100, 0, 50),
    (100, 0, 48),
    (5000, 100, 36000),
    (100, 60, 58),
    (100, 20, 56),
    (100, 0, 5),
    (100, 99, 50),
    (10, 9, 50),
    (0, 0, 20),
    (15, 15, 40),
    (100, 50, 60),
    (100, 50, 44),
]


def as_fields(fields: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    names = [name for name, _ in fields]
    assert len(set(names)) == len(names)
    return dict(fields)


NAMED = [draft for draft in DRAFTS if draft != "07"]


@pytest.mark.parametrize("draft", NAMED)
@pytest.mark.parametrize(("items", "example"), NAMED_POLICY_EXAMPLES)
def test_named_drafts_write_their_policy_examples(draft, items, example):
    fields = as_fields(LimitFields(items, draft).fields(0, 0, 0))
    written = fields[b"ratelimit-policy"]
    assert parse_list(written) == parse_list(example)
    # Byte for byte, once the example's list has RFC 9651's ", " between members.
    assert written.decode() == re.sub(r',(?=")', ", ", example.replace(", ", ","))


@pytest.mark.parametrize("draft", NAMED)
@pytest.mark.parametrize(("name", "remaining", "reset", "example"), NAMED_LIMIT_EXAMPLES)
def test_named_drafts_write_their_ratelimit_examples(draft, name, remaining, reset, example):
    fields = as_fields(LimitFields([(name, remaining + 1, 60)], draft).fields(0, remaining, reset))
    assert fields[b"ratelimit"] == example.encode()
    assert parse_list(fields[b"ratelimit"]) == [(name, (("r", remaining), ("t", reset)))]


@pytest.mark.parametrize("draft", NAMED)
def test_the_daily_example_of_each_revision(draft):
    fields = as_fields(LimitFields([("daily", 1000, 86400)], draft).fields(0, 1, DAILY[draft]))
    assert fields[b"ratelimit"] == b'"daily";r=1;t=%d' % DAILY[draft]


@pytest.mark.parametrize(("quotas", "windows", "example"), UNNAMED_POLICY_EXAMPLES)
def test_draft_07_writes_its_policy_examples(quotas, windows, example):
    items = policy_items("any", list(zip(quotas, windows, strict=True)))
    written = as_fields(LimitFields(items, "07").fields(0, 0, 0))[b"ratelimit-policy"]
    assert written == example.encode()
    assert all(isinstance(quota, int) for quota, _ in parse_list(written))


@pytest.mark.parametrize(("limit", "remaining", "reset"), DICTIONARY_LIMIT_EXAMPLES)
def test_draft_07_writes_its_ratelimit_examples(limit, remaining, reset):
    written = as_fields(LimitFields([("x", limit, 60)], "07").fields(0, remaining, reset))
    assert written[b"ratelimit"] == b"limit=%d, remaining=%d, reset=%d" % (limit, remaining, reset)
    parsed = parse_dictionary(written[b"ratelimit"])
    assert {key: value for key, (value, _) in parsed.items()} == {
        "limit": limit,
        "remaining": remaining,
        "reset": reset,
    }


def test_draft_07_never_sends_two_policies_of_one_quota():
    """Its own example of an invalid field: ``10;w=1, 10;w=60``."""
    items = policy_items("search", [(10, 1), (10, 60), (50, 3600)])
    fields = LimitFields(items, "07")
    assert fields.policy[1] == b"10;w=60, 50;w=3600"
    # Each window still reports its own quota as the expiring limit.
    assert fields.fields(0, 3, 1)[4][1] == b"limit=10, remaining=3, reset=1"


# --- what every revision must hold ---------------------------------------------------

HOSTILE_NAMES = [
    "",
    'quo"te',
    "back\\slash",
    "new\nline",
    "tab\there",
    "caf\u00e9",
    "\u30c6\u30b9\u30c8",
    "100%",
    'semi;q=1, "x";r=99',
    "\x00\x7f",
    "emoji\U0001f600",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("draft", DRAFTS)
def test_any_policy_name_gives_valid_fields(name, draft):
    fields = as_fields(LimitFields(policy_items(name, [(5, 1), (9, 60)]), draft).fields(1, 2, 3))
    for value in fields.values():
        value.decode("ascii")  # a field value is visible ASCII
        assert all(0x20 <= byte <= 0x7E for byte in value)
    policy = parse_list(fields[b"ratelimit-policy"])
    assert len(policy) == 2
    if draft == "07":
        assert parse_dictionary(fields[b"ratelimit"])["remaining"][0] == 2
    else:
        limit = parse_list(fields[b"ratelimit"])
        assert limit == [(policy[1][0], (("r", 2), ("t", 3)))]
        assert all(isinstance(item, str) and not isinstance(item, Token) for item, _ in policy)


def test_names_are_kept_apart_after_escaping():
    assert sf_string('a"b') == b'"a\\"b"'
    assert sf_string("a\\b") == b'"a\\\\b"'
    assert sf_string("caf\u00e9") == b'"caf%C3%A9"'
    # "%" is escaped too, so a name that looks escaped stays a different name.
    assert sf_string("caf%C3%A9") != sf_string("caf\u00e9")
    assert parse_list(sf_string('a"b\\c'))[0][0] == 'a"b\\c'


@pytest.mark.parametrize("draft", DRAFTS)
def test_numbers_are_clamped_to_what_a_field_can_carry(draft):
    fields = LimitFields([("big", MAX_INTEGER, 1)], draft)
    values = as_fields(fields.fields(0, -5, -1))
    assert values[b"x-ratelimit-remaining"] == b"0"
    assert values[b"x-ratelimit-reset"] == b"0"
    values = as_fields(fields.fields(0, MAX_INTEGER + 10, 10**20))
    assert values[b"x-ratelimit-remaining"] == b"%d" % MAX_INTEGER
    assert values[b"x-ratelimit-reset"] == b"%d" % MAX_INTEGER
    parse = parse_dictionary if draft == "07" else parse_list
    parse(values[b"ratelimit"])  # 15 digits still parse
    parse_list(values[b"ratelimit-policy"])


@pytest.mark.parametrize("remaining", [4095, 4096, 123_456_789])
def test_small_and_large_numbers_read_the_same(remaining):
    values = as_fields(LimitFields([("p", 10**9, 86400)]).fields(0, remaining, remaining))
    assert values[b"ratelimit"] == b'"p";r=%d;t=%d' % (remaining, remaining)


@pytest.mark.parametrize(
    "items",
    [
        [],
        [("p", 10**15, 60)],
        [("p", 10, 0)],
        [("p", -1, 60)],
        [("p", 1, 60), ("p", 2, 3600)],
    ],
)
def test_a_policy_the_fields_cannot_carry_is_refused_when_built(items):
    with pytest.raises(ValueError):
        LimitFields(items)


def test_an_unknown_draft_is_refused():
    with pytest.raises(ValueError, match="12"):
        LimitFields([("p", 1, 1)], "12")


def test_several_windows_report_the_one_closest_to_refusal():
    policy = RoutePolicy("search", "/search", (Window(2, 1), Window(3, 60), Window(3, 60)))
    assert [name for name, _, _ in policy_items("search", [(2, 1), (3, 60), (3, 60)])] == [
        "search-1s",
        "search-60s",
        "search-60s-2",
    ]
    values = as_fields(rate_limit_headers(policy, (1, 2, 1), (400, 30_000, 30_000)))
    assert values[b"ratelimit"] == b'"search-60s";r=1;t=30'
    assert values[b"x-ratelimit-limit"] == b"3"
    assert values[b"ratelimit-policy"] == (
        b'"search-1s";q=2;w=1, "search-60s";q=3;w=60, "search-60s-2";q=3;w=60'
    )


@pytest.mark.parametrize("draft", DRAFTS)
def test_cors_exposes_every_field_the_limiter_sends(draft):
    policy = RoutePolicy("p", "/p", (Window(1, 1), Window(5, 60)), headers_draft=draft)
    sent = {name for name, _ in rate_limit_headers(policy, (1, 1), (1, 1))} | {b"retry-after"}
    assert sent <= {name.lower().encode() for name in RATE_LIMIT_HEADERS}


# --- the setting ---------------------------------------------------------------------


def test_the_default_draft_is_the_newest_supported():
    assert DEFAULT_DRAFT == DRAFTS[-1] == load_settings().rate_limit_headers_draft


@pytest.mark.parametrize(
    ("value", "draft"),
    [("08", "08"), ("draft-ietf-httpapi-ratelimit-headers-07", "07"), (" 11 ", "11")],
)
def test_the_setting_names_a_revision(monkeypatch, value, draft):
    monkeypatch.setenv("APP_RATE_LIMIT_HEADERS_DRAFT", value)
    assert load_settings().rate_limit_headers_draft == draft


@pytest.mark.parametrize("value", ["12", "06", "latest", "8"])
def test_an_unsupported_revision_stops_start_up_in_one_line(monkeypatch, value):
    monkeypatch.setenv("APP_RATE_LIMIT_HEADERS_DRAFT", value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "APP_RATE_LIMIT_HEADERS_DRAFT" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.anyio
async def test_the_service_sends_the_chosen_revision():
    async with make_client(rate_limit_headers_draft="07") as client:
        response = await client.get("/search?q=x")
    assert response.headers["ratelimit-policy"] == "10;w=60"
    assert response.headers["ratelimit"] == "limit=10, remaining=9, reset=60"
    async with make_client() as client:
        response = await client.get("/search?q=x")
    assert response.headers["ratelimit-policy"] == '"search";q=10;w=60'
    assert response.headers["ratelimit"] == '"search";r=9;t=60'


@pytest.mark.parametrize("algorithm", ["fixed", "sliding", "gcra"])
@pytest.mark.parametrize("cost", [1, 2])
def test_retry_after_is_never_before_the_reported_window_ends(algorithm, cost):
    """-10 and -11: Retry-After SHOULD NOT point earlier than the end of ``t``. A sliding
    window or a bucket admits again before it empties: a 429 reports the wait in both."""
    now = [1_800_000_000.250]
    store = MemoryWindowStore(lambda: now[0])
    policy = RoutePolicy("p", "/p", (Window(2, 1), Window(5, 60)), cost=cost, algorithm=algorithm)
    keys = ["k:1", "k:60"]
    refusals = 0
    for _ in range(12):  # 12 tries, 300 ms apart: each window refuses some
        verdict = store.hit_now(keys, policy.windows, cost, algorithm)
        if not verdict.allowed:
            refusals += 1
            fields = as_fields(refusal_fields(policy, verdict))
            t = int(fields[b"ratelimit"].rsplit(b";t=", 1)[1])
            assert int(fields[b"retry-after"]) >= t == int(fields[b"x-ratelimit-reset"])
            assert int(fields[b"retry-after"]) * 1000 >= verdict.retry_ms
        now[0] += 0.3
    assert refusals > 0
