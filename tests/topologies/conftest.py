"""Fixtures of the topology layer: a Redis Cluster, a Sentinel set, TLS certificates.

Each is made of real processes on loopback ports, started for the test and killed
after it (a test may kill or reshard parts of it). ``api_server`` and
``report_figure`` come from tests/conftest.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.topologies.servers import Cluster, SentinelSet, make_certificates

PASSWORD = "topology-secret"

MISSING = [
    command
    for command in ("redis-server", "redis-cli", "redis-sentinel")
    if not shutil.which(command)
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not MISSING:
        return
    skip = pytest.mark.skip(
        reason=f"{', '.join(MISSING)} not installed "
        "(scripts/ensure-system-deps redis-server redis-sentinel)"
    )
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three primaries with one replica each; every node requires ``PASSWORD``."""
    topology = Cluster(tmp_path / "redis", password=PASSWORD)
    topology.start()
    yield topology
    topology.stop()


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    """One primary, one replica, three sentinels (quorum 2); data nodes require ``PASSWORD``."""
    topology = SentinelSet(tmp_path / "redis", password=PASSWORD)
    topology.start()
    yield topology
    topology.stop()


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    return make_certificates(tmp_path_factory.mktemp("tls"))
