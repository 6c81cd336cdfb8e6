from __future__ import annotations


class StorageError(Exception):
    """The shared counter could not be reached, did not answer in time, or refused."""
