"""Gatehouse's configuration: one validated object, read once from the environment.

Every variable carries the ``APP_`` prefix (proxy trust keeps uvicorn's own
``FORWARDED_ALLOW_IPS``). A bad value stops start-up with one line that names the
variable and the value, a secret's value redacted:

    values.py   the grammar of values (origins, CIDRs, rates, Redis URLs): pure parsers
    model.py    the settings model: which variable holds which value, cross-field checks
    errors.py   the one-line error, with secrets redacted
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .errors import ConfigError, one_line
from .model import ProxySettings, Settings
from .values import normalise_origin, parse_origins

__all__ = [
    "ConfigError",
    "ProxySettings",
    "Settings",
    "load_proxy_settings",
    "load_settings",
    "normalise_origin",
    "one_line",
    "parse_origins",
]


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment; raise ConfigError with one line."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(one_line(error, "APP_")) from None
    except ValueError as error:  # a JSON list that does not parse
        raise ConfigError(f"invalid configuration: {error}") from None


def load_proxy_settings() -> ProxySettings:
    """FORWARDED_ALLOW_IPS, checked; raise ConfigError with one line."""
    try:
        return ProxySettings()
    except ValidationError as error:
        raise ConfigError(one_line(error, "")) from None
