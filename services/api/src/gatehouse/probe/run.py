"""One probe run, start to finish: preflight, the request (repeated, concurrent), the
client IP from ``/whoami``, then the CORS verdict and the graded ``Report``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .cors import CORS_RESPONSE_HEADERS, cors_check, judge_preflight
from .options import Options
from .report import Report, check_expectations
from .security_headers import grade_security_headers
from .transport import Answer, Unreachable, send

# Set by SIGTERM (a pod being deleted): the loop stops and the report is still printed.
STOP = threading.Event()

# Reported from the last response, where the limit's state is newest.
RATE_LIMIT_HEADERS = (
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-policy",
    "ratelimit",
    "retry-after",
)


def request_headers(options: Options) -> list[tuple[str, str]]:
    """The page's own request: ``Origin`` and the ``--header`` extras (also sent to /whoami)."""
    return [("Origin", options.origin), *options.headers]


def run_preflight(options: Options) -> dict[str, Any]:
    headers = [
        ("Origin", options.origin),
        ("Access-Control-Request-Method", options.preflight_method),
    ]
    if options.preflight_headers:
        headers.append(("Access-Control-Request-Headers", ",".join(options.preflight_headers)))
    # A browser sends no credentials and none of the page's headers on a preflight.
    answer = send(options, "OPTIONS", options.target.path, headers)
    reasons = judge_preflight(
        answer, options.origin, options.credentials, options.preflight_method,
        options.preflight_headers,
    )  # fmt: skip
    return {
        "method": options.preflight_method,
        "request_headers": options.preflight_headers,
        "status": answer.status,
        "allowed": not reasons,
        "reasons": reasons,
        "headers": {k: v for k, v in answer.headers.items() if k in CORS_RESPONSE_HEADERS},
        "answer": answer,
    }


class _Loop:
    """Sends the request repeatedly from C threads; stops on count, deadline or SIGTERM."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.lock = threading.Lock()
        self.remaining = options.repeat
        self.deadline = (
            time.monotonic() + options.duration if options.duration is not None else None
        )
        self.answers: list[Answer] = []
        self.errors: Counter[str] = Counter()

    def _claim(self) -> bool:
        if STOP.is_set():
            return False
        if self.deadline is not None:
            return time.monotonic() < self.deadline
        with self.lock:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            return True

    def worker(self) -> None:
        options = self.options
        while self._claim():
            try:
                answer = send(
                    options, options.method, options.target.path,
                    request_headers(options), options.data,
                )  # fmt: skip
            except Unreachable as error:
                with self.lock:
                    self.errors[str(error)] += 1
            else:
                with self.lock:
                    self.answers.append(answer)
            if options.interval:
                STOP.wait(options.interval)

    def run(self) -> None:
        workers = self.options.concurrency
        if self.options.duration is None:
            workers = min(workers, self.options.repeat)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in range(workers):
                pool.submit(self.worker)


def run_whoami(options: Options) -> dict[str, Any]:
    """The client IP the service saw; a failure here is reported, not fatal."""
    try:
        answer = send(options, "GET", "/whoami", request_headers(options))
    except Unreachable as error:
        return {"client_ip": None, "local_ip": None, "error": str(error)}
    result: dict[str, Any] = {
        "client_ip": None,
        "local_ip": answer.local_ip,
        "status": answer.status,
    }
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    if answer.status == 200 and isinstance(body, dict):
        result.update(client_ip=body.get("client_ip"), scheme=body.get("scheme"),
                      host=body.get("host"), request_id=body.get("request_id"))  # fmt: skip
    else:
        result["error"] = f"GET /whoami answered {answer.status}"
    return result


def probe(options: Options) -> Report:
    """Run everything the options ask for; ``Unreachable`` when no request got an answer."""
    report = Report(options)
    answers: list[Answer] = []
    reasons: list[str] = []
    if options.preflight:
        preflight = run_preflight(options)
        # Its headers are graded with the rest, but the raw answer stays out of the report.
        answers.append(preflight.pop("answer"))
        report.preflight = preflight
        reasons += [f"preflight: {r}" for r in preflight["reasons"]]

    loop = _Loop(options)
    loop.run()
    report.errors = loop.errors
    if not loop.answers:
        raise Unreachable(next(iter(loop.errors), "no answer"))
    report.status_counts = Counter(str(a.status) for a in loop.answers)
    if loop.errors:
        report.status_counts["error"] = sum(loop.errors.values())

    # Every answer must pass the CORS check: a 429 without CORS headers is a CORS error
    # to the page, not a 429.
    request_reasons: list[str] = []
    for answer in loop.answers:
        for reason in cors_check(answer, options.origin, options.credentials):
            text = f"{reason} (on a {answer.status})"
            if text not in request_reasons:
                request_reasons.append(text)
    first = loop.answers[0]
    report.request = {
        "method": options.method,
        "status": first.status,
        "allowed": not request_reasons,
        "reasons": request_reasons,
        "headers": {k: v for k, v in first.headers.items() if k in CORS_RESPONSE_HEADERS},
    }
    reasons += [f"request: {r}" for r in request_reasons]
    answers += loop.answers
    report.security = grade_security_headers(answers, options.target.scheme == "https")
    last = loop.answers[-1]
    report.rate_limit = {k: v for k, v in last.headers.items() if k in RATE_LIMIT_HEADERS}
    if options.whoami:
        report.client = run_whoami(options)
    report.verdict = "refused" if reasons else "allowed"
    report.reasons = reasons
    check_expectations(report)
    return report
