"""Origins applied from a mounted ConfigMap file while the service runs.

The kubelet updates a mounted ConfigMap by writing a new timestamped directory and
swapping the ``..data`` symlink to it; the key's path is a symlink through ``..data``.
A watch on the file itself (inotify) would keep watching the old inode and miss the
swap, so this polls: every ``interval`` seconds it reads the path (following the
links) and applies the content when it changed. A ``subPath`` mount never updates;
the chart mounts the whole ConfigMap as a directory.

An invalid update is not applied: the last good allowlist stays, one error line is
logged, and ``gatehouse_config_reloads_total{result="rejected"}`` counts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from .settings import parse_origins

Apply = Callable[[list[str]], None]
CountResult = Callable[[str], None]


class OriginsFileWatcher:
    def __init__(
        self,
        path: str,
        apply: Apply,
        *,
        interval: float,
        allow_credentials: bool,
        logger: logging.Logger,
        count: CountResult = lambda result: None,
    ) -> None:
        self.path = Path(path)
        self.apply = apply
        self.interval = interval
        self.allow_credentials = allow_credentials
        self.logger = logger
        self.count = count
        self.last_data: bytes | None = None

    async def run(self) -> None:
        """Poll until cancelled (the app's lifespan cancels it at shutdown)."""
        self.last_data = await self._read()
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    async def _read(self) -> bytes | None:
        try:
            return await asyncio.to_thread(self.path.read_bytes)
        except OSError:
            return None

    async def check(self) -> None:
        data = await self._read()
        if data is None or data == self.last_data:
            # Missing for a moment (mid-swap) is not a change: keep what we have.
            return
        self.last_data = data
        try:
            origins = parse_origins(data.decode("utf-8"), self.allow_credentials)
        except ValueError as error:  # UnicodeDecodeError is one too
            self.count("rejected")
            self.logger.error(
                "APP_ALLOWED_ORIGINS_FILE update rejected, keeping the last good allowlist: %s",
                error,
            )
            return
        self.apply(origins)
        self.count("applied")
        self.logger.warning("allowed origins reloaded from %s: %s", self.path, ", ".join(origins))
