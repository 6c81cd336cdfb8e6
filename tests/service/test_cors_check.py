"""``python -m gatehouse.cors_check`` as an operator runs it: a real process, the chart's
real values files, exit status 0 (allowed), 1 (refused), 2 (unusable)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import PYTHON

ROOT = Path(__file__).resolve().parents[2]
STAGING = ROOT / "k8s" / "values-staging.yaml"
STAGING_APP = "https://app.staging.gatehouse.example"


def cors_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "gatehouse.cors_check", *args],
        cwd=ROOT,
        # An APP_* variable of this shell must not leak into a check from values files.
        env={"PATH": "/usr/bin:/bin", "APP_CORS_MAX_AGE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_allowed_preflighted_request():
    result = cors_check("--values", str(STAGING), "--origin", STAGING_APP, "--method", "PUT",
                        "--header", "Content-Type")  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "environment staging" in out
    assert "preflight: OPTIONS /items/1" in out and "  status: 200" in out
    assert f"access-control-allow-origin: {STAGING_APP}" in out
    assert "access-control-max-age: 600" in out  # the values', not this shell's 1
    assert out.rstrip().endswith("verdict: allowed (the page can read the answer)")


@pytest.mark.parametrize(
    ("args", "reason", "detail"),
    [
        (("--method", "PUT", "--header", "X-Custom"), "header_not_allowed", "header x-custom"),
        (("--method", "PATCH"), "method_not_allowed", "method PATCH"),
    ],
)
def test_a_refused_preflight_says_why(args, reason, detail):
    result = cors_check("--values", str(STAGING), "--origin", STAGING_APP, *args)
    assert result.returncode == 1, result.stderr
    assert f"refused: {reason} ({detail})" in result.stdout
    assert "the browser stops here" in result.stdout
    assert f"verdict: refused: {reason}" in result.stdout


@pytest.mark.parametrize(
    "origin", ["null", "https://app.gatehouse.example"]
)  # prod's, not staging's
def test_an_origin_off_the_namespaces_list(origin):
    result = cors_check("--values", str(STAGING), "--origin", origin)
    assert result.returncode == 1, result.stderr
    assert "preflight: none" in result.stdout
    assert f"refused: origin_not_listed (origin {origin})" in result.stdout


def test_a_huge_header_list_is_answered_and_printed_bounded():
    headers = [arg for n in range(2000) for arg in ("--header", f"X-H{n}")]
    result = cors_check("--values", str(STAGING), "--origin", STAGING_APP, "--method", "PUT",
                        *headers)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "refused: header_not_allowed (header x-h0)" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) < 500


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--origin", "https://a.example\r\nSet-Cookie: x=1"), "--origin"),
        (("--origin", STAGING_APP, "--header", "X-A\nB"), "--header"),
        (("--origin", STAGING_APP, "--method", "PUT PATCH"), "--method"),
    ],
)
def test_hostile_arguments_are_refused_in_one_line(args, named):
    result = cors_check("--values", str(STAGING), *args)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"gatehouse.cors_check: {named}: ")
    assert result.stdout == ""


def test_bad_values_stop_with_one_line_naming_the_variable(tmp_path):
    debug_elsewhere = tmp_path / "values-debug.yaml"
    debug_elsewhere.write_text("config:\n  corsDebugOrigins: [https://not-listed.example]\n")
    result = cors_check("--values", str(STAGING), "--values", str(debug_elsewhere),
                        "--origin", STAGING_APP)  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "APP_CORS_DEBUG_ORIGINS" in line and "https://not-listed.example" in line

    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("config: [unclosed\n")
    result = cors_check("--values", str(not_yaml), "--origin", STAGING_APP)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert str(not_yaml) in line and "not YAML" in line


def test_an_env_file_and_the_debug_header(tmp_path):
    env_file = tmp_path / "gatehouse.env"
    env_file.write_text(
        "APP_ALLOWED_ORIGINS=https://page.example,https://other.example\n"
        "APP_CORS_DEBUG_ORIGINS=https://page.example\n"
    )
    result = cors_check("--env-file", str(env_file), "--origin", "https://page.example")
    assert result.returncode == 0, result.stderr
    assert "gatehouse-cors-debug: allowed; methods=" in result.stdout
    other = cors_check("--env-file", str(env_file), "--origin", "https://other.example")
    assert other.returncode == 0, other.stderr
    assert "gatehouse-cors-debug" not in other.stdout
