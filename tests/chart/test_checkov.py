"""checkov's Kubernetes policies pass on every rendered environment. Skips live in
.checkov.yaml, each with its reason. checkov is slow to start, so it runs once per session
over a folder holding one rendered file per environment."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT, Doc

CHECKOV = ROOT / ".venv" / "bin" / "checkov"


@pytest.fixture(scope="session")
def checkov_report(
    rendered: dict[str, list[Doc]], tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("rendered")
    for env, docs in rendered.items():
        (folder / f"{env}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    result = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            str(folder),
            "--config-file",
            str(ROOT / ".checkov.yaml"),
            "--output",
            "json",
            "--quiet",
            "--compact",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=ROOT,
        # Offline: do not fetch guideline mappings from the vendor's platform.
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_DISABLE_TELEMETRY": "TRUE"},
    )
    # 0: all passed, 1: failures found; anything else is checkov itself failing.
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    return report if isinstance(report, list) else [report]


def test_checkov_finds_no_failed_check(checkov_report: list[dict[str, Any]]) -> None:
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({Path(c['file_path']).name})"
        for section in checkov_report
        for c in section.get("results", {}).get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)


def test_checkov_ran_checks_on_every_environment(
    checkov_report: list[dict[str, Any]], rendered: dict[str, list[Doc]]
) -> None:
    # With --quiet the report lists only failures, so read the summary instead.
    summary = checkov_report[0].get("summary", {})
    assert summary.get("passed", 0) > 100 * len(rendered), summary
    assert summary.get("resource_count", 0) >= sum(len(d) for d in rendered.values()) // 2, summary
