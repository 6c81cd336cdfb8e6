"""Image layer: build the image once per session and run it as the chart runs it.

The engine comes from ``scripts/docker-engine`` (which starts dockerd, installing
Debian's docker.io when it can); when no engine can be had, the whole layer skips with
that script's one line, reported once. The image is built by ``scripts/build-image`` every session:
a warm build is a few seconds of cache hits, and the tests never run a stale image.
``GATEHOUSE_TEST_IMAGE=<tag>`` tests an existing image instead, without building.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, RedisServer

from . import chartpod
from .container import Container, docker

# What the layer measured, printed at the end of the run (pytest_terminal_summary).
FACTS: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if FACTS:
        terminalreporter.section("image")
        for key, value in FACTS.items():
            terminalreporter.write_line(f"{key}: {value}")


_ENGINE = {"checked": False, "started_here": False, "missing": ""}


def _ensure_engine() -> str:
    """Start an engine if none answers; return why none can be had ("" when one answers)."""
    if _ENGINE["checked"]:
        return str(_ENGINE["missing"])
    _ENGINE["checked"] = True
    try:
        result = subprocess.run(
            [str(ROOT / "scripts/docker-engine"), "start"],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        _ENGINE["missing"] = f"no container engine ({error})"
        return str(_ENGINE["missing"])
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no container engine"]
        _ENGINE["missing"] = lines[-1].removeprefix("docker-engine: ")
    _ENGINE["started_here"] = result.stdout.strip() == "started"
    return str(_ENGINE["missing"])


def pytest_collection_modifyitems(config, items) -> None:  # type: ignore[no-untyped-def]
    """No engine: the layer reports as ONE skipped test, the rest of it deselected.

    (A skip per test, or per file, would repeat the same line 20 times in the summary.)
    """
    here = Path(__file__).parent
    layer = [item for item in items if here in Path(str(item.path)).parents]
    if not layer:
        return
    missing = _ensure_engine()
    if not missing:
        return
    layer[0].add_marker(pytest.mark.skip(reason=f"image layer: {missing}"))
    rest = set(layer[1:])
    config.hook.pytest_deselected(items=list(rest))
    items[:] = [item for item in items if item not in rest]


@pytest.fixture(scope="session")
def engine() -> Iterator[None]:
    missing = _ensure_engine()
    if missing:  # a test selected some other way; the collection hook normally skips first
        pytest.skip(f"image layer: {missing}")
    yield
    # Leave the machine as we found it: stop dockerd only if this session started it
    # (GATEHOUSE_KEEP_DOCKER=1 keeps it for the next run).
    if _ENGINE["started_here"] and not os.environ.get("GATEHOUSE_KEEP_DOCKER"):
        subprocess.run([str(ROOT / "scripts/docker-engine"), "stop"], capture_output=True)


@pytest.fixture(scope="session")
def image(engine: None) -> str:
    """The tag under test, built from the working tree unless GATEHOUSE_TEST_IMAGE names one."""
    given = os.environ.get("GATEHOUSE_TEST_IMAGE")
    if given:
        if docker("image", "inspect", given, check=False).returncode != 0:
            pytest.fail(f"GATEHOUSE_TEST_IMAGE={given} is not a local image")
        FACTS["build"] = f"not built: GATEHOUSE_TEST_IMAGE={given}"
        tag = given
    else:
        tag = os.environ.get("IMAGE", "gatehouse-api:dev")
        started = time.monotonic()
        result = subprocess.run(
            [str(ROOT / "scripts/build-image")],
            cwd=ROOT,
            env={**os.environ, "IMAGE": tag},
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            pytest.fail(f"scripts/build-image failed:\n{result.stderr[-4000:]}", pytrace=False)
        summary = result.stderr.strip().splitlines()[-1].removeprefix("build-image: ")
        FACTS["build"] = f"{time.monotonic() - started:.1f} s: {summary}"
    return tag


@pytest.fixture(scope="session")
def image_config(image: str) -> dict:
    return json.loads(docker("image", "inspect", image).stdout)[0]


@pytest.fixture(scope="session")
def pod() -> chartpod.ChartPod:
    """The API container of the rendered chart (or the marked fallback; see chartpod.py)."""
    spec = chartpod.load()
    FACTS["pod spec"] = spec.source
    for index, note in enumerate(spec.notes):
        FACTS[f"pod note {index + 1}"] = note
    return spec


@pytest.fixture(scope="session")
def redis_env() -> Iterator[dict[str, str | None]]:
    """APP_REDIS_URL for the container: a real redis-server on loopback when installed.

    The chart points the pods at its in-cluster Redis Service, a name that cannot
    resolve here; the same client code then talks to a loopback redis-server instead.
    Without redis-server the container counts in memory, and the report says so.
    """
    if shutil.which("redis-server") is None:
        FACTS["redis"] = "redis-server not installed: rate limits in memory"
        yield {"APP_REDIS_URL": None}
        return
    server = RedisServer()
    server.start()
    FACTS["redis"] = f"redis-server on {server.url}"
    try:
        yield {"APP_REDIS_URL": server.url}
    finally:
        server.stop()


@pytest.fixture(scope="session")
def start_container(image, pod, redis_env, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Start a container as ``user``; every container of the session is removed at its end."""
    started: list[Container] = []

    def start(user: str) -> Container:
        container = Container(image, pod, user, tmp_path_factory.mktemp("pod-files"), env=redis_env)
        started.append(container)
        container.start()
        FACTS.setdefault(
            "ready", f"docker run -> /readyz 200 in {container.ready_seconds:.2f} s ({user})"
        )
        return container

    yield start
    for container in started:
        container.remove()
