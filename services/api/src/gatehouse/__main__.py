"""``python -m gatehouse``: the one way to start the service.

The chart, the image, ``make run`` and the tests all run this. Settings come from the
environment (``APP_*``; proxy trust from uvicorn's own ``FORWARDED_ALLOW_IPS``), are
checked by ``create_app`` before anything listens, and a bad value stops the process
with exit status 2 and one line naming the variable. ``--host`` and ``--port`` may give
the listen address instead of ``APP_HOST`` / ``APP_PORT``. ``--reload`` (``skaffold
dev``) restarts on source changes; each restart builds the app through the same factory.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import uvicorn
from uvicorn.supervisors import ChangeReload

from .middleware.security_headers import security_headers
from .server_protocol import LimitedHttpToolsProtocol, limited_http_protocol
from .service import create_app, with_management_port
from .settings import ConfigError, load_proxy_settings, load_settings

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gatehouse", description=__doc__)
    parser.add_argument("--host", help="listen address (overrides APP_HOST)")
    parser.add_argument("--port", help="listen port (overrides APP_PORT)")
    parser.add_argument(
        "--reload", action="store_true", help="restart when a source file changes (development)"
    )
    arguments = parser.parse_args(argv)
    # The listen address is the one setting a command line may give: it is where the
    # process runs, not what it does; it is checked as APP_HOST / APP_PORT are.
    listen = {
        name: value
        for name, value in (("host", arguments.host), ("port", arguments.port))
        if value is not None
    }
    try:
        settings = load_settings(**listen)
        proxy = load_proxy_settings()
        # Built before saying anything: a setting valid alone but not for this app (an
        # unknown route template, an untrusted Redis certificate) stops start-up here.
        edge = create_app(settings)
    except ConfigError as error:
        print(f"gatehouse: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    management = (
        f", /healthz /readyz /metrics on port {settings.metrics_port}"
        if settings.metrics_port is not None
        else ""
    )
    print(
        f"gatehouse: serving on http://{settings.host}:{settings.port}{management} "
        f"(environment {settings.environment}, "
        f"rate limits in {'Redis' if settings.redis_url else 'memory'}, "
        f"trusting proxies in {','.join(proxy.forwarded_allow_ips)})",
        file=sys.stderr,
        flush=True,
    )
    # The request head's limits, and the security headers on what the server answers
    # itself. The reloader pickles its configuration into a fresh process for each change
    # (and imports the factory there): a class made here cannot travel, so --reload
    # serves with the module's class, whose limits are the defaults.
    protocol = (
        LimitedHttpToolsProtocol
        if arguments.reload
        else limited_http_protocol(
            max_header_bytes=settings.max_header_bytes,
            header_timeout=settings.header_timeout,
            extra_headers=security_headers(),
            on_refused=lambda reason: edge.metrics.request_refusals.labels(reason).inc(),
        )
    )
    config = uvicorn.Config(
        "gatehouse.service:create_server_app"
        if arguments.reload
        else with_management_port(edge, settings),
        factory=arguments.reload,
        reload=arguments.reload,
        reload_dirs=[str(SOURCE_ROOT)] if arguments.reload else None,
        http=protocol,
        # No websocket route: an Upgrade reaches the app as plain HTTP and is answered
        # through the edge, with its headers (server_protocol says what ws would lose).
        ws="none",
        host=settings.host,
        port=settings.port,
        proxy_headers=True,
        forwarded_allow_ips=proxy.forwarded_allow_ips,
        server_header=False,
        access_log=False,
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
        log_config=None,
    )
    serve(config, settings.metrics_port)


def serve(config: uvicorn.Config, metrics_port: int | None) -> None:
    """Run one uvicorn server on the serving socket and, when given, the management
    port's (what ``uvicorn.run`` does for one socket, with the reloader too)."""
    sockets = [config.bind_socket()]
    if metrics_port is not None:
        sockets.append(bind_socket(config.host, metrics_port))
    server = uvicorn.Server(config)
    try:
        if config.should_reload:
            ChangeReload(config, target=server.run, sockets=sockets).run()
        else:
            server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    if not server.started and not config.should_reload:
        raise SystemExit(1)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket as uvicorn binds its own: address reuse, inheritable by the
    reloader's worker process; a port in use stops start-up with one line."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        print(
            f"gatehouse: cannot listen on {host}:{port} (APP_METRICS_PORT): {error}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    sock.set_inheritable(True)
    return sock


if __name__ == "__main__":
    main()
