"""Settings applied from the mounted ConfigMap while the service runs.

The chart mounts the namespace's ConfigMap as a directory (one file per key) and points
``APP_ALLOWED_ORIGINS_FILE`` at one of them. The allowlist is read from that file,
whatever its name; the keys in ``POLICY_KEYS`` (the rate-limit and cross-site policy)
from files of those names beside it. Other settings (Redis, hosts, ports) need a
restart, which the chart's checksum triggers.

The kubelet updates a mounted ConfigMap by writing a new timestamped directory and
swapping the ``..data`` symlink to it; each key's path is a symlink through ``..data``.
A watch on a file itself (inotify) would keep watching the old inode and miss the swap,
so this polls: every ``interval`` seconds it reads the files (following the links).
When any changed, it reads them again ``settle`` seconds later and goes on only if
nothing moved meanwhile: a file written in place by hand is seen whole or not at all.
Then it validates them all together with the running settings, and the edge builds a
new ``EdgePolicy`` from the result. A valid set applies at once, between two requests;
an invalid one (an empty allowlist among them) is not applied: the last good settings
stay, one error line is logged, and ``gatehouse_config_reloads_total{result="rejected"}``
counts it. A ``subPath`` mount never updates; the chart mounts the whole ConfigMap.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .settings import Settings, one_line, parse_origins

ORIGINS_KEY = "APP_ALLOWED_ORIGINS"
POLICY_KEYS = (
    "APP_RATE_LIMIT_DEFAULT",
    "APP_RATE_LIMIT_SEARCH",
    "APP_RATE_LIMIT_ALGORITHM",
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
        settle: float = 0.2,
    ) -> None:
        if settings.allowed_origins_file is None:
            raise ValueError("a ConfigWatcher needs APP_ALLOWED_ORIGINS_FILE")
        self.settings = settings
        self.origins_file = Path(settings.allowed_origins_file)
        self.directory = self.origins_file.parent
        self.apply = apply
        self.interval = settings.config_reload_interval
        self.settle = settle
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
        paths = {ORIGINS_KEY: self.origins_file}
        paths.update((key, self.directory / key) for key in POLICY_KEYS)
        found = {}
        for key, path in paths.items():
            try:
                found[key] = path.read_bytes()
            except OSError:
                continue  # absent, or missing for a moment mid-swap
        return found

    async def check(self) -> None:
        seen = await asyncio.to_thread(self._read)
        if seen == self.last_seen or ORIGINS_KEY not in seen:
            return
        await asyncio.sleep(self.settle)
        if await asyncio.to_thread(self._read) != seen:
            return  # still being written: look again at the next poll
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
        try:
            # The wildcard is checked against credentials by the model, below.
            values["allowed_origins"] = parse_origins(
                seen[ORIGINS_KEY].decode("utf-8"), allow_credentials=False
            )
        except ValueError as error:  # UnicodeDecodeError too
            raise ValueError(f"APP_ALLOWED_ORIGINS_FILE: {error}") from None
        values["allowed_origins_file"] = None  # read once, above: the model must not again
        for key in POLICY_KEYS:
            if key not in seen:
                continue
            text = seen[key].decode("utf-8").strip()
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
        candidate = Settings.model_validate(values)
        return candidate.model_copy(update={"allowed_origins_file": str(self.origins_file)})
