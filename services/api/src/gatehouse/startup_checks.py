"""Checks made once before serving, where a lazy first connection would hide a mistake.

A ``rediss://`` server whose certificate the configured CA did not sign can never
work: that is configuration, so start-up stops with one line naming the variables.
A Redis that merely does not answer yet is an outage, not a mistake: it is logged and
the failure mode takes over, exactly as when Redis goes away later.
"""

from __future__ import annotations

import logging
import socket
import ssl
from urllib.parse import urlsplit

# Long enough for a TLS handshake on a busy node; short enough not to delay start-up.
CHECK_TIMEOUT_FLOOR = 1.0
CHECK_TIMEOUT_CEILING = 3.0


class StartupCheckError(Exception):
    """A setting that cannot work; the message is the one line to print."""


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """What both Redis clients verify a ``rediss://`` server with: the CA file, or the
    system's CAs; the host name (or IP address) must match the certificate."""
    return ssl.create_default_context(cafile=ca_file)


def check_redis_tls(
    url: str | None, ca_file: str | None, timeout: float, logger: logging.Logger
) -> None:
    """One TLS handshake with a ``rediss://`` server; anything else is not checked here.

    Raises ``StartupCheckError`` when the server's certificate is not trusted.
    """
    if not url or urlsplit(url).scheme != "rediss":
        return
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or 6379
    wait = min(max(timeout * 4, CHECK_TIMEOUT_FLOOR), CHECK_TIMEOUT_CEILING)
    context = tls_context(ca_file)
    try:
        with (
            socket.create_connection((host, port), timeout=wait) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return
    except ssl.SSLCertVerificationError as error:
        trusted = (
            f"APP_REDIS_CA_FILE={ca_file}"
            if ca_file
            else "the system CAs (APP_REDIS_CA_FILE unset)"
        )
        raise StartupCheckError(
            f"APP_REDIS_URL: the TLS certificate of {host}:{port} is not trusted by {trusted}: "
            f"{error.verify_message or error.reason}"
        ) from None
    except (OSError, ssl.SSLError) as error:
        logger.warning(
            "rate-limit storage not reachable at start-up (%s:%d: %s); serving, failure mode applies",
            host,
            port,
            error,
        )
