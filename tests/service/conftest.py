"""The service layer's fixtures (api_server, own_redis) live in tests/conftest.py."""

from __future__ import annotations

ALLOWED = "https://app.example.com"
