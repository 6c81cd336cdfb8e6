"""One line per configuration error, naming the variable, never showing a secret."""

from __future__ import annotations

from pydantic import ValidationError

from .values import redact_url

# Variables whose values are never printed whole: a URL keeps its shape, its password
# replaced by ***; anything else is *** entirely.
SECRET_VARIABLES = frozenset({"APP_REDIS_URL", "APP_REDIS_PASSWORD"})


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message is one line."""


def redact(value: object) -> object:
    """What may be shown of a secret variable's value."""
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return "***" if value else value


def one_line(error: ValidationError, prefix: str) -> str:
    """``invalid configuration: <VARIABLE> = <value>: <reason>`` from pydantic's first error."""
    first = error.errors()[0]
    location = first["loc"][0] if first["loc"] else ""
    name = f"{prefix}{str(location).upper()}" if location else ""
    message = first["msg"].removeprefix("Value error, ")
    if not name and message.startswith(f"{prefix}"):
        name, _, message = message.partition(": ")
    value = first.get("input")
    if name in SECRET_VARIABLES:
        value = redact(value)
    shown = f" = {value!r}" if name and not isinstance(value, dict) else ""
    line = f"invalid configuration: {name or 'settings'}{shown}: {message}"
    # One line whatever the value held: repr() already escapes most, this the rest.
    return line.replace("\r", "\\r").replace("\n", "\\n")
