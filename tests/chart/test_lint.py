"""helm lint --strict passes for the chart defaults and every environment file."""

from __future__ import annotations

import pytest

from .conftest import CHART, ENVIRONMENTS, helm, values_args


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_helm_lint_strict(env: str) -> None:
    result = helm("lint", "--strict", str(CHART), *values_args(env))
    assert result.returncode == 0, result.stdout + result.stderr
