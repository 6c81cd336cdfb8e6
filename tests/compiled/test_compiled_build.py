"""The compiled build (``make compiled``): what the image ships and ``make bench`` measures.

The same sources, compiled with mypyc. Its hot-path modules must load as extension
modules, everything else from the sources beside them, and the unit suite must pass
against it: a compiled module differs from its source in ways tests catch (native
classes take no new attributes, annotations are checked at run time, module globals
are bound at compile time).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers import ROOT, compiled_build

SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")


def hot_path() -> tuple[str, ...]:
    """HOT_PATH as scripts/build-compiled declares it (the script is not a module)."""
    spec = importlib.util.spec_from_loader("build_compiled", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    path = ROOT / "scripts" / "build-compiled"
    module.__dict__["__file__"] = str(path)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    modules: tuple[str, ...] = module.HOT_PATH
    return modules


def module_name(relative: str) -> str:
    return "gatehouse." + relative.removesuffix(".py").replace("/", ".")


@pytest.fixture(scope="module")
def build() -> Path:
    return compiled_build()


def run_with(build: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(build), str(ROOT)])}
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


def test_the_hot_path_loads_compiled_and_the_rest_from_source(build):
    hot = [module_name(path) for path in hot_path()]
    cold = ["gatehouse.service", "gatehouse.settings.model", "gatehouse.ratelimit.pipeline"]
    done = run_with(
        build,
        "-c",
        "import importlib, json, sys\n"
        "print(json.dumps({n: importlib.import_module(n).__file__ for n in sys.argv[1:]}))",
        *hot,
        *cold,
    )
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout)
    for name in hot:
        assert files[name].endswith(SUFFIX), f"{name} loaded from {files[name]}"
        assert Path(files[name]).is_relative_to(build)
    for name in cold:
        assert files[name].endswith(".py"), f"{name} loaded from {files[name]}"
        assert Path(files[name]).is_relative_to(build)
    # The hot path is what edge.py runs per request, and it is all there.
    assert len(hot) >= 10


def test_the_unit_suite_passes_against_the_compiled_build(build):
    done = run_with(
        build,
        "-m",
        "pytest",
        "tests/unit",
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        "-p",
        "tests.compiled.native_only",
    )
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, tail
    assert " passed" in done.stdout and " failed" not in done.stdout, tail


def test_a_run_on_the_sources_is_refused_by_the_native_only_plugin():
    """The plugin the run above relies on does fail when the build is not on the path."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/unit/test_settings.py", "-q",
         "-p", "no:cacheprovider", "-p", "tests.compiled.native_only"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "gatehouse.edge is not compiled here" in done.stdout + done.stderr


def test_the_build_is_reused_while_its_sources_are_unchanged(build):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build-compiled")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "is up to date" in done.stdout
    assert (build / ".fingerprint").is_file()
