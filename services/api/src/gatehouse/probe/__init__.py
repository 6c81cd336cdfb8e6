"""``python -m gatehouse.probe``: check an endpoint the way a browser on ``--origin`` would.

It sends what a page's ``fetch`` would cause: a preflight (OPTIONS with
``Access-Control-Request-Method`` / ``-Headers``) and the request itself with ``Origin``,
then applies the Fetch standard's CORS checks to both answers. It also grades the
security headers of every response, reports the rate-limit headers, and asks
``GET /whoami`` on the same base URL which client IP the service saw.

Only the standard library is used, so the probe runs in the slim API image (helm test
pods, ``kubectl run``) with nothing installed beside the service.

Read in this order:

- ``options``: the command line, checked and turned into ``Options`` (usage errors).
- ``transport``: one request per fresh connection, the ``Answer``, reachability wait.
- ``cors``: the browser's CORS check of an answer and of a preflight's answer.
- ``security_headers``: the security headers graded over every answer.
- ``report``: the ``Report``, the command line's expectations, text and JSON output.
- ``run``: ``probe(options)``, one run start to finish.
- ``__main__``: ``main(argv)``, its exit status and the SIGTERM handling.
"""

# ``main`` is deliberately not re-exported: importing ``__main__`` here would make
# ``python -m gatehouse.probe`` find it already imported and print a RuntimeWarning.

from __future__ import annotations

from .cors import cors_check, judge_preflight
from .options import Options, Target, UsageError, parse_options, parse_url
from .report import Report, as_dict, as_text, check_expectations
from .run import probe
from .security_headers import grade_security_headers
from .transport import Answer, Unreachable, send, wait_reachable

__all__ = [
    "Answer",
    "Options",
    "Report",
    "Target",
    "Unreachable",
    "UsageError",
    "as_dict",
    "as_text",
    "check_expectations",
    "cors_check",
    "grade_security_headers",
    "judge_preflight",
    "parse_options",
    "parse_url",
    "probe",
    "send",
    "wait_reachable",
]
