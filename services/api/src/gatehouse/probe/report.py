"""The outcome of one probe run: the ``Report``, the command line's expectations checked
against it, and its rendering as text (for people) or JSON (for scripts and tests).

Pure: the report is filled in by ``run.probe``; nothing here sends anything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .options import Options


@dataclass
class Report:
    """What one run saw; ``run.probe`` fills it in, ``as_dict`` / ``as_text`` show it."""

    options: Options
    preflight: dict[str, Any] | None = None
    request: dict[str, Any] = field(default_factory=dict)
    status_counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    security: dict[str, Any] = field(default_factory=dict)
    rate_limit: dict[str, str] = field(default_factory=dict)
    client: dict[str, Any] = field(default_factory=dict)
    verdict: str = "refused"
    reasons: list[str] = field(default_factory=list)
    expectations: list[dict[str, Any]] = field(default_factory=list)


def check_expectations(report: Report) -> None:
    """Append one check per expectation on the command line (any failed one: exit 1)."""
    options = report.options
    checks = report.expectations
    if options.expect is not None:
        checks.append({"name": f"verdict {options.expect}", "ok": report.verdict == options.expect,
                       "detail": f"verdict {report.verdict}"})  # fmt: skip
    total = sum(report.status_counts.values())
    for status, count in options.expect_status:
        seen = report.status_counts.get(str(status), 0)
        if count is None:
            checks.append({"name": f"every response {status}", "ok": total > 0 and seen == total,
                           "detail": _counts_text(report.status_counts)})  # fmt: skip
        else:
            checks.append({"name": f"{count} x {status}", "ok": seen == count,
                           "detail": _counts_text(report.status_counts)})  # fmt: skip
    if options.expect_client_ip is not None:
        seen_ip = report.client.get("client_ip")
        wanted = options.expect_client_ip
        if wanted == "self":
            wanted = report.client.get("local_ip") or "(unknown local address)"
        checks.append({"name": f"client IP {wanted}", "ok": seen_ip is not None and seen_ip == wanted,
                       "detail": f"service saw {seen_ip}"
                       + (f" ({report.client['error']})" if report.client.get("error") else "")})  # fmt: skip
    if options.expect_security_headers:
        sec = report.security
        problems = [
            *sec["missing"],
            *sec["invalid"],
            *(f"{n} (forbidden)" for n in sec["forbidden"]),
        ]
        checks.append({"name": "security headers", "ok": sec["ok"],
                       "detail": "all present" if sec["ok"] else ", ".join(problems)})  # fmt: skip


def _counts_text(counts: Counter[str]) -> str:
    return ", ".join(f"{n} x {code}" for code, n in sorted(counts.items())) or "no responses"


def as_dict(report: Report) -> dict[str, Any]:
    options = report.options
    return {
        "url": f"{options.target.base}{options.target.path}",
        "origin": options.origin,
        "credentials": options.credentials,
        "verdict": report.verdict,
        "reasons": report.reasons,
        "preflight": report.preflight,
        "request": report.request,
        "status_counts": dict(sorted(report.status_counts.items())),
        "errors": dict(report.errors),
        "security_headers": report.security,
        "rate_limit": report.rate_limit,
        "client": report.client,
        "expectations": report.expectations,
        "ok": all(check["ok"] for check in report.expectations),
    }


def as_text(report: Report) -> str:
    data = as_dict(report)
    lines = [f"probe {data['url']} from origin {data['origin']}"
             f"{' (credentialed)' if data['credentials'] else ''}"]  # fmt: skip
    lines.append(f"CORS verdict: {data['verdict'].upper()}")
    lines += [f"  - {reason}" for reason in data["reasons"]]
    if report.preflight is not None:
        pre = report.preflight
        lines.append(f"preflight OPTIONS ({pre['method']}"
                     f"{' + ' + ','.join(pre['request_headers']) if pre['request_headers'] else ''})"
                     f": {pre['status']}, {'allowed' if pre['allowed'] else 'refused'}")  # fmt: skip
        lines += [f"  {name}: {value}" for name, value in pre["headers"].items()]
    req = report.request
    lines.append(f"request {req['method']}: {_counts_text(report.status_counts)}, "
                 f"{'allowed' if req['allowed'] else 'refused'}")  # fmt: skip
    lines += [f"  {name}: {value}" for name, value in req["headers"].items()]
    for error, count in report.errors.items():
        lines.append(f"  {count} x error: {error}")
    sec = report.security
    lines.append(f"security headers: {len(sec['present'])} present, "
                 f"{len(sec['missing'])} missing")  # fmt: skip
    lines += [f"  missing: {name}" for name in sec["missing"]]
    lines += [f"  invalid: {name}: {why}" for name, why in sec["invalid"].items()]
    lines += [f"  forbidden: {name}: {value}" for name, value in sec["forbidden"].items()]
    if report.rate_limit:
        lines.append("rate limit (last response):")
        lines += [f"  {name}: {value}" for name, value in report.rate_limit.items()]
    if report.client:
        client = report.client
        text = f"client IP seen by the service: {client.get('client_ip')}"
        text += f" (this probe connected from {client.get('local_ip')})"
        if client.get("error"):
            text += f"; {client['error']}"
        lines.append(text)
    for check in report.expectations:
        lines.append(
            f"{'ok  ' if check['ok'] else 'FAIL'} expect {check['name']}: {check['detail']}"
        )
    return "\n".join(lines)
