"""Baseline: FastAPI serving Gatehouse's route, and nothing else.

``GET /search`` has the signature and the work of Gatehouse's (a query validated to
1..200 characters, a search of the item store, empty here as there), so a ratio to
this server measures the edge, not a cheaper handler. Nothing else: no docs routes
(FastAPI's default adds four, tried before this one by the router), as Gatehouse
serves none by default.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query, Request

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
items: dict[int, dict[str, Any]] = {}


@app.get("/search")
async def search(
    request: Request, q: Annotated[str, Query(min_length=1, max_length=200)]
) -> dict[str, Any]:
    matches = [item for item in items.values() if q.lower() in item["name"].lower()]
    return {"query": q, "results": matches[:20]}


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}
