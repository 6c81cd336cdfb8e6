"""The cluster probe (`kubectl run ... python -m gatehouse.probe`) runs from the image."""

from __future__ import annotations

import pytest

from .container import Container, docker

RESTRICTED = (
    "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
    "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
)  # fmt: skip


@pytest.fixture(scope="module")
def probe_in_image(image: str) -> str:
    has_probe = docker(
        "run", *RESTRICTED, "--entrypoint", "python", image, "-c",
        "import importlib.util, sys; sys.exit(importlib.util.find_spec('gatehouse.probe') is None)",
        check=False,
    )  # fmt: skip
    if has_probe.returncode != 0:
        pytest.skip("gatehouse.probe is not in the image yet (its module is still being written)")
    return image


def test_probe_help(probe_in_image: str) -> None:
    result = docker(
        "run", *RESTRICTED, "--entrypoint", "python", probe_in_image,
        "-m", "gatehouse.probe", "--help",
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


def test_probe_from_the_image_checks_a_running_container(
    probe_in_image: str, start_container, pod
) -> None:  # type: ignore[no-untyped-def]
    served: Container = start_container(f"{pod.run_as_user}:{pod.run_as_group}")
    origin = pod.env["APP_ALLOWED_ORIGINS"].split(",")[0]
    host = pod.env.get("APP_TRUSTED_HOSTS", "localhost").split(",")[0]
    result = docker(
        "run", *[a for a in RESTRICTED if a not in ("--network", "none")], "--network", "host",
        "--entrypoint", "python", probe_in_image, "-m", "gatehouse.probe",
        "--url", f"{served.url}/whoami", "--origin", origin, "--host-header", host,
        "--expect", "allowed",
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
