"""What the final image holds, and what it does not: read from inside, in one run."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest

from tests.helpers import ROOT

from .conftest import FACTS
from .container import docker

SBOM_PATH = "/usr/share/doc/gatehouse/sbom.cdx.json"

# Runs inside the image (as root, to see every directory, and with no network).
INVENTORY = r"""
import hashlib, importlib, importlib.metadata as md, importlib.util, json, os, shutil, sys, sysconfig
skip = {"/proc", "/sys", "/dev"}
found = {"git": [], "tests": [], "wheels": [], "pip_cache": [], "apt_lists": []}
for top, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(top, d) not in skip]
    for d in dirs:
        path = os.path.join(top, d)
        if d == ".git":
            found["git"].append(path)
        if d == "tests" and not path.startswith(sys.base_prefix + "/lib/"):
            found["tests"].append(path)
        if d == "pip" and os.path.basename(top) == ".cache":
            found["pip_cache"].append(path)
    for f in files:
        path = os.path.join(top, f)
        if f.endswith(".whl") and not path.startswith("/usr/share/python-wheels/"):
            found["wheels"].append(path)
        if top.startswith("/var/lib/apt/lists") and f != "lock":
            found["apt_lists"].append(path)
site = sysconfig.get_paths()["purelib"]
broken = {}
modules = []
for top, dirs, files in os.walk(site):
    for f in files:
        if f.endswith(".so"):
            rel = os.path.relpath(os.path.join(top, f), site)
            name = rel.split(".")[0].replace(os.sep, ".")
            modules.append(name)
            try:
                importlib.import_module(name)
            except Exception as error:
                broken[name] = repr(error)
print(json.dumps({
    "found": found,
    "compilers": {n: shutil.which(n) for n in ("gcc", "cc", "c++", "g++", "clang", "make", "ld")},
    "pip_in_venv": importlib.util.find_spec("pip") is not None,
    "setuptools_in_venv": importlib.util.find_spec("setuptools") is not None,
    "python": sys.version.split()[0],
    "prefix": sys.prefix,
    "extensions": sorted(modules),
    "broken_extensions": broken,
    "distributions": sorted(
        {(d.metadata["Name"].lower().replace("_", "-"), d.version) for d in md.distributions()}
    ),
    "sbom_sha256": hashlib.sha256(open("%s", "rb").read()).hexdigest(),
    "abi": f"cp{sys.version_info.major}{sys.version_info.minor}",
    "edge_files": {
        name: importlib.import_module(name).__file__
        for name in ("gatehouse.edge", "gatehouse.ratelimit.limiter", "gatehouse.service")
    },
}))
""".replace("%s", SBOM_PATH)


@pytest.fixture(scope="module")
def inventory(image: str) -> dict:
    result = docker(
        "run", "--rm", "--network", "none", "--read-only", "--user", "0",
        "--entrypoint", "python", image, "-c", INVENTORY,
        timeout=120,
    )  # fmt: skip
    return json.loads(result.stdout)


def test_runs_as_the_charts_non_root_user_by_default(image_config: dict, pod) -> None:
    user = image_config["Config"]["User"]
    assert user == f"{pod.run_as_user}:{pod.run_as_group}", user
    uid = int(user.split(":")[0])  # numeric, so Kubernetes can verify runAsNonRoot
    assert uid != 0


def test_size_is_reported(image_config: dict) -> None:
    size_mb = image_config["Size"] / 1e6
    FACTS["size"] = f"{size_mb:.0f} MB ({image_config['Id'][7:19]})"
    print(f"image size: {size_mb:.0f} MB")
    assert size_mb < 400, f"{size_mb:.0f} MB: the base or the venv grew unexpectedly"


def test_no_compiler(inventory: dict) -> None:
    assert {name: path for name, path in inventory["compilers"].items() if path} == {}


def test_no_pip_cache_no_apt_lists_no_wheelhouse(inventory: dict) -> None:
    found = inventory["found"]
    assert found["pip_cache"] == []
    assert found["apt_lists"] == []
    assert found["wheels"] == []


def test_no_tests_no_git(inventory: dict) -> None:
    assert inventory["found"]["git"] == []
    assert inventory["found"]["tests"] == []


def test_service_venv_has_no_installer(inventory: dict) -> None:
    assert inventory["prefix"] == "/opt/venv"
    assert not inventory["pip_in_venv"]
    assert not inventory["setuptools_in_venv"]


def test_every_compiled_extension_imports(inventory: dict) -> None:
    """The wheelhouse matched the base's Python and ABI (pydantic-core, uvloop, hiredis...)."""
    FACTS["python in image"] = inventory["python"]
    assert len(inventory["extensions"]) >= 5, inventory["extensions"]
    assert inventory["broken_extensions"] == {}


def test_the_edge_is_compiled_when_the_host_can_build_for_the_base(inventory: dict) -> None:
    """scripts/build-image puts the mypyc build in the wheel when this host's Python has
    the base's ABI (the case here); `make bench` measures that build."""
    files = inventory["edge_files"]
    host_abi = f"cp{sys.version_info.major}{sys.version_info.minor}"
    if inventory["abi"] != host_abi:
        assert files["gatehouse.edge"].endswith(".py"), files
        pytest.skip(f"the base's Python is {inventory['abi']}, this host's {host_abi}: sources")
    FACTS["edge"] = "compiled (mypyc)"
    assert files["gatehouse.edge"].endswith(".so"), files
    assert files["gatehouse.ratelimit.limiter"].endswith(".so"), files
    # Start-up code stays interpreted; the sources ship beside the extensions either way.
    assert files["gatehouse.service"].endswith(".py"), files


def test_sbom_names_exactly_what_is_installed(image_config: dict, inventory: dict) -> None:
    labels = image_config["Config"]["Labels"]
    assert labels["gatehouse.sbom.sha256"] == inventory["sbom_sha256"]
    host_copy = ROOT / "build/sbom.cdx.json"
    if host_copy.exists() and labels["gatehouse.sbom.path"] == SBOM_PATH:
        assert hashlib.sha256(host_copy.read_bytes()).hexdigest() == inventory["sbom_sha256"]
    sbom = json.loads(
        docker("run", "--rm", "--network", "none", "--entrypoint", "cat", image_config["Id"],
               SBOM_PATH).stdout
    )  # fmt: skip
    assert sbom["bomFormat"] == "CycloneDX"
    listed = {(c["name"].lower().replace("_", "-"), c["version"]) for c in sbom["components"]}
    listed.add((sbom["metadata"]["component"]["name"], sbom["metadata"]["component"]["version"]))
    installed = {tuple(pair) for pair in inventory["distributions"]}
    assert listed == installed
