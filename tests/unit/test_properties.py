"""Properties of origin and host parsing and of the configuration validator, under
arbitrary input (hypothesis).

- ``normalise_origin`` and ``parse_origins`` raise nothing but ``ValueError``;
  ``Settings`` through ``load_settings`` raises nothing but ``ConfigError``, whatever a
  variable holds, whether it arrives as a keyword or through the environment.
- An accepted origin is a fixed point of ``normalise_origin`` and is a bare
  ``scheme://host[:port]``: no path, query, fragment or credentials, lower case.
- ``*`` together with credentials is refused on every path: the variable, a JSON list,
  ``parse_origins`` and the origins file.
- The Host check (``_hostname``, ``HostAllowlist.is_allowed``) never raises on
  any bytes and only lets through the names it was given.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gatehouse.middleware.trusted_hosts import HostAllowlist, _hostname
from gatehouse.settings import ConfigError, Settings, load_settings, normalise_origin, parse_origins

PROPERTY = hypothesis_settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# Building Settings from the environment costs about a millisecond: fewer examples there.
SLOW_PROPERTY = hypothesis_settings(PROPERTY, max_examples=60)

# A nesting deep enough to exhaust Python's recursion limit in json.loads.
DEEP_JSON_LIST = "[" * 5000

# --- strategies --------------------------------------------------------------------------

SCHEMES = st.sampled_from(
    ["http", "https", "HTTP", "HtTpS", "ftp", "ws", "javascript", "", "http:", "https:/"]
)
HOST_CHARACTERS = st.sampled_from(
    list("abcxyzABCXYZ0189.-_")
    + list("[]:@/?#%*\\ \t\r\n\x00\x7fÉéİ\uff0f\uff0e@")
    + ["xn--", "::1", ".."]
)
HOSTS = st.one_of(
    st.sampled_from(
        [
            "app.example.com",
            "APP.Example.COM",
            "127.0.0.1",
            "[::1]",
            "[2001:DB8::1]",
            "[::ffff:1.2.3.4]",
            "localhost",
            "*",
            "",
            "[",
            "]",
            "[::1",
            "user@host",
            "user:pw@host",
        ]
    ),
    st.lists(HOST_CHARACTERS, max_size=12).map("".join),
)
PORTS = st.one_of(
    st.just(""),
    st.integers(min_value=-5, max_value=70000).map(lambda port: f":{port}"),
    st.sampled_from([":", ":80", ":443", ":080", ":+1", ":١٢", ": 1", ":1:2", ":0x1F"]),
)
TAILS = st.sampled_from(["", "/", "/path", "?", "?q=1", "#", "#frag", "/?#", "%2F", " ", "\n"])
ORIGIN_LIKE = st.builds(
    lambda scheme, separator, host, port, tail: f"{scheme}{separator}{host}{port}{tail}",
    SCHEMES,
    st.sampled_from(["://", ":/", ":", "//", ":///"]),
    HOSTS,
    PORTS,
    TAILS,
)
ANY_TEXT = st.text(max_size=80)
ORIGIN_INPUT = st.one_of(ORIGIN_LIKE, ANY_TEXT)


@st.composite
def origin_lists(draw: st.DrawFn, entries: st.SearchStrategy[str] = ORIGIN_INPUT) -> str:
    """An allowlist as the variable holds it: comma-separated or a JSON list."""
    items = draw(st.lists(entries, max_size=5))
    if draw(st.booleans()):
        return ",".join(items)
    return json.dumps(items, ensure_ascii=draw(st.booleans()))


# The environment cannot carry NUL or lone surrogates; everything else can.
ENV_TEXT = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=60
)
TRUTHY = st.sampled_from(["true", "True", "TRUE", "1", "yes", "on", "t", "y"])


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Exactly these APP_* variables for the duration (hypothesis-safe, no fixture)."""
    saved = {key: value for key, value in os.environ.items() if key.startswith("APP_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        for key in values:
            os.environ.pop(key, None)
        os.environ.update(saved)


# --- normalise_origin ----------------------------------------------------------------------


@PROPERTY
@given(ORIGIN_INPUT)
@example("http://[")
@example("http://a.com:99999")
@example("https://a.example:\u0661")  # an Arabic-Indic digit
@example("http://a\uff0fb.example")  # a full-width solidus
def test_normalise_origin_raises_only_value_error(raw: str) -> None:
    with contextlib.suppress(ValueError):
        normalise_origin(raw)


@PROPERTY
@given(ORIGIN_INPUT)
@example("HTTPS://App.Example.COM:443")
@example("http://[::FFFF:1.2.3.4]:8080")
@example("http://a.com:")
@example("http://a.com:080")
@example("http://İ.example")
def test_an_accepted_origin_is_a_bare_lower_case_fixed_point(raw: str) -> None:
    try:
        origin = normalise_origin(raw)
    except ValueError:
        return
    if origin == "*":
        assert raw == "*"
        return
    assert normalise_origin(origin) == origin, f"{raw!r} -> {origin!r} is not a fixed point"
    parts = urlsplit(origin)
    assert parts.scheme in ("http", "https"), origin
    assert origin.startswith(f"{parts.scheme}://"), origin
    assert (parts.path, parts.query, parts.fragment) == ("", "", ""), origin
    assert not origin.endswith(("?", "#", "/")), origin
    assert parts.username is None and parts.password is None, origin
    assert "@" not in parts.netloc, origin
    assert parts.hostname, origin
    assert origin == origin.lower(), f"{raw!r} -> {origin!r} is not lower case"
    default = {"http": 80, "https": 443}[parts.scheme]
    assert parts.port != default, f"{origin!r} keeps its default port"


@PROPERTY
@given(ORIGIN_INPUT)
@example("https://*")
@example("http://a\x00b.example")
@example("http://é.example")
def test_an_accepted_origin_has_a_host_a_browser_can_send(raw: str) -> None:
    try:
        origin = normalise_origin(raw)
    except ValueError:
        return
    if origin == "*":
        return
    host = urlsplit(origin).hostname or ""
    if ":" in host:  # IPv6 literal, checked by urlsplit itself
        return
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789.-")
    assert host.isascii() and set(host) <= allowed, f"{raw!r} accepted with host {host!r}"


# --- parse_origins and '*' ---------------------------------------------------------------


@PROPERTY
@given(st.one_of(origin_lists(), ANY_TEXT), st.booleans())
@example(DEEP_JSON_LIST, True)  # RecursionError today: json.loads is not guarded against it
@example('["a", 1]', True)
@example("[1" + "0" * 5000 + "]", False)
def test_parse_origins_raises_only_value_error(text: str, credentials: bool) -> None:
    try:
        origins = parse_origins(text, credentials)
    except ValueError:
        return
    assert all(normalise_origin(origin) == origin for origin in origins)
    assert len(origins) == len(set(origins))
    if credentials:
        assert "*" not in origins


STAR = st.sampled_from(["*", " *", "* ", "\t*\t"])
WITH_A_STAR = st.builds(
    lambda before, star, after: [*before, star, *after],
    st.lists(ORIGIN_LIKE, max_size=2),
    STAR,
    st.lists(ORIGIN_LIKE, max_size=2),
)


@st.composite
def star_lists(draw: st.DrawFn) -> str:
    items = draw(WITH_A_STAR)
    if draw(st.booleans()):
        return ",".join(items)
    return json.dumps(items)


@PROPERTY
@given(star_lists())
def test_star_with_credentials_is_refused_by_parse_origins(text: str) -> None:
    with pytest.raises(ValueError):
        parse_origins(text, allow_credentials=True)


@PROPERTY
@given(star_lists(), st.one_of(st.just(None), TRUTHY))
def test_star_with_credentials_is_refused_by_the_settings(
    text: str, credentials: str | None
) -> None:
    overrides: dict[str, object] = {"allowed_origins": text}
    if credentials is not None:
        overrides["allow_credentials"] = credentials
    with pytest.raises(ConfigError):
        load_settings(**overrides)


@SLOW_PROPERTY
@given(star_lists(), st.one_of(st.just(None), TRUTHY))
def test_star_with_credentials_is_refused_from_the_environment(
    text: str, credentials: str | None
) -> None:
    env = {"APP_ALLOWED_ORIGINS": text.replace("\x00", "")}  # the environment holds no NUL
    if credentials is not None:
        env["APP_ALLOW_CREDENTIALS"] = credentials
    with environment(env), pytest.raises(ConfigError):
        load_settings()


@SLOW_PROPERTY
@given(star_lists(), st.one_of(st.just(None), TRUTHY))
def test_star_with_credentials_is_refused_from_the_origins_file(
    text: str, credentials: str | None
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "APP_ALLOWED_ORIGINS")
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
        overrides: dict[str, object] = {"allowed_origins_file": path}
        if credentials is not None:
            overrides["allow_credentials"] = credentials
        with pytest.raises(ConfigError):
            load_settings(**overrides)


@PROPERTY
@given(origin_lists(st.one_of(ORIGIN_INPUT, STAR)), st.one_of(st.just(None), TRUTHY))
def test_whatever_is_accepted_with_credentials_holds_no_star(
    text: str, credentials: str | None
) -> None:
    overrides: dict[str, object] = {"allowed_origins": text}
    if credentials is not None:
        overrides["allow_credentials"] = credentials
    try:
        settings = load_settings(**overrides)
    except ConfigError:
        return
    assert settings.allow_credentials
    assert "*" not in settings.allowed_origins
    assert all(normalise_origin(origin) == origin for origin in settings.allowed_origins)


# --- the whole validator -----------------------------------------------------------------

# Every field except the file path (an arbitrary path could name /dev/zero; the file's
# content is fuzzed below instead).
FIELDS = sorted(name for name in Settings.model_fields if name != "allowed_origins_file")
LIST_FIELDS = ["allowed_origins", "cors_allow_methods", "cors_allow_headers", "trusted_hosts"]


@pytest.mark.parametrize("field", FIELDS)
@hypothesis_settings(PROPERTY, max_examples=25)
@given(value=st.one_of(ANY_TEXT, origin_lists(), ORIGIN_LIKE))
# A newline in a value reaches the message unescaped today ("... (write https://a\nb)").
@example(value='["a.example\\nb.example"]')
def test_settings_raise_only_config_error(field: str, value: str) -> None:
    try:
        load_settings(**{field: value})
    except ConfigError as error:
        assert "\n" not in str(error), f"{field}={value!r}: message is not one line"


@pytest.mark.parametrize("field", LIST_FIELDS)
def test_a_deeply_nested_json_list_is_a_config_error(field: str) -> None:
    # Today json.loads raises RecursionError, which is neither a ValueError for pydantic
    # nor caught by load_settings: `python -m gatehouse` dies with a traceback.
    with pytest.raises(ConfigError):
        load_settings(**{field: DEEP_JSON_LIST})


@SLOW_PROPERTY
@given(
    st.fixed_dictionaries(
        {},
        optional={f"APP_{field.upper()}": st.one_of(ENV_TEXT, origin_lists()) for field in FIELDS},
    )
)
def test_settings_from_the_environment_raise_only_config_error(env: dict[str, str]) -> None:
    env = {key: value for key, value in env.items() if "\x00" not in value}
    try:
        with environment(env):
            load_settings()
    except UnicodeEncodeError:  # a lone surrogate from origin_lists: not an env value
        return
    except ConfigError as error:
        assert "\n" not in str(error)


@SLOW_PROPERTY
@given(st.one_of(st.binary(max_size=200), origin_lists().map(str.encode)), st.booleans())
@example(b"\xff\xfe", True)
@example(DEEP_JSON_LIST.encode(), True)
def test_origins_file_content_raises_only_config_error(content: bytes, credentials: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "APP_ALLOWED_ORIGINS")
        with open(path, "wb") as file:
            file.write(content)
        try:
            load_settings(allowed_origins_file=path, allow_credentials=credentials)
        except ConfigError as error:
            message = str(error)
            assert "\n" not in message
            assert "APP_ALLOWED_ORIGINS_FILE" in message, message


# --- the Host check ----------------------------------------------------------------------

HOST_BYTES = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=60).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.builds(
        lambda prefix, name, suffix: prefix + name + suffix,
        st.sampled_from([b"", b" ", b"\t", b"[", b"user@", b"*."]),
        st.sampled_from([b"api.example.com", b"API.EXAMPLE.COM", b"a.b.example.com", b"::1"]),
        st.sampled_from([b"", b":", b":443", b":x", b"]", b".", b" ", b"/", b"@evil", b"\x00"]),
    ),
)
ALLOWLISTS = st.sampled_from(
    [
        ["api.example.com"],
        ["*.example.com"],
        ["api.example.com", "*.example.org", "[::1]", "127.0.0.1"],
        [],
    ]
)


