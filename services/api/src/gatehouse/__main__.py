"""``python -m gatehouse``: serve ``gatehouse.main:app`` with the stack's uvicorn flags.

Proxy trust comes from ``FORWARDED_ALLOW_IPS`` (uvicorn's own variable, CIDRs), checked
here first so that ``*`` or a malformed network stops start-up with one line.
"""

from __future__ import annotations

import sys

import uvicorn

from .settings import ConfigError, load_proxy_settings, load_settings


def main() -> None:
    try:
        settings = load_settings()
        proxy = load_proxy_settings()
    except ConfigError as error:
        print(f"gatehouse: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    # Build the app before saying anything: a setting that is valid alone but not for
    # this app (an unknown route template) still stops start-up with one line.
    from .main import app

    print(
        f"gatehouse: serving on http://{settings.host}:{settings.port} "
        f"(environment {settings.environment}, "
        f"rate limits in {'Redis' if settings.redis_url else 'memory'}, "
        f"trusting proxies in {','.join(proxy.forwarded_allow_ips)})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        proxy_headers=True,
        forwarded_allow_ips=proxy.forwarded_allow_ips,
        server_header=False,
        access_log=False,
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
        log_config=None,
    )


if __name__ == "__main__":
    main()
