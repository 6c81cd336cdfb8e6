"""The management port (``APP_METRICS_PORT``): liveness, readiness and metrics, never routed.

The kubelet probes this port and Prometheus scrapes it; the Service and the ingress only
know the serving port, so no Host header and no route can bring an outside request here.
One process listens on both ports; ``PortSplit`` sends each connection's requests by the
local port it arrived on. A pure ASGI app: its callers are the cluster's own, so it has
no CORS, no Host check and no limit, only the security headers every answer carries.
"""

from __future__ import annotations

import json

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

from .app import Readiness
from .metrics import Metrics
from .middleware.problem import problem_body, send_problem

JSON = b"application/json"
LIVE_BODY = json.dumps({"status": "ok"}).encode()
NOT_FOUND = problem_body(404, "Not Found", "the management port serves /healthz, /readyz, /metrics")
METHOD_NOT_ALLOWED = problem_body(405, "Method Not Allowed")
READ_METHODS = frozenset({"GET", "HEAD"})


class ManagementApp:
    """``/healthz`` (the process answers), ``/readyz`` (``readiness`` decides) and
    ``/metrics`` (the Prometheus text format); 404 for any other path, 405 for any
    method but GET and HEAD."""

    def __init__(
        self, metrics: Metrics, readiness: Readiness, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is the serving app's (PortSplit)
            return
        path = scope["path"]
        if path not in ("/healthz", "/readyz", "/metrics"):
            await send_problem(send, 404, NOT_FOUND, self.headers)
            return
        if scope["method"] not in READ_METHODS:
            await send_problem(
                send, 405, METHOD_NOT_ALLOWED, [(b"allow", b"GET, HEAD"), *self.headers]
            )
            return
        status, content_type, body = 200, JSON, LIVE_BODY
        if path == "/readyz":
            ready, state = await self.readiness()
            status, body = (200 if ready else 503), json.dumps(state).encode()
        elif path == "/metrics":
            content_type, body = (
                CONTENT_TYPE_LATEST.encode(),
                generate_latest(self.metrics.registry),
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", b"%d" % len(body)),
                    *self.headers,
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )


class PortSplit:
    """Requests that arrived on ``management_port`` go to ``management``; every other
    request, and the lifespan, to ``serving`` (the edge)."""

    def __init__(self, serving: ASGIApp, management: ASGIApp, management_port: int) -> None:
        self.serving = serving
        self.management = management
        self.management_port = management_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # scope["server"] is the local address the connection was accepted on.
        server = scope.get("server")
        if server is not None and server[1] == self.management_port:
            await self.management(scope, receive, send)
        else:
            await self.serving(scope, receive, send)
