"""Settings applied from the mounted ConfigMap while the service runs.

The chart mounts the namespace's ConfigMap as a directory (one file per key) and points
``APP_ALLOWED_ORIGINS_FILE`` at one of them. The keys in ``RELOADABLE_KEYS`` are read
from that directory: the allowlist, and the rate-limit and cross-site policy. Other
settings (Redis, hosts, ports) need a restart, which the chart's checksum triggers.

The kubelet updates a mounted ConfigMap by writing a new timestamped directory and
swapping the ``..data`` symlink to it; each key's path is a symlink through ``..data``.
A watch on a file itself (inotify) would keep watching the old inode and miss the swap,
so this polls: every ``interval`` seconds it reads the keys (following the links) and,
when any changed, validates them all together with the running settings. A valid set
applies at once, between two requests; an invalid one is not applied: the last good
settings stay, one error line is logged, and
``gatehouse_config_reloads_total{result="rejected"}`` counts it. A ``subPath`` mount never
updates; the chart mounts the whole ConfigMap.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .settings import Settings, one_line

RELOADABLE_KEYS = (
    "APP_ALLOWED_ORIGINS",
    "APP_RATE_LIMIT_DEFAULT",
    "APP_RATE_LIMIT_SEARCH",
    "APP_RATE_LIMIT_MODE",
    "APP_RATE_LIMIT_SHADOW_ROUTES",
    "APP_RATE_LIMIT_ROUTES",
    "APP_RATE_LIMIT_EXEMPT_CIDRS",
    "APP_CROSS_SITE_POLICY",
)

Apply = Callable[[Settings], None]  # raises ValueError when the settings cannot be used
CountResult = Callable[[str], None]


class ConfigWatcher:
    def __init__(
        self,
        settings: Settings,
        apply: Apply,
        *,
        logger: logging.Logger,
        count: CountResult = lambda result: None,
    ) -> None:
        assert settings.allowed_origins_file is not None
        self.settings = settings
        self.directory = Path(settings.allowed_origins_file).parent
        self.apply = apply
        self.interval = settings.config_reload_interval
        self.logger = logger
        self.count = count
        self.last_seen: dict[str, bytes] | None = None

    async def run(self) -> None:
        """Poll until cancelled (the app's lifespan cancels it at shutdown)."""
        self.last_seen = await asyncio.to_thread(self._read)
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    def _read(self) -> dict[str, bytes]:
        found = {}
        for key in RELOADABLE_KEYS:
            try:
                found[key] = (self.directory / key).read_bytes()
            except OSError:
                continue  # absent, or missing for a moment mid-swap
        return found

    async def check(self) -> None:
        seen = await asyncio.to_thread(self._read)
        if seen == self.last_seen or "APP_ALLOWED_ORIGINS" not in seen:
            return
        changed = sorted(key for key in seen if (self.last_seen or {}).get(key) != seen[key])
        self.last_seen = seen
        try:
            candidate = self._validate(seen)
            self.apply(candidate)
        except ValueError as error:  # pydantic's ValidationError and UnicodeDecodeError too
            self.count("rejected")
            message = one_line(error, "APP_") if isinstance(error, ValidationError) else str(error)
            self.logger.error(
                "ConfigMap update rejected, keeping the last good settings: %s",
                message.removeprefix("invalid configuration: "),
            )
            return
        self.settings = candidate
        self.count("applied")
        self.logger.warning("settings reloaded from %s: %s", self.directory, ", ".join(changed))

    def _validate(self, seen: dict[str, bytes]) -> Settings:
        values: dict[str, Any] = self.settings.model_dump()
        for key, data in seen.items():
            text = data.decode("utf-8").strip()
            field = key.removeprefix("APP_").lower()
            if field == "rate_limit_routes":
                try:
                    values[field] = json.loads(text) if text else {}
                except (ValueError, RecursionError):
                    raise ValueError(
                        f"APP_RATE_LIMIT_ROUTES: not a JSON object: {text[:80]!r}"
                    ) from None
            else:
                values[field] = text
        # The origins come from APP_ALLOWED_ORIGINS_FILE itself (read again by the model).
        return Settings.model_validate(values)
