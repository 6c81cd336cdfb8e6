"""Running the Skaffold the local cluster builds (cluster/modules/skaffold) from the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.helpers import ROOT

LOCAL_BIN = ROOT / ".cluster" / "bin"


def skaffold_binary() -> Path | None:
    """.cluster/bin/skaffold (linked by `python -m cluster build|up`), else one on PATH."""
    linked = LOCAL_BIN / "skaffold"
    if linked.exists():
        return linked
    found = shutil.which("skaffold")
    return Path(found) if found else None


def helm_binary() -> Path:
    """The helm scripts/helm runs (fetched on first use): Skaffold calls `helm` from PATH."""
    done = subprocess.run([str(ROOT / "scripts" / "helm"), "version", "--short"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, f"scripts/helm cannot run helm: {done.stderr}"
    scripts = (ROOT / "scripts").resolve()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / "helm"
        if candidate.is_file() and candidate.resolve().parent != scripts:
            return candidate
    fetched = ROOT / ".tools" / "bin" / "helm"
    assert fetched.is_file(), "scripts/helm ran helm, but it is neither on PATH nor in .tools/bin"
    return fetched


def skaffold_env(scratch: Path, **extra: str) -> dict[str, str]:
    """The environment to run Skaffold in: helm and Skaffold first on PATH, a global config of
    its own (no update check or survey: no network), nothing of the caller's SKAFFOLD_*."""
    tools = scratch / "tools"
    tools.mkdir(parents=True, exist_ok=True)
    for binary in (helm_binary(), skaffold_binary()):
        assert binary is not None, "skaffold is not built"
        link = tools / binary.name
        if not link.exists():
            link.symlink_to(binary.resolve())
    global_config = scratch / "skaffold-global.yaml"
    global_config.write_text(yaml.safe_dump({
        "global": {"update-check": False, "collect-metrics": False,
                   "survey": {"disable-prompt": True}},
    }))  # fmt: skip
    env = {key: value for key, value in os.environ.items() if not key.startswith("SKAFFOLD_")}
    env.update(
        PATH=os.pathsep.join((str(tools), env.get("PATH", ""))),
        SKAFFOLD_CONFIG=str(global_config),
        SKAFFOLD_UPDATE_CHECK="false",
        SKAFFOLD_INTERACTIVE="false",
        **extra,
    )
    return env
