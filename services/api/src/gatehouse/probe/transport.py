"""Talking to the endpoint: one request per fresh connection, and what came back.

Only the standard library (``http.client``, ``ssl``, ``socket``) is used, so the probe
runs in the slim API image with nothing installed beside the service.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .options import Options, Target, netloc


class Unreachable(OSError):
    """No TCP/TLS connection, or no HTTP answer, could be had from the endpoint."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    local_ip: str | None


def header_tokens(value: str | None) -> set[str]:
    """The lower-cased items of a comma-separated header value (absent: none)."""
    return {item.strip().lower() for item in (value or "").split(",") if item.strip()}


def wait_reachable(target: Target, seconds: float) -> bool:
    """Retry a TCP connect to ``target`` for up to ``seconds``; True once one succeeds.

    NetworkPolicy agents that program rules from the API (kube-router, for one) admit a
    new pod's address a moment after its container starts: its first connections are
    refused. A probe that means to measure the service, not that moment, waits it out.
    """
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection(
                (target.host, target.port), timeout=max(0.2, min(1.0, remaining))
            ):
                return True
        except OSError:
            if remaining <= 0.2:
                return False
            time.sleep(0.2)


def describe_error(error: BaseException, timeout: float) -> str:
    """The failure as the short phrase the report and the one-line stderr message show."""
    if isinstance(error, TimeoutError | socket.timeout):
        return f"timed out after {timeout:g} s"
    if isinstance(error, socket.gaierror):
        return f"name resolution failed ({error.strerror or error})"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, ssl.SSLError):
        return f"TLS error ({error.reason or error})"
    if isinstance(error, http.client.RemoteDisconnected):
        return "closed without an answer"
    return f"{type(error).__name__}: {error}"


def send(
    options: Options,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | None = None,
) -> Answer:
    """One request on a fresh connection (as a browser's first request would be)."""
    target = options.target
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        context = ssl.create_default_context()
        if options.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(
            target.host, target.port, timeout=options.timeout, context=context
        )
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=options.timeout)
    # http.client sends its own Host only when none is given.
    host = options.host_header or netloc(target.host, target.port)
    all_headers = {"Host": host, "Accept": "application/json", "Connection": "close"}
    for name, value in headers:
        all_headers[name] = value
    try:
        conn.request(method, path, body=body, headers=all_headers)
        local_ip = conn.sock.getsockname()[0] if conn.sock is not None else None
        response = conn.getresponse()
        payload = response.read()
    except (OSError, http.client.HTTPException) as error:
        raise Unreachable(describe_error(error, options.timeout)) from error
    finally:
        conn.close()
    merged: dict[str, str] = {}
    for name, value in response.getheaders():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return Answer(response.status, merged, payload, local_ip)
