"""Gatehouse with CPython's default collector settings, to show what its tuning buys.

``gatehouse.main`` freezes the start-up objects and raises the young-generation
threshold (``tune_garbage_collection``); this undoes both and changes nothing else.
"""

from __future__ import annotations

import gc

from gatehouse.main import app

gc.unfreeze()
gc.set_threshold(700, 10, 10)

__all__ = ["app"]
