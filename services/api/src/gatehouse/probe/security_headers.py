"""Grading the security headers every answer should carry, whatever its status.

(``gatehouse.middleware.security_headers`` is the service's side: it writes them.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .transport import Answer, header_tokens

# name -> the value it must have (None: any non-empty value). Graded on every response:
# what OWASP's REST cheat sheet asks of every API answer. The document-only fields
# (Referrer-Policy, Permissions-Policy, COOP/COEP/CORP) belong on HTML, not graded here.
REQUIRED_SECURITY_HEADERS: dict[str, str | None] = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": None,
    "cache-control": "no-store",
}
# Required on https only: browsers ignore it over plain http, where sending it is flagged.
HSTS_HEADER = "strict-transport-security"
# Headers that advertise the implementation (OWASP secure-headers "remove" list).
FORBIDDEN_HEADERS = ("server", "x-powered-by", "powered-by", "x-generator", "x-aspnet-version")


def grade_security_headers(answers: Sequence[Answer], https: bool) -> dict[str, Any]:
    """Union over all responses: a header counts as present only if every response had it."""
    required = dict(REQUIRED_SECURITY_HEADERS)
    if https:
        required[HSTS_HEADER] = None
    present: dict[str, str] = {}
    missing: set[str] = set()
    invalid: dict[str, str] = {}
    forbidden: dict[str, str] = {}
    for answer in answers:
        for name, expected in required.items():
            value = answer.headers.get(name)
            if not value:
                missing.add(name)
            elif expected is not None and expected.lower() not in header_tokens(value):
                invalid[name] = f"{value!r} (expected {expected!r}) on a {answer.status}"
            else:
                present.setdefault(name, value)
        for name in FORBIDDEN_HEADERS:
            if name in answer.headers:
                forbidden[name] = answer.headers[name]
    if not https and any(HSTS_HEADER in a.headers for a in answers):
        invalid[HSTS_HEADER] = "sent over plain http (ignored by browsers)"
    for name in missing | set(invalid):
        present.pop(name, None)
    return {
        "present": present,
        "missing": sorted(missing),
        "invalid": invalid,
        "forbidden": forbidden,
        "ok": not missing and not invalid and not forbidden,
    }
