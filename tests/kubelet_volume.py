"""A directory laid out and updated the way the kubelet projects a ConfigMap volume.

    <dir>/..2026_11_25_14_00_00.123/APP_ALLOWED_ORIGINS   the data, in a timestamped dir
    <dir>/..data -> ..2026_11_25_14_00_00.123              the one symlink that is swapped
    <dir>/APP_ALLOWED_ORIGINS -> ..data/APP_ALLOWED_ORIGINS

An update writes a new timestamped directory, points a temporary symlink at it,
renames that over ``..data`` (atomic), then removes the old directory: the key's path
never changes and never holds a half-written file.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path


class ConfigMapVolume:
    def __init__(self, directory: Path, data: dict[str, str]) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._write(data)
        for key in data:
            (directory / key).symlink_to(Path("..data") / key)

    def path(self, key: str) -> Path:
        return self.directory / key

    def update(self, data: dict[str, str]) -> None:
        old = os.readlink(self.directory / "..data")
        self._write(data)
        # As the kubelet does: a new key gets its link, a removed key loses it.
        for key in data:
            if not (self.directory / key).is_symlink():
                (self.directory / key).symlink_to(Path("..data") / key)
        for link in self.directory.iterdir():
            if not link.name.startswith("..") and link.name not in data:
                link.unlink()
        shutil.rmtree(self.directory / old)

    def _write(self, data: dict[str, str]) -> None:
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.") + f"{time.time_ns() % 10**9}"
        target = self.directory / stamp
        target.mkdir()
        for key, value in data.items():
            (target / key).write_text(value)
        swap = self.directory / "..data_tmp"
        swap.symlink_to(stamp)
        os.rename(swap, self.directory / "..data")