@PROPERTY
@given(HOST_BYTES)
@example(b"[")
@example(b"[::1")
@example(b"]:[")
@example(b"\xff" * 300)
def test_hostname_never_raises(raw: bytes) -> None:
    host = _hostname(raw)
    if host is None:  # not a valid Host value: refused
        return
    assert host == host.lower()
    assert ":" not in host or host.startswith("[")


@PROPERTY
@given(ALLOWLISTS, st.lists(HOST_BYTES, min_size=1, max_size=5))
def test_is_allowed_never_raises_and_lets_through_only_listed_names(
    allowlist: list[str], raws: list[bytes]
) -> None:
    middleware = HostAllowlist(allowlist)
    exact = {host for host in allowlist if not host.startswith("*")}
    suffixes = tuple(host[1:] for host in allowlist if host.startswith("*."))
    for raw in raws:
        verdict = middleware.is_allowed(raw)
        assert isinstance(verdict, bool)
        assert middleware.is_allowed(raw) is verdict  # the cache answers the same
        if verdict:
            host = _hostname(raw)
            assert host in exact or (suffixes and host.endswith(suffixes)), (raw, host)


@PROPERTY
@given(st.integers(min_value=0, max_value=65535), st.sampled_from(["", " ", "\t"]))
def test_listed_name_with_any_port_is_allowed(port: int, space: str) -> None:
    middleware = HostAllowlist(["api.example.com"])
    assert middleware.is_allowed(f"{space}API.example.com:{port}{space}".encode())
    assert not middleware.is_allowed(f"api.example.com.evil.net:{port}".encode())
    assert not middleware.is_allowed(f"evil.net:{port}".encode())


@PROPERTY
@given(ALLOWLISTS, HOST_BYTES)
@example(["api.example.com"], b"api.example.com:@evil.net")
@example(["*.example.com"], b"evil.net/.example.com")
def test_an_allowed_host_is_a_syntactically_valid_host_header(
    allowlist: list[str], raw: bytes
) -> None:
    middleware = HostAllowlist(allowlist)
    if not middleware.is_allowed(raw):
        return
    text = raw.decode("latin-1").strip().lower()
    host, _, port = text.rpartition(":") if not text.endswith("]") else (text, "", "")
    if not host:
        host, port = text, ""
    assert port == "" or port.isdigit(), raw
    name = host.strip("[]")
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789.-:"), raw
