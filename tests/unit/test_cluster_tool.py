"""The local cluster tool's pure parts: pins, the build cache key, OCI archives, configs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from cluster import build, configs, daemons, images, layout


def test_pins_come_from_each_components_go_mod() -> None:
    versions = layout.Layout.default().versions
    assert set(versions) == {"kubernetes", "etcd", "containerd", "cni", "coredns", "kube-router"}
    text = (layout.MODULES / "kubernetes" / "go.mod").read_text()
    assert f"require k8s.io/kubernetes {versions['kubernetes']}" in text
    # Every staging module is pinned to the release's own v0.X.Y.
    minor = versions["kubernetes"].split(".")[1]
    replaced = [line for line in text.splitlines() if "=>" in line]
    assert replaced and all(line.rstrip().endswith(f"v0.{minor}.{versions['kubernetes'].split('.')[2]}")
                            for line in replaced)  # fmt: skip


def test_a_missing_pin_is_an_error_naming_the_file() -> None:
    with pytest.raises(
        ValueError, match=r"cluster/modules/etcd/go\.mod does not require k8s\.io/x"
    ):
        layout.pinned_version("etcd", "k8s.io/x")


def test_cache_key_follows_go_sum_and_the_go_version(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "etcd"
    folder.mkdir()
    (folder / "go.mod").write_text("module x\n\nrequire go.etcd.io/etcd/server/v3 v3.7.4\n")
    (folder / "go.sum").write_text("a h1:1\n")
    monkeypatch.setattr(build, "MODULES", tmp_path)
    component = build.Component("etcd", "go.etcd.io/etcd/server/v3", {"": "etcd"})
    first = build.cache_key(component, "go1.26.8")
    assert build.cache_key(component, "go1.26.8") == first
    assert build.cache_key(component, "go1.26.9") != first
    (folder / "go.sum").write_text("a h1:2\n")
    assert build.cache_key(component, "go1.26.8") != first


def test_kubernetes_version_ldflags_name_the_release() -> None:
    flags = build.kubernetes_ldflags("v1.37.2")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.37.2" in flags
        assert f"-X {package}.gitMinor=37" in flags


def test_oci_archive_is_a_consistent_deterministic_image(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really")
    archive = images.oci_archive("gatehouse.local/pause:v1", {"pause": binary},
                                 {"Entrypoint": ["/pause"]})  # fmt: skip
    assert images.oci_archive("gatehouse.local/pause:v1", {"pause": binary},
                              {"Entrypoint": ["/pause"]}) == archive  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]

    def blob(digest: str) -> bytes:
        content = files[f"blobs/sha256/{digest.removeprefix('sha256:')}"]
        assert hashlib.sha256(content).hexdigest() == digest.removeprefix("sha256:")
        return content

    (entry,) = json.loads(files["index.json"])["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "gatehouse.local/pause:v1"
    manifest = json.loads(blob(entry["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    layer = gzip.decompress(blob(manifest["layers"][0]["digest"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert config["config"]["Entrypoint"] == ["/pause"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.mode) == ("pause", 0o755)
        assert tar.extractfile(member).read() == binary.read_bytes()  # type: ignore[union-attr]


def test_pod_network_stays_on_the_machine() -> None:
    cluster = layout.Layout.default()
    (bridge, firewall, _portmap) = json.loads(configs.cni_conflist(cluster))["plugins"]
    assert bridge["type"] == "bridge" and bridge["ipMasq"] is False
    # The IP leases go with the cluster's run folder, which a stop removes (clean()).
    assert bridge["ipam"]["dataDir"] == str(cluster.run / "ipam")
    # The bridge plugin refuses hairpin and promiscuous mode together.
    assert bridge["hairpinMode"] is True and "promiscMode" not in bridge
    assert firewall["type"] == "firewall"
    config = configs.kube_proxy_config(layout.Layout.default())
    assert config["nodePortAddresses"] == [f"{layout.NODE_IP}/32"]


def test_host_facts_are_met_by_the_node_configs() -> None:
    kubelet = configs.kubelet_config(layout.Layout.default())
    assert kubelet["failCgroupV1"] is False and kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["oomScoreAdj"] == 0 and kubelet["resolvConf"] == ""
    assert "restrict_oom_score_adj = true" in configs.containerd_config(
        layout.Layout.default(), "v1"
    )


def test_config_files_are_rewritten_only_when_they_change(tmp_path: Path) -> None:
    path = configs.write(tmp_path / "kube-proxy.yaml", "a: 1\n", 0o644)
    before = path.stat().st_ino, path.stat().st_mtime_ns
    configs.write(path, "a: 1\n", 0o644)
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == before
    configs.write(path, "a: 2\n", 0o644)
    assert path.read_text() == "a: 2\n" and path.stat().st_ino != before[0]


def test_a_socket_left_by_a_killed_daemon_is_not_ready(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "daemon.sock"
    assert not daemons.accepts_connections(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    assert daemons.accepts_connections(path)
    # Closed without unlinking, as a SIGKILL leaves it: the file stays, nobody answers.
    listener.close()
    assert path.exists()
    assert not daemons.accepts_connections(path)
