"""Gatehouse with CPython's default collector settings, to show what its tuning buys.

``gatehouse.service.create_app`` freezes the start-up objects and raises the
young-generation threshold (``tune_garbage_collection``); this undoes both and changes
nothing else. A factory, served as ``uvicorn --factory``.
"""

from __future__ import annotations

import gc

from starlette.types import ASGIApp

from gatehouse import service


def create_app() -> ASGIApp:
    app = service.create_app()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    return app
