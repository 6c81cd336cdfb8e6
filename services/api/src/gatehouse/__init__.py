"""Gatehouse: a FastAPI service whose browser-facing edge is correct on Kubernetes."""

__version__ = "0.1.0"
