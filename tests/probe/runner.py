"""Runs the probe as its own process, exactly as a helm test pod or ``kubectl run`` does."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from tests.helpers import ROOT

ALLOWED = "https://app.example.com"
FOREIGN = "https://evil.example"


@dataclass
class ProbeRun:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)


def run_probe(*args: str, timeout: float = 60) -> ProbeRun:
    """``python -m gatehouse.probe`` as a separate process, exactly as a pod runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "gatehouse.probe", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return ProbeRun(done.returncode, done.stdout, done.stderr)
