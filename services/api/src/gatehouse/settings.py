"""Gatehouse's configuration: one validated object, read once from the environment.

Every variable carries the ``APP_`` prefix. A bad value stops start-up with one line
that names the variable and the value (see ``load_settings``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_PORTS = {"http": 80, "https": 443}
# What a browser puts in an Origin: an ASCII host name (IDNs arrive as punycode), an
# IPv4 address, or an IPv6 literal in brackets.
_HOST_NAME = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
# An HTTP token (RFC 9110, 5.6.2): what a header name may be.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
REDIS_SCHEMES = ("redis", "rediss", "redis+sentinel", "redis+cluster")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message is one line."""


def _split_list(value: Any) -> Any:
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
    elif not _HOST_NAME.fullmatch(host) or len(host) > 253:
        raise ValueError(
            f"origin {raw!r} has no valid host (an ASCII name, IDNs as punycode, or an IP)"
        )
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def parse_origins(text: str, allow_credentials: bool = True) -> list[str]:
    """An allowlist as APP_ALLOWED_ORIGINS holds it (comma-separated or a JSON list)."""
    try:
        raw = _split_list(text)
    except ValueError as error:
        raise ValueError(f"not a list of origins: {error}") from None
    origins = list(dict.fromkeys(normalise_origin(origin) for origin in raw))
    if "*" in origins and allow_credentials:
        raise ValueError("'*' cannot be combined with credentials")
    return origins


def parse_networks(values: list[str]) -> list[str]:
    """Validate CIDRs (or single addresses); return them in canonical form."""
    networks = []
    for value in values:
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError as error:
            raise ValueError(f"{value!r} is not an IP network in CIDR form") from error
        if network.prefixlen == 0:
            raise ValueError(f"{value!r} covers every address; give specific networks")
        networks.append(str(network))
    return networks


def validate_rate(value: str) -> str:
    """A limits rate string such as ``10/minute`` or ``10/second;100/minute``."""
    try:
        items = parse_many(value)
    except ValueError as error:
        raise ValueError(f"{value!r} is not a rate limit (expected e.g. '10/minute')") from error
    if not items or any(item.amount < 1 or item.get_expiry() < 1 for item in items):
        raise ValueError(f"{value!r} is not a rate limit (expected e.g. '10/minute')")
    return value


