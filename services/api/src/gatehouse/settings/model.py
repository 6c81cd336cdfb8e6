"""The settings model: every ``APP_*`` variable, its default and its check.

The grammar of each kind of value lives in ``values.py``; this module says which
variable holds which kind, and the checks that span several variables.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..ratelimit.headers import DEFAULT_DRAFT, DRAFTS
from ..ratelimit.identity import (
    DEFAULT_ALGORITHMS,
    check_jwks_url,
    parse_algorithms,
    parse_api_key_digests,
    parse_jwks,
)
from .values import (
    HOST_NAME,
    TOKEN,
    normalise_origins,
    parse_networks,
    parse_origins,
    parse_redis_url,
    parse_route_template,
    parse_trusted_proxies,
    split_list,
    validate_rate,
)


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
    # Allowed origins (a test page's) whose answers carry Gatehouse-CORS-Debug.
    cors_debug_origins: Annotated[list[str], NoDecode] = []
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
    # How routes without an algorithm of their own count (README, "Rate-limit algorithms").
    rate_limit_algorithm: Literal["fixed", "sliding", "gcra"] = "sliding"
    # Rates may name their algorithm: "gcra:10/second".
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
    # The draft-ietf-httpapi-ratelimit-headers revision the RateLimit fields follow.
    rate_limit_headers_draft: str = DEFAULT_DRAFT
    # Unsafe requests from a page on a site outside the allowlist: refuse, shadow or off.
    cross_site_policy: Literal["refuse", "shadow", "off"] = "refuse"
    # The open-mode fallback's divisor until the peer registry answers (then it follows
    # the processes registered in Redis, ``ratelimit/peers.py``).
    replicas: int = Field(default=1, ge=1, le=10000)
    # Seconds between attempts to return to Redis after it failed.
    redis_retry_interval: float = Field(default=1.0, gt=0, le=60)
    # Seconds between peer-registry heartbeats; a process silent for three is dropped.
    # 0 turns the registry off: the fallback divides by APP_REPLICAS as it is.
    peer_heartbeat_interval: float = Field(default=5.0, ge=0, le=60)

    # Who is counted (``ratelimit/identity.py``): a verified JWT subject, a known API
    # key, else the IP. JWT: the keys from a JWKS file (a mounted ConfigMap or Secret)
    # or URL (fetched in the background, https unless loopback), one of the two.
    rate_limit_jwks_file: str | None = None
    rate_limit_jwks_url: str | None = None
    # Seconds between JWKS fetches (URL or file); an unknown kid asks for one sooner,
    # but never sooner than the minimum after the last.
    rate_limit_jwks_refresh_interval: float = Field(default=300.0, ge=1, le=86400)
    rate_limit_jwks_min_refresh_interval: float = Field(default=30.0, ge=0.1, le=3600)
    # The ``aud`` a token must carry: required with a JWKS (a token for another
    # service must not count as a client of this one).
    rate_limit_jwt_audience: str | None = None
    # The ``iss`` a token must carry, when set.
    rate_limit_jwt_issuer: str | None = None
    # Asymmetric only: none and HS* are refused.
    rate_limit_jwt_algorithms: Annotated[list[str], NoDecode] = list(DEFAULT_ALGORITHMS)
    # Seconds of clock skew allowed on exp and nbf.
    rate_limit_jwt_leeway: float = Field(default=30.0, ge=0, le=300)
    # API keys: the header that carries one ("X-API-Key"; unset: off), and a file of the
    # known keys' SHA-256 hex digests, one a line (a mounted Secret): never the keys.
    rate_limit_api_key_header: str | None = None
    rate_limit_api_keys_file: str | None = None

    # Request size and time limits. A production API's choices, each with its reason
    # in server_protocol.py and middleware/request_body.py: 1 MiB of body (nginx's
    # default), the whole body within 30 s, 32 KiB of request line and header fields
    # (nginx's total), the whole head within 10 s of its first byte.
    max_body_bytes: int = Field(default=1024 * 1024, ge=0, le=1024**3)
    # Per-route body limits, a JSON object of route template -> bytes.
    max_body_bytes_routes: dict[str, Annotated[int, Field(ge=0, le=1024**3)]] = {}
    body_timeout: float = Field(default=30.0, gt=0, le=3600)
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    header_timeout: float = Field(default=10.0, gt=0, le=300)

    # Process.
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    # The management port: /healthz, /readyz and /metrics move there, off the port the
    # Service routes, so no ingress can expose them. Unset: served on ``port``.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    environment: str = "local"
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    access_log: bool = True
    graceful_shutdown_seconds: int = Field(default=20, ge=0, le=600)

    _split = field_validator(
        "allowed_origins",
        "cors_debug_origins",
        "cors_allow_methods",
        "cors_allow_headers",
        "trusted_hosts",
        "rate_limit_shadow_routes",
        "rate_limit_exempt_cidrs",
        "rate_limit_jwt_algorithms",
        mode="before",
    )(split_list)

    @field_validator("allowed_origins")
    @classmethod
    def _normalise_origins(cls, origins: list[str]) -> list[str]:
        # Credentials are another field: the wildcard is checked with them, after.
        return normalise_origins(origins, allow_credentials=False)

    @field_validator("cors_debug_origins")
    @classmethod
    def _normalise_debug_origins(cls, origins: list[str]) -> list[str]:
        # A debug origin names one page: never every origin, never an opaque one.
        if any(origin == "*" for origin in origins):
            raise ValueError("'*' is not a debug origin: name the test page's origin")
        return normalise_origins(origins, allow_credentials=False)

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
            if not TOKEN.fullmatch(name):
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
            if host != "*" and not bracketed and not HOST_NAME.fullmatch(name):
                raise ValueError(f"{host!r} is not a host name")
        return [host.lower() for host in hosts]

    @field_validator("host")
    @classmethod
    def _check_listen_address(cls, host: str) -> str:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost" and (
                re.fullmatch(r"[\d.]+", host) or not HOST_NAME.fullmatch(host)
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

    @field_validator("rate_limit_headers_draft")
    @classmethod
    def _check_headers_draft(cls, draft: str) -> str:
        # "draft-ietf-httpapi-ratelimit-headers-11" and "11" name the same revision.
        number = draft.strip().removeprefix("draft-ietf-httpapi-ratelimit-headers-")
        if number not in DRAFTS:
            raise ValueError(f"{draft!r} is not a supported revision ({', '.join(DRAFTS)})")
        return number

    @field_validator("rate_limit_routes")
    @classmethod
    def _check_route_rates(cls, routes: dict[str, str]) -> dict[str, str]:
        for template, rate in routes.items():
            parse_route_template(template)
            validate_rate(rate)
        return routes

    @field_validator("max_body_bytes_routes")
    @classmethod
    def _check_body_routes(cls, routes: dict[str, int]) -> dict[str, int]:
        for template in routes:
            parse_route_template(template)
        return routes

    @field_validator("rate_limit_shadow_routes")
    @classmethod
    def _check_templates(cls, templates: list[str]) -> list[str]:
        return [parse_route_template(template) for template in templates]

    @field_validator("rate_limit_exempt_cidrs")
    @classmethod
    def _check_exempt(cls, values: list[str]) -> list[str]:
        return parse_networks(values)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_redis_url(value)
        return value

    @field_validator("rate_limit_jwt_algorithms")
    @classmethod
    def _check_algorithms(cls, names: list[str]) -> list[str]:
        return list(parse_algorithms(names))

    @field_validator("rate_limit_jwks_url")
    @classmethod
    def _check_jwks_url(cls, url: str | None) -> str | None:
        return None if url is None else check_jwks_url(url)

    @field_validator("rate_limit_api_key_header")
    @classmethod
    def _check_api_key_header(cls, name: str | None) -> str | None:
        if name is None:
            return None
        if not TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a header name")
        if name.lower() in ("authorization", "cookie", "host"):
            raise ValueError(f"{name!r} already means something else; name a header of its own")
        return name

    @field_validator("rate_limit_api_keys_file")
    @classmethod
    def _check_api_keys_file(cls, path: str | None) -> str | None:
        if path is not None:
            parse_api_key_digests(_read_text(path))
        return path

    @model_validator(mode="after")
    def _identity_complete(self) -> Settings:
        if self.rate_limit_jwks_file and self.rate_limit_jwks_url:
            raise ValueError(
                "APP_RATE_LIMIT_JWKS_URL: give the JWKS as a file or a URL, not both"
                " (APP_RATE_LIMIT_JWKS_FILE is set too)"
            )
        jwt_enabled = bool(self.rate_limit_jwks_file or self.rate_limit_jwks_url)
        if jwt_enabled and not self.rate_limit_jwt_audience:
            raise ValueError(
                "APP_RATE_LIMIT_JWT_AUDIENCE: required with a JWKS: the aud tokens"
                " for this service carry"
            )
        if self.rate_limit_jwks_file:
            try:
                parse_jwks(_read_text(self.rate_limit_jwks_file), self.rate_limit_jwt_algorithms)
            except ValueError as error:
                raise ValueError(f"APP_RATE_LIMIT_JWKS_FILE: {error}") from None
        if self.rate_limit_jwks_min_refresh_interval > self.rate_limit_jwks_refresh_interval:
            raise ValueError(
                "APP_RATE_LIMIT_JWKS_MIN_REFRESH_INTERVAL: longer than"
                " APP_RATE_LIMIT_JWKS_REFRESH_INTERVAL"
            )
        if bool(self.rate_limit_api_key_header) != bool(self.rate_limit_api_keys_file):
            raise ValueError(
                "APP_RATE_LIMIT_API_KEYS_FILE: API keys need both the header"
                " (APP_RATE_LIMIT_API_KEY_HEADER) and the file of digests"
            )
        return self

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
    def _debug_origins_allowed(self) -> Settings:
        # After the allowlist file is read (the validator above): it may change the list.
        if "*" in self.allowed_origins:
            return self
        for origin in self.cors_debug_origins:
            if origin not in self.allowed_origins:
                raise ValueError(
                    f"APP_CORS_DEBUG_ORIGINS: {origin!r} is not in APP_ALLOWED_ORIGINS"
                    " (the debug header is only for an allowed test page)"
                )
        return self

    @field_validator("peer_heartbeat_interval")
    @classmethod
    def _heartbeat_off_or_sane(cls, seconds: float) -> float:
        if 0 < seconds < 0.1:
            raise ValueError("0 (off) or 0.1 to 60 seconds")
        return seconds

    @model_validator(mode="after")
    def _metrics_port_apart(self) -> Settings:
        if self.metrics_port == self.port:
            raise ValueError(
                f"APP_METRICS_PORT: {self.metrics_port} is the serving port (APP_PORT);"
                " the management port must be another"
            )
        return self

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Settings:
        try:
            normalise_origins(self.allowed_origins, self.allow_credentials)
        except ValueError as error:
            raise ValueError(f"APP_ALLOWED_ORIGINS: {error}") from None
        return self


def _read_text(path: str) -> str:
    """A configuration file's text; ValueError naming why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as error:
        raise ValueError(f"cannot read {path!r}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path!r} is not UTF-8 text") from None


class ProxySettings(BaseSettings):
    """Uvicorn's own variable for proxy trust; read here so it is validated too."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default=["127.0.0.1"], validation_alias="FORWARDED_ALLOW_IPS"
    )

    _split = field_validator("forwarded_allow_ips", mode="before")(split_list)

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_networks(cls, values: list[str]) -> list[str]:
        return parse_trusted_proxies(values)
