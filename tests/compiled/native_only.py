"""A pytest plugin for runs against the compiled build: it refuses to run them on the sources.

``-p tests.compiled.native_only`` makes the session fail at its start unless the hot path
was imported from extension modules, so a PYTHONPATH that does not take effect can never
pass for a run of the compiled build.
"""

from __future__ import annotations

import importlib
import sysconfig

import pytest

HOT_PATH_SAMPLE = ("gatehouse.edge", "gatehouse.ratelimit.limiter", "gatehouse.metrics")


def pytest_sessionstart(session: pytest.Session) -> None:
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for name in HOT_PATH_SAMPLE:
        path = importlib.import_module(name).__file__ or ""
        if not path.endswith(suffix):
            raise pytest.UsageError(f"{name} is not compiled here: {path}")
