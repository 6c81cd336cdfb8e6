"""The browser's side of CORS: would a page on ``--origin`` be let read this answer?

These are the Fetch standard's checks applied to answers already received; nothing
here sends anything. (``gatehouse.middleware.cors`` is the service's side: it writes
the headers judged here.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .transport import Answer, header_tokens

# Fetch standard: methods a preflight never has to allow, and request headers that are
# never covered by a "*" in Access-Control-Allow-Headers.
SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})
NON_WILDCARD_HEADERS = frozenset({"authorization"})

# The headers of an answer that the report shows next to its CORS verdict.
CORS_RESPONSE_HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
    "vary",
)


@dataclass
class CorsResult:
    allowed: bool
    reasons: list[str]
    headers: dict[str, str]


def cors_check(answer: Answer, origin: str, credentials: bool) -> list[str]:
    """The Fetch standard's CORS check: reasons it fails (empty when it passes)."""
    acao = answer.headers.get("access-control-allow-origin")
    if acao is None:
        return ["no Access-Control-Allow-Origin"]
    reasons = []
    if acao.strip() == "*":
        if credentials:
            reasons.append("Access-Control-Allow-Origin is '*' on a credentialed request")
    elif acao.strip() != origin:
        reasons.append(f"Access-Control-Allow-Origin mismatch: {acao!r} is not {origin!r}")
    if credentials and answer.headers.get("access-control-allow-credentials") != "true":
        reasons.append("Access-Control-Allow-Credentials: true missing (credentialed request)")
    return reasons


def judge_preflight(
    answer: Answer, origin: str, credentials: bool, method: str, headers: Sequence[str]
) -> list[str]:
    """The CORS check plus the preflight's own: an ok status, the method and every
    requested header allowed. Reasons it fails (empty when it passes)."""
    reasons = cors_check(answer, origin, credentials)
    if not 200 <= answer.status <= 299:
        reasons.append(f"preflight status {answer.status} is not ok (2xx)")
    methods = {m.upper() for m in header_tokens(answer.headers.get("access-control-allow-methods"))}
    wildcard_methods = "*" in methods and not credentials
    if method not in methods and method not in SAFELISTED_METHODS and not wildcard_methods:
        reasons.append(f"method {method} not allowed (Access-Control-Allow-Methods: "
                       f"{answer.headers.get('access-control-allow-methods', '')!r})")  # fmt: skip
    allowed = header_tokens(answer.headers.get("access-control-allow-headers"))
    wildcard_headers = "*" in allowed and not credentials
    refused = [
        name
        for name in headers
        if name not in allowed and (not wildcard_headers or name in NON_WILDCARD_HEADERS)
    ]
    if refused:
        reasons.append(f"headers {', '.join(refused)} not allowed (Access-Control-Allow-Headers: "
                       f"{answer.headers.get('access-control-allow-headers', '')!r})")  # fmt: skip
    return reasons
