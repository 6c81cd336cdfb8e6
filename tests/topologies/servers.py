"""Real Redis topologies on loopback: a Cluster, a Sentinel set, a TLS-only server.

Every process is started by the test (free ports, a temporary directory each) and
stopped, killed if need be, when the test ends; each runs as a ``stack.processes.Process``
(its own process group, ``server.log`` in its directory), through ``Supervised``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stack.processes import Process

from tests.helpers import Supervised, free_port, wait_until

HOST = "127.0.0.1"


class Node(Supervised):
    """One redis-server (or redis-sentinel) process with its own directory and arguments."""

    grace = 5.0

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        password: str | None = None,
        config: str | None = None,
        binary: str = "redis-server",
    ) -> None:
        self.port = port or free_port()
        self.dir = workdir / f"node-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.password = password
        self.config = config
        self.binary = shutil.which(binary) or binary

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    def command(self) -> list[str]:
        command = [self.binary]
        if self.config is not None:  # sentinel: a config file it may rewrite
            config_path = self.dir / "sentinel.conf"
            if not config_path.exists():
                config_path.write_text(self.config)
            command.append(str(config_path))
        command += [
            "--bind", HOST, "--port", str(self.port), "--dir", str(self.dir),
            "--save", "", "--appendonly", "no", "--protected-mode", "no",
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password, "--masterauth", self.password]
        return command + self.args

    def start(self) -> None:
        name = f"{Path(self.binary).name} on port {self.port}"
        process = Process(name, self.command(), log_path=self.log_path)
        # One log across restarts: a node killed and started again keeps its history.
        self.launch(process, self.ping, "PING answered", fresh_log=False)

    def client(self, **options: Any) -> Any:
        import redis

        return redis.Redis(
            host=HOST, port=self.port, password=self.password, socket_timeout=2, **options
        )

    def ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


def stop_all(nodes: Sequence[Node]) -> None:
    for node in reversed(nodes):
        node.kill()


class Cluster:
    """Three primaries and one replica each, made by ``redis-cli --cluster create``."""

    def __init__(
        self, workdir: Path, primaries: int = 3, replicas: int = 1, password: str | None = None
    ) -> None:
        self.password = password
        self.replicas = replicas
        cluster_args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "1000",
            # A replica whose primary died a moment ago may still take over at once.
            "--cluster-replica-validity-factor", "0",
        ]  # fmt: skip
        # The bus port is given, not implied (port + 10000 may be taken or out of range).
        self.nodes = [
            Node(
                workdir / "cluster",
                args=[*cluster_args, "--cluster-port", str(free_port())],
                password=password,
            )
            for _ in range(primaries * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        seeds = ",".join(f"{HOST}:{node.port}" for node in self.nodes[:3])
        return f"redis+cluster://{seeds}"

    def cli(self, *args: str, timeout: float = 60) -> str:
        command = ["redis-cli"]
        if self.password:
            command += ["--no-auth-warning", "-a", self.password]
        result = subprocess.run(
            [*command, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"redis-cli {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
            )
        return result.stdout

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"{HOST}:{node.port}" for node in self.nodes]
            self.cli(
                "--cluster", "create", *addresses,
                "--cluster-replicas", str(self.replicas), "--cluster-yes",
            )  # fmt: skip
            wait_until(self.healthy, timeout=30, what="cluster state ok on every node")
        except BaseException:
            self.stop()
            raise

    def alive(self) -> list[Node]:
        return [node for node in self.nodes if node.process is not None]

    def healthy(self) -> bool:
        """Every live node says ok and agrees that every slot has a live primary."""
        live_ports = {node.port for node in self.alive()}
        for node in self.alive():
            try:
                client = node.client()
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
                ranges = self.slot_ranges(node)
            except Exception:
                return False
            if sum(end - start + 1 for start, end, _ in ranges) != 16384:
                return False
            if any(port not in live_ports for _, _, port in ranges):
                return False
        return True

    def slot_ranges(self, node: Node | None = None) -> list[tuple[int, int, int]]:
        """(first slot, last slot, primary port), as CLUSTER SLOTS reports it."""
        node = node or self.alive()[0]
        rows = node.client().execute_command("CLUSTER SLOTS")
        return sorted((int(row[0]), int(row[1]), int(row[2][1])) for row in rows)

    def primary_of(self, slot: int) -> int:
        for start, end, port in self.slot_ranges():
            if start <= slot <= end:
                return port
        raise LookupError(f"slot {slot} has no primary")

    def node(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def node_id(self, port: int) -> str:
        return str(self.node(port).client().execute_command("CLUSTER MYID").decode())

    def primaries(self) -> list[int]:
        return sorted({port for _, _, port in self.slot_ranges()})

    def reshard(self, source: int, target: int, slots: int) -> str:
        """Move ``slots`` slots from one primary to another (keys and all) via redis-cli."""
        return self.cli(
            "--cluster", "reshard", f"{HOST}:{target}",
            "--cluster-from", self.node_id(source),
            "--cluster-to", self.node_id(target),
            "--cluster-slots", str(slots),
            "--cluster-yes",
            timeout=120,
        )  # fmt: skip

    def keys(self, pattern: str = "gatehouse:*") -> dict[str, int]:
        """Every matching key with its value, read from the primaries."""
        found: dict[str, int] = {}
        for port in self.primaries():
            client = self.node(port).client()
            for key in client.keys(pattern):
                value = client.get(key)
                if value is not None:
                    found[key.decode()] = int(value)
        return found

    def stop(self) -> None:
        stop_all(self.nodes)


class SentinelSet:
    """One primary, one replica, three sentinels (quorum 2) watching ``name``."""

    def __init__(
        self,
        workdir: Path,
        name: str = "gatehouse",
        password: str | None = None,
        down_after_ms: int = 1000,
    ) -> None:
        self.name = name
        self.password = password
        self.primary = Node(workdir / "data", password=password)
        self.replica = Node(
            workdir / "data", password=password, args=["--replicaof", HOST, str(self.primary.port)]
        )
        self.sentinels = []
        for _ in range(3):
            port = free_port()
            config = [
                f"port {port}",
                f"sentinel monitor {name} {HOST} {self.primary.port} 2",
                f"sentinel down-after-milliseconds {name} {down_after_ms}",
                f"sentinel failover-timeout {name} 3000",
                f"sentinel parallel-syncs {name} 1",
            ]
            if password:
                config.append(f"sentinel auth-pass {name} {password}")
            self.sentinels.append(
                Node(
                    workdir / "sentinels",
                    port=port,
                    config="\n".join(config) + "\n",
                    binary="redis-sentinel",
                )
            )

    @property
    def url(self) -> str:
        seeds = ",".join(f"{HOST}:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{seeds}/{self.name}"

    def start(self) -> None:
        try:
            self.primary.start()
            self.replica.start()
            wait_until(self._replica_synced, timeout=20, what="replica in sync")
            for sentinel in self.sentinels:
                sentinel.start()
            wait_until(self._sentinels_agree, timeout=30, what="sentinels see each other")
        except BaseException:
            self.stop()
            raise

    def _replica_synced(self) -> bool:
        info = self.replica.client().info("replication")
        return bool(info.get("master_link_status") == "up")

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            state = sentinel.client().sentinel_master(self.name)
            if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                return False
        return True

    def primary_port(self) -> int | None:
        """The primary's port as the sentinels' majority reports it."""
        votes: dict[int, int] = {}
        for sentinel in self.sentinels:
            try:
                _, port = sentinel.client().sentinel_get_master_addr_by_name(self.name)
            except Exception:
                continue
            votes[int(port)] = votes.get(int(port), 0) + 1
        return max(votes, key=lambda port: votes[port]) if votes else None

    def current_primary(self) -> Node:
        port = self.primary_port()
        return self.primary if port == self.primary.port else self.replica

    def wait_promoted(self, old: Node, timeout: float = 30) -> float:
        """Seconds until the other node is primary and answers writes."""
        started = time.monotonic()
        other = self.replica if old is self.primary else self.primary

        def promoted() -> bool:
            if self.primary_port() != other.port:
                return False
            try:
                return bool(other.client().info("replication")["role"] == "master")
            except Exception:
                return False

        wait_until(promoted, timeout=timeout, interval=0.02, what="a sentinel failover")
        return time.monotonic() - started

    def stop(self) -> None:
        stop_all([self.primary, self.replica, *self.sentinels])


class TlsRedis(Node):
    """redis-server on a TLS port only, with a certificate the test made."""

    def __init__(self, workdir: Path, cert: Path, key: Path, ca: Path) -> None:
        port = free_port()
        super().__init__(
            workdir,
            port=port,
            args=[
                "--tls-port", str(port),
                "--tls-cert-file", str(cert),
                "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(ca),
                "--tls-auth-clients", "no",
            ],
        )  # fmt: skip
        self.ca = ca

    def command(self) -> list[str]:
        return [
            self.binary, "--bind", HOST, "--port", "0", "--dir", str(self.dir), "--save", "",
            "--appendonly", "no", "--protected-mode", "no", *self.args,
        ]  # fmt: skip

    def client(self, **options: Any) -> Any:
        import redis

        return redis.Redis(
            host=HOST, port=self.port, ssl=True, ssl_ca_certs=str(self.ca), socket_timeout=2
        )

    @property
    def url(self) -> str:
        return f"rediss://{HOST}:{self.port}/0"


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate it signs (SAN IP 127.0.0.1, DNS localhost), and a
    second CA that signs nothing here (the untrusted one). Made with the openssl CLI."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    for name in ("ca", "other-ca"):
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN=Gatehouse test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", f"{name}.key", "-out", f"{name}.crt",
        )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr",
    )  # fmt: skip
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.crt",
    )  # fmt: skip
    return {
        "ca": directory / "ca.crt",
        "other_ca": directory / "other-ca.crt",
        "cert": directory / "server.crt",
        "key": directory / "server.key",
    }
