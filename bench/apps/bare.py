"""Baseline: FastAPI with the route and nothing else."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI()


@app.get("/search")
async def search(q: str) -> dict[str, Any]:
    return {"query": q, "results": []}


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}
