"""Create the bundled Redis's password Secret once, with a random password.

Run by the chart's pre-install/pre-upgrade hook Job (templates/redis/password-job.yaml) with
the API image's python and the standard library only. The Secret is created only when it
does not exist; an existing one (an earlier install's, or one restored from a backup) is
kept as it is, so upgrades never change the password and no render ever holds it.

The Job's ServiceAccount may create Secrets in its namespace (RBAC cannot limit ``create``
to one name) and read only this one, which is how an existing Secret is checked for the key.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# The projected ServiceAccount token and the cluster CA (password-job.yaml mounts them here).
ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# 32 random bytes, URL-safe base64 without padding: 256 bits, 43 characters, nothing a
# redis:// URL would have to escape.
PASSWORD_BYTES = 32
TIMEOUT_SECONDS = 20


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class UnusableSecret(Exception):
    """The Secret exists but the pods could not use it; overwriting it is not this Job's call."""


def call(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request to the Kubernetes API as the Job's ServiceAccount; ApiError unless 2xx."""
    token = (ACCOUNT / "token").read_text().strip()
    request = urllib.request.Request(  # noqa: S310 - https to the in-cluster API only
        url,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        },
    )
    context = ssl.create_default_context(cafile=str(ACCOUNT / "ca.crt"))
    try:
        with urllib.request.urlopen(request, context=context, timeout=TIMEOUT_SECONDS) as reply:  # noqa: S310
            result: dict[str, Any] = json.loads(reply.read() or b"{}")
            return result
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")
        with contextlib.suppress(ValueError):  # the API's Status object, when it is one
            detail = json.loads(detail).get("message", detail)
        raise ApiError(error.code, str(detail)[:300]) from None


def secrets_url() -> str:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ["KUBERNETES_SERVICE_PORT"]
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"https://{host}:{port}/api/v1/namespaces/{os.environ['POD_NAMESPACE']}/secrets"


def check_existing(url: str, name: str, key: str) -> None:
    """Raise ApiError (404: absent) or UnusableSecret unless it holds a non-empty ``key``."""
    data = call("GET", f"{url}/{name}").get("data") or {}
    if not data.get(key):
        raise UnusableSecret(f"exists without a non-empty key {key!r}: fix or delete it")


def ensure_secret(url: str, name: str, key: str) -> str:
    """Create the Secret unless it exists; what was done, for the Job's log."""
    try:
        check_existing(url, name, key)
        return "exists: its password is kept"
    except ApiError as error:
        if error.status != 404:
            raise
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": json.loads(os.environ["SECRET_LABELS"])},
        "type": "Opaque",
        "data": {key: base64.b64encode(secrets.token_urlsafe(PASSWORD_BYTES).encode()).decode()},
    }
    try:
        call("POST", url, manifest)
    except ApiError as error:
        if error.status != 409:
            raise
        # Another run created it between the two calls: its password stands.
        check_existing(url, name, key)
        return "exists: its password is kept"
    return "created with a random password"


def main() -> int:
    name = os.environ["SECRET_NAME"]
    try:
        print(f"Secret {name} {ensure_secret(secrets_url(), name, os.environ['SECRET_KEY'])}")
    except (ApiError, UnusableSecret, OSError) as error:
        print(f"Secret {name}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
