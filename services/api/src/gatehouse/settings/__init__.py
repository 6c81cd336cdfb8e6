"""Gatehouse's configuration: one validated object, read once from the environment.

Every variable carries the ``APP_`` prefix (proxy trust keeps uvicorn's own
``FORWARDED_ALLOW_IPS``). A bad value stops start-up with one line that names the
variable and the value, a secret's value redacted:

    values.py   the grammar of values (origins, CIDRs, rates, Redis URLs): pure parsers
    model.py    the settings model: which variable holds which value, cross-field checks
    errors.py   the one-line error, with secrets redacted
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

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
    "settings_from",
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


class _GivenVariables(EnvSettingsSource):
    """Variables read as the environment's are (prefix, JSON lists...), from a mapping."""

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str]) -> None:
        self.given = dict(variables)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self.given, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def settings_from(variables: Mapping[str, str]) -> Settings:
    """The settings ``variables`` (``APP_*`` names) describe, checked as ``load_settings``
    checks the environment's, without reading the environment: what a namespace's pods
    would run with (``gatehouse.cors_check``). Raise ConfigError with one line."""

    class GivenSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (_GivenVariables(settings_cls, variables),)

    try:
        return GivenSettings()
    except ValidationError as error:
        raise ConfigError(one_line(error, "APP_")) from None
    except ValueError as error:  # a JSON list that does not parse
        raise ConfigError(f"invalid configuration: {error}") from None
