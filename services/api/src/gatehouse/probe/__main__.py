"""``python -m gatehouse.probe``: parse the command line, run the probe, print the report.

Exit status: 0 when every expectation given on the command line holds, 1 when one
fails, 2 for a usage error, 3 when the endpoint cannot be reached at all.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .options import UsageError, parse_options
from .report import as_dict, as_text
from .run import STOP, probe
from .transport import Unreachable, wait_reachable

EXIT_OK = 0
EXIT_EXPECTATION_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def main(argv: Sequence[str] | None = None) -> int:
    try:
        options = parse_options(argv)
    except UsageError as error:
        print(f"probe: {error}", file=sys.stderr)
        return EXIT_USAGE

    # A pod's termination: finish what is in flight and still report.
    def stop(signum: int, frame: FrameType | None) -> None:
        STOP.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
    if options.wait_reachable:
        wait_reachable(options.target, options.wait_reachable)
    try:
        report = probe(options)
    except Unreachable as error:
        print(f"probe: cannot reach {options.target.base}: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if options.as_json:
        print(json.dumps(as_dict(report), indent=2))
    else:
        print(as_text(report))
    return EXIT_OK if all(check["ok"] for check in report.expectations) else EXIT_EXPECTATION_FAILED


if __name__ == "__main__":
    sys.exit(main())