class Settings(BaseSettings):
    """The service's settings. Field names map to ``APP_<NAME>`` variables."""

    model_config = SettingsConfigDict(
        env_prefix="APP_",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    # Browsers: the per-namespace allowlist (comma-separated or a JSON list).
    allowed_origins: Annotated[list[str], NoDecode] = ["http://localhost:5173"]
    # The same list in a mounted ConfigMap file, read at start-up (it wins over the
    # variable) and watched: a valid change applies without a restart.
    allowed_origins_file: str | None = None
    config_reload_interval: float = Field(default=2.0, gt=0, le=300)
    allow_credentials: bool = True
    cors_allow_methods: Annotated[list[str], NoDecode] = ["GET", "POST", "PUT", "DELETE", "OPTIONS"]
    cors_allow_headers: Annotated[list[str], NoDecode] = ["Authorization", "Content-Type"]
    # Chromium caps a preflight cache at 7200 s; anything longer is silently cut.
    cors_max_age: int = Field(default=600, ge=0, le=7200)
    # Hosts the service answers for (Host header); "*" disables the check.
    trusted_hosts: Annotated[list[str], NoDecode] = ["localhost", "127.0.0.1"]
    https_redirect: bool = False
    referrer_policy: Literal[
        "no-referrer", "strict-origin-when-cross-origin", "same-origin", "strict-origin"
    ] = "no-referrer"
    hsts_max_age: int = Field(default=63072000, ge=0)
    docs_enabled: bool = False
    # A route that raises, for proving that 500s stay readable; never on in prod.
    test_routes_enabled: bool = False

    # Rate limiting. No URL means in-process memory storage (one replica only).
    redis_url: str | None = None
    redis_password: str | None = None
    redis_timeout: float = Field(default=0.25, gt=0, le=10)
    # "auto": the pipelined client for one endpoint, redis-py for Sentinel and Cluster.
    redis_client: Literal["auto", "pipelined", "redis-py"] = "auto"
    # CA bundle that signs the server certificate of a rediss:// URL.
    redis_ca_file: str | None = None
    rate_limit_default: str = "100/minute"
    rate_limit_search: str = "10/minute"
    rate_limit_failure_mode: Literal["open", "closed"] = "open"
    # "shadow": every limit is counted exactly but never refuses (a dry run).
    rate_limit_mode: Literal["enforce", "shadow"] = "enforce"
    # Route templates whose limit runs in shadow mode ("/search,/items/{item_id}").
    rate_limit_shadow_routes: Annotated[list[str], NoDecode] = []
    # Per-route limits, a JSON object of route template -> rate; they win over the code's.
    rate_limit_routes: dict[str, str] = {}
    # Client networks never limited (the office, internal monitoring).
    rate_limit_exempt_cidrs: Annotated[list[str], NoDecode] = []
    # Unsafe requests from a page on a site outside the allowlist: refuse, shadow or off.
    cross_site_policy: Literal["refuse", "shadow", "off"] = "refuse"
    replicas: int = Field(default=1, ge=1, le=10000)
    # Seconds between attempts to return to Redis after it failed.
    redis_retry_interval: float = Field(default=1.0, gt=0, le=60)

    # Process.
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    environment: str = "local"
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    access_log: bool = True
    graceful_shutdown_seconds: int = Field(default=20, ge=0, le=600)

    _split = field_validator(
        "allowed_origins",
        "cors_allow_methods",
        "cors_allow_headers",
        "trusted_hosts",
        "rate_limit_shadow_routes",
        "rate_limit_exempt_cidrs",
        mode="before",
    )(_split_list)

    @field_validator("allowed_origins")
    @classmethod
    def _normalise_origins(cls, origins: list[str]) -> list[str]:
        normalised = [normalise_origin(origin) for origin in origins]
        return list(dict.fromkeys(normalised))

    @field_validator("cors_allow_methods")
    @classmethod
    def _upper_methods(cls, methods: list[str]) -> list[str]:
        for method in methods:
            if not method.isascii() or not method.isalpha():
                raise ValueError(f"{method!r} is not an HTTP method")
        return [method.upper() for method in methods]

    @field_validator("cors_allow_headers")
    @classmethod
    def _check_header_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"{name!r} is not a header name")
        return names

    @field_validator("trusted_hosts")
    @classmethod
    def _check_hosts(cls, hosts: list[str]) -> list[str]:
        if not hosts:
            raise ValueError("give at least one host name (or '*' to answer any Host)")
        for host in hosts:
            if "://" in host or "/" in host:
                raise ValueError(f"{host!r} is a URL; give the bare host name")
            if "*" in host and host != "*" and not host.startswith("*."):
                raise ValueError(f"{host!r}: a wildcard may only start a host ('*.example.com')")
            name = host.lower().removeprefix("*.")
            bracketed = name.startswith("[") and name.endswith("]")
            if host != "*" and not bracketed and not _HOST_NAME.fullmatch(name):
                raise ValueError(f"{host!r} is not a host name")
        return [host.lower() for host in hosts]

    @field_validator("host")
    @classmethod
    def _check_listen_address(cls, host: str) -> str:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost" and (
                re.fullmatch(r"[\d.]+", host) or not _HOST_NAME.fullmatch(host)
            ):
                raise ValueError(f"{host!r} is not an address to listen on") from None
        return host

    @field_validator("redis_ca_file")
    @classmethod
    def _check_ca_file(cls, path: str | None) -> str | None:
        if path is not None and not os.access(path, os.R_OK):
            raise ValueError(f"cannot read {path!r}")
        return path

    @field_validator("rate_limit_default", "rate_limit_search")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        return validate_rate(value)

    @field_validator("rate_limit_routes")
    @classmethod
    def _check_route_rates(cls, routes: dict[str, str]) -> dict[str, str]:
        for template, rate in routes.items():
            if not template.startswith("/"):
                raise ValueError(f"{template!r} is not a route template (it starts with '/')")
            validate_rate(rate)
        return routes

    @field_validator("rate_limit_shadow_routes")
    @classmethod
    def _check_templates(cls, templates: list[str]) -> list[str]:
        for template in templates:
            if not template.startswith("/"):
                raise ValueError(f"{template!r} is not a route template (it starts with '/')")
        return templates

    @field_validator("rate_limit_exempt_cidrs")
    @classmethod
    def _check_exempt(cls, values: list[str]) -> list[str]:
        return parse_networks(values)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in REDIS_SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(REDIS_SCHEMES)}")
        if not urlsplit(value).netloc:
            raise ValueError("no host")
        return value

    @model_validator(mode="after")
    def _origins_from_file(self) -> Settings:
        if self.allowed_origins_file is None:
            return self
        try:
            with open(self.allowed_origins_file, encoding="utf-8") as file:
                text = file.read()
        except OSError as error:
            raise ValueError(
                f"APP_ALLOWED_ORIGINS_FILE: cannot read {self.allowed_origins_file!r}: {error.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise ValueError("APP_ALLOWED_ORIGINS_FILE: the file is not UTF-8 text") from None
        try:
            origins = parse_origins(text, self.allow_credentials)
        except ValueError as error:
            raise ValueError(f"APP_ALLOWED_ORIGINS_FILE: {error}") from None
        # frozen: set through object.__setattr__, once, while validating.
        object.__setattr__(self, "allowed_origins", origins)
        return self

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Settings:
        if "*" in self.allowed_origins and self.allow_credentials:
            # A wildcard with credentials would let any site read a logged-in user's data.
            raise ValueError("APP_ALLOWED_ORIGINS: '*' cannot be combined with credentials")
        return self


class ProxySettings(BaseSettings):
    """Uvicorn's own variable for proxy trust; read here so it is validated too."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default=["127.0.0.1"], validation_alias="FORWARDED_ALLOW_IPS"
    )

    _split = field_validator("forwarded_allow_ips", mode="before")(_split_list)

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_networks(cls, values: list[str]) -> list[str]:
        if "*" in values:
            raise ValueError("'*' would let any client choose its own IP; give the ingress CIDRs")
        if not values:
            raise ValueError("give at least one CIDR (the ingress controller's)")
        return parse_networks(values)


def one_line(error: ValidationError, prefix: str) -> str:
    first = error.errors()[0]
    location = first["loc"][0] if first["loc"] else ""
    name = f"{prefix}{str(location).upper()}" if location else ""
    message = first["msg"].removeprefix("Value error, ")
    if not name and message.startswith(f"{prefix}"):
        name, _, message = message.partition(": ")
    value = first.get("input")
    if name in SECRET_VARIABLES:
        value = _redact(value)
    shown = f" = {value!r}" if name and not isinstance(value, dict) else ""
    line = f"invalid configuration: {name or 'settings'}{shown}: {message}"
    # One line whatever the value held: repr() already escapes most, this the rest.
    return line.replace("\r", "\\r").replace("\n", "\\n")


SECRET_VARIABLES = frozenset({"APP_REDIS_URL", "APP_REDIS_PASSWORD"})


def _redact(value: object) -> object:
    """A Redis URL without its password; any other secret as '***'."""
    if isinstance(value, str) and "://" in value:
        return re.sub(r"(://[^/@]*?:)[^/@]*@", r"\1***@", value)
    return "***" if value else value


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment; raise ConfigError with one line."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(one_line(error, "APP_")) from None
    except ValueError as error:  # a JSON list that does not parse
        raise ConfigError(f"invalid configuration: {error}") from None


def load_proxy_settings() -> ProxySettings:
    try:
        return ProxySettings()
    except ValidationError as error:
        raise ConfigError(one_line(error, "")) from None
