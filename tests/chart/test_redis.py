"""The bundled Redis as rendered: where its password comes from (and that no render holds
a generated one), what rolls the pods, that the password is on no command line, the
pinned image and the Valkey flavor, and the disruption budget.

One test runs the rendered container command for real (Debian's sh and redis-server) to
show the server gets the password through stdin only.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from stack.kubelet import expand
from stack.processes import Process, StartError, free_port

from .conftest import API, CHART, K8S, REDIS, RELEASE, Doc, find, helm, one, pod_specs, render

GENERATED = f"{REDIS}-password"  # the Secret (and hook objects) of a generated password
HOOK_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "NetworkPolicy", "Job"}
# A fixed value, as an operator would set it; the tests look for it in every command line.
EXPLICIT = "explicit-Pa55word-for-the-render-tests"
# First patch release of each line with the fixes for CVE-2025-49844 ("RediShell"),
# CVE-2025-46817, CVE-2025-46818 and CVE-2025-46819 (the October 2025 advisories).
FIXED_REDIS = {(7, 2): (7, 2, 11), (7, 4): (7, 4, 6), (8, 0): (8, 0, 4), (8, 2): (8, 2, 2)}
FIXED_VALKEY = {(7, 2): (7, 2, 11), (8, 0): (8, 0, 6), (8, 1): (8, 1, 4)}


def _redis_pod(docs: list[Doc]) -> Doc:
    return one(docs, "Deployment", REDIS)["spec"]["template"]


def _api_pod(docs: list[Doc]) -> Doc:
    return one(docs, "Deployment", API)["spec"]["template"]


def _redis_container(docs: list[Doc]) -> Doc:
    (container,) = _redis_pod(docs)["spec"]["containers"]
    return container


def _password_ref(docs: list[Doc]) -> tuple[dict[str, str], dict[str, str]]:
    """(where Redis reads its password, where the API does), as {name, key}."""
    (volume,) = [v["secret"] for v in _redis_pod(docs)["spec"]["volumes"] if "secret" in v]
    (item,) = volume["items"]
    api = {e["name"]: e for e in _api_pod(docs)["spec"]["containers"][0]["env"]}
    return (
        {"name": volume["secretName"], "key": item["key"]},
        api["APP_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"],
    )


def _checksums(docs: list[Doc]) -> tuple[str, str]:
    """checksum/redis-auth of the API and the Redis pod templates."""
    return (
        _api_pod(docs)["metadata"]["annotations"]["checksum/redis-auth"],
        _redis_pod(docs)["metadata"]["annotations"]["checksum/redis-auth"],
    )


def _hook_objects(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["metadata"].get("annotations", {}).get("helm.sh/hook")]


def _without_test_pods(docs: list[Doc]) -> list[Doc]:
    # helm test pods carry a random name suffix (templates/tests/_pod.tpl); they are test
    # hooks, never applied by an install, an upgrade or a GitOps sync.
    return [d for d in docs if d["metadata"].get("annotations", {}).get("helm.sh/hook") != "test"]


# -- stable output --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [(), ("--set", f"redis.auth.password={EXPLICIT}"), ("--set", "redis.auth.existingSecret=s")],
    ids=["generated", "explicit", "existing-secret"],
)
def test_two_renders_are_identical(values: tuple[str, ...]) -> None:
    first, second = render("default", *values), render("default", *values)
    assert _without_test_pods(first) == _without_test_pods(second)


def test_only_the_helm_test_pods_differ_between_renders() -> None:
    # Guards the filter above: it must leave every other object in.
    docs = render("default")
    kept = _without_test_pods(docs)
    assert len(docs) - len(kept) == len(find(docs, "Pod")) > 0


# -- where the password comes from ----------------------------------------------------------


def test_a_generated_password_is_never_rendered(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["default"]
    assert not find(docs, "Secret"), "a generated password must not be in the manifests"
    redis_ref, api_ref = _password_ref(docs)
    assert redis_ref == api_ref == {"name": GENERATED, "key": "redis-password"}
    job = one(docs, "Job", GENERATED)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["SECRET_NAME"], env["SECRET_KEY"]) == (GENERATED, "redis-password")
    assert container["command"] == ["python", "/opt/redis-password/redis-password.py"]
    script = one(docs, "ConfigMap", GENERATED)["data"]["redis-password.py"]
    assert script == (CHART / "files" / "redis-password.py").read_text()


def test_the_password_job_runs_before_install_and_upgrade(rendered: dict[str, list[Doc]]) -> None:
    hooks = _hook_objects(_without_test_pods(rendered["default"]))
    assert {d["kind"] for d in hooks} == HOOK_KINDS
    job_weight = None
    for doc in hooks:
        annotations = doc["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade", doc["kind"]
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert doc["metadata"]["name"] == GENERATED
        if doc["kind"] == "Job":
            job_weight = int(annotations["helm.sh/hook-weight"])
    # Everything the Job needs exists before it starts.
    assert job_weight is not None
    assert all(
        int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) < job_weight
        for d in hooks
        if d["kind"] != "Job"
    )


def test_the_password_job_may_create_secrets_and_read_only_its_own(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["default"]
    assert one(docs, "Role", GENERATED)["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [GENERATED],
            "verbs": ["get"],
        },
    ]
    binding = one(docs, "RoleBinding", GENERATED)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": GENERATED,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": GENERATED, "namespace": "gatehouse-dev"}
    ]
    assert one(docs, "ServiceAccount", GENERATED)["automountServiceAccountToken"] is False
    policy = one(docs, "NetworkPolicy", GENERATED)["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis-password"
    assert policy["ingress"] == []
    assert [p["port"] for rule in policy["egress"] for p in rule["ports"]] == [443, 6443]


def test_only_the_password_job_holds_a_kubernetes_api_token(
    rendered: dict[str, list[Doc]],
) -> None:
    holders = {}
    for label, spec in pod_specs(rendered["default"]):
        assert spec["automountServiceAccountToken"] is False, label
        for volume in spec.get("volumes", []):
            for source in volume.get("projected", {}).get("sources", []):
                if "serviceAccountToken" in source:
                    holders[label] = (spec, source["serviceAccountToken"])
    assert list(holders) == [f"Job/{GENERATED}"]
    spec, token = holders[f"Job/{GENERATED}"]
    assert spec["serviceAccountName"] == GENERATED
    assert token["expirationSeconds"] <= 600


def test_an_existing_secret_is_used_as_named_and_nothing_is_generated() -> None:
    docs = render(
        "default",
        "--set",
        "redis.auth.existingSecret=team-redis",
        "--set",
        "redis.auth.existingSecretKey=pw",
    )
    redis_ref, api_ref = _password_ref(docs)
    assert redis_ref == api_ref == {"name": "team-redis", "key": "pw"}
    assert not find(docs, "Secret")
    assert not _hook_objects(_without_test_pods(docs))


def test_an_explicit_password_is_rendered_in_the_release_secret() -> None:
    docs = render("default", "--set", f"redis.auth.password={EXPLICIT}")
    secret = one(docs, "Secret", API)
    assert base64.b64decode(secret["data"]["redis-password"]).decode() == EXPLICIT
    redis_ref, api_ref = _password_ref(docs)
    assert redis_ref == api_ref == {"name": API, "key": "redis-password"}
    assert not _hook_objects(_without_test_pods(docs))


def test_a_password_and_an_existing_secret_together_are_refused() -> None:
    result = helm(
        "template",
        RELEASE,
        str(CHART),
        "--set",
        "redis.auth.password=x",
        "--set",
        "redis.auth.existingSecret=s",
    )
    assert result.returncode != 0
    assert "redis.auth: set existingSecret or password, not both" in result.stderr


# -- what rolls the pods --------------------------------------------------------------------


def test_both_deployments_carry_the_same_auth_checksum(rendered: dict[str, list[Doc]]) -> None:
    api, redis_pod = _checksums(rendered["default"])
    assert api == redis_pod
    assert re.fullmatch(r"[0-9a-f]{64}", api)


@pytest.mark.parametrize(
    "source",
    [(), ("--set", "redis.auth.existingSecret=s"), ("--set", "redis.auth.password=one")],
    ids=["generated", "existing-secret", "explicit"],
)
def test_the_checksum_follows_the_password_source_and_rotation(source: tuple[str, ...]) -> None:
    base = _checksums(render("default", *source))
    # Unrelated values (even Redis's own memory) leave it alone.
    unrelated = render(
        "default", *source, "--set", "config.logLevel=debug", "--set", "redis.maxmemory=64mb"
    )
    assert _checksums(unrelated) == base
    rotated = _checksums(render("default", *source, "--set", "redis.auth.rotation=2026-12-01"))
    assert rotated != base
    assert rotated[0] == rotated[1]


def test_the_checksum_changes_with_the_explicit_password_or_the_secret_named() -> None:
    one_password = _checksums(render("default", "--set", "redis.auth.password=one"))
    other_password = _checksums(render("default", "--set", "redis.auth.password=two"))
    assert one_password != other_password
    secret_a = _checksums(render("default", "--set", "redis.auth.existingSecret=a"))
    secret_b = _checksums(render("default", "--set", "redis.auth.existingSecret=b"))
    key_b = _checksums(
        render(
            "default",
            "--set",
            "redis.auth.existingSecret=a",
            "--set",
            "redis.auth.existingSecretKey=other",
        )
    )
    assert len({secret_a, secret_b, key_b}) == 3


def test_the_checksum_follows_an_external_redis() -> None:
    def api_checksum(*values: str) -> str:
        docs = render("default", "--set", "redis.enabled=false", *values)
        return str(_api_pod(docs)["metadata"]["annotations"]["checksum/redis-auth"])

    url_a = api_checksum("--set", "externalRedis.url=redis://a:6379/0")
    assert url_a == api_checksum("--set", "externalRedis.url=redis://a:6379/0")
    assert url_a != api_checksum("--set", "externalRedis.url=redis://b:6379/0")
    secret = ("--set", "externalRedis.existingSecret=conn")
    assert api_checksum(*secret) != api_checksum(
        *secret, "--set", "externalRedis.rotation=2026-12-01"
    )


# -- the password is on no command line -----------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [(), ("--set", f"redis.auth.password={EXPLICIT}"), ("--set", "redis.auth.existingSecret=s")],
    ids=["generated", "explicit", "existing-secret"],
)
def test_no_password_in_any_command_line(values: tuple[str, ...]) -> None:
    docs = render("default", *values)
    for label, spec in pod_specs(docs):
        for container in spec["containers"]:
            argv = " ".join([*container.get("command", []), *container.get("args", [])])
            assert "requirepass" not in argv, label
            assert "PASSWORD)" not in argv, f"{label}: a $(VAR) password expansion"
            assert EXPLICIT not in argv, label
    container = _redis_container(docs)
    # Redis gets a file path, never the value, from its environment.
    assert container["env"] == [
        {"name": "REDIS_PASSWORD_FILE", "value": "/etc/redis-auth/password"}
    ]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/redis-auth"]
    assert mount["readOnly"] is True


def _run_rendered_redis(docs: list[Doc], password_file: Path, data_dir: Path, port: int) -> Process:
    """The rendered Redis container's command, as the kubelet would expand it, with a
    local port and directories: Debian's /bin/sh and redis-server."""
    container = _redis_container(docs)
    argv = [expand(part, {}) for part in [*container["command"], *container["args"]]]
    argv = [{"6379": str(port), "/data": str(data_dir)}.get(a, a) for a in argv]
    argv += ["--bind", "127.0.0.1"]
    env = {"PATH": os.environ["PATH"], "REDIS_PASSWORD_FILE": str(password_file)}
    process = Process("rendered redis", argv, env, log_path=data_dir / "redis.log")
    process.launch(lambda: _answers(port), timeout=15, what="a PING answer")
    return process


def _answers(port: int) -> bool:
    try:
        redis.Redis(port=port, socket_timeout=1).ping()
    except redis.AuthenticationError:
        return True  # up, and asking for a password
    except redis.RedisError:
        return False
    return True


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_the_rendered_command_gives_redis_the_password_on_stdin_only(tmp_path: Path) -> None:
    password = 'a "quoted" pass\\word with spaces'  # nothing a config line could carry raw
    password_file = tmp_path / "password"
    password_file.write_text(password)
    port = free_port()
    process = _run_rendered_redis(render("default"), password_file, tmp_path, port)
    try:
        pid = process.pid
        assert pid is not None
        # What the container runtime holds (the OCI process args) names no password.
        assert password not in " ".join(process.argv)
        assert "quoted" not in " ".join(process.argv)
        # exec: the server itself is the process started (PID 1 in the container).
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "redis-server"
        # Redis rewrites its title over argv and environ, so these say little on their own.
        assert password not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert password not in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=2).set("k", "v")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="wrong", socket_timeout=2).ping()
        client = redis.Redis(port=port, password=password, socket_timeout=2)
        assert client.set("k", "v") is True
        # The server holds the hash alone.
        acl: Any = client.execute_command("ACL", "LIST")
        rules = " ".join(r.decode() if isinstance(r, bytes) else r for r in acl)
        assert password not in rules and re.search(r"#[0-9a-f]{64}", rules)
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-ttl"}
    finally:
        process.stop(grace=5)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_an_empty_password_file_stops_redis(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("")
    with pytest.raises(StartError, match="redis: no password in"):
        _run_rendered_redis(render("default"), tmp_path / "password", tmp_path, free_port())


# -- image and flavor -----------------------------------------------------------------------


def _version(tag: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)\.(\d+)\.(\d+)(-|$)", tag)
    assert match, f"{tag!r} is not a patch release (x.y.z[-variant])"
    return tuple(int(part) for part in match.groups()[:3])


@pytest.mark.parametrize(
    ("flavor", "repository", "server", "fixed"),
    [("redis", "redis", "redis-server", FIXED_REDIS), ("valkey", "valkey/valkey", "valkey-server", FIXED_VALKEY)],
)  # fmt: skip
def test_each_flavor_runs_a_pinned_patched_release(
    flavor: str, repository: str, server: str, fixed: dict[tuple[int, int], tuple[int, ...]]
) -> None:
    container = _redis_container(render("default", "--set", f"redis.flavor={flavor}"))
    image_repository, _, tag = container["image"].rpartition(":")
    assert image_repository == repository
    version = _version(tag)
    assert version != (7, 2, 7)
    line = version[:2]
    if line in fixed:
        assert version >= fixed[line], f"{container['image']} predates the 2025 Lua CVE fixes"
    else:
        assert line > max(fixed), f"{container['image']}: a line older than the fixed ones"
    assert container["command"][:2] == ["/bin/sh", "-c"]
    assert container["command"][3] == server


def test_an_image_override_keeps_the_flavor_binary_and_a_digest_wins() -> None:
    docs = render(
        "default",
        "--set",
        "redis.flavor=valkey",
        "--set",
        "redis.image.repository=mirror.example/valkey",
    )
    container = _redis_container(docs)
    assert container["image"].startswith("mirror.example/valkey:9.")
    assert container["command"][3] == "valkey-server"
    digest = "sha256:" + "ab" * 32
    pinned = _redis_container(render("default", "--set", f"redis.image.digest={digest}"))
    assert pinned["image"] == f"redis@{digest}"


@pytest.mark.parametrize(
    "values",
    [
        ("--set", "redis.flavor=keydb"),
        ("--set", "redis.image.tag=latest"),
        ("--set", "redis.flavors.valkey.tag=latest"),
        ("--set", "redis.podDisruptionBudget.maxUnavailable=2"),
    ],
    ids=["unknown-flavor", "image-latest", "flavor-latest", "pdb-two"],
)
def test_the_schema_refuses(values: tuple[str, ...]) -> None:
    result = helm("template", RELEASE, str(CHART), *values)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr


def test_the_local_cluster_image_is_debian_redis() -> None:
    values = yaml.safe_load((K8S / "values-cluster.yaml").read_text())
    docs = render("dev", "-f", str(K8S / "values-cluster.yaml"))
    image = values["redis"]["image"]
    assert _redis_container(docs)["image"] == f"{image['repository']}:{image['tag']}"
    assert _redis_container(docs)["command"][3] == "redis-server"


# -- disruptions ----------------------------------------------------------------------------


def test_the_redis_budget_lets_a_drain_evict_the_single_pod(
    rendered: dict[str, list[Doc]],
) -> None:
    pdb = one(rendered["default"], "PodDisruptionBudget", REDIS)["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    selector = pdb["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == "redis"
    pod_labels = _redis_pod(rendered["default"])["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    api_labels = _api_pod(rendered["default"])["metadata"]["labels"]
    assert not selector.items() <= api_labels.items()


def test_the_redis_budget_is_a_choice() -> None:
    strict = render("default", "--set", "redis.podDisruptionBudget.maxUnavailable=0")
    assert one(strict, "PodDisruptionBudget", REDIS)["spec"]["maxUnavailable"] == 0
    off = render("default", "--set", "redis.podDisruptionBudget.enabled=false")
    assert not find(off, "PodDisruptionBudget", REDIS)
    external = render(
        "default", "--set", "redis.enabled=false", "--set", "externalRedis.url=redis://r:6379"
    )
    assert not find(external, "PodDisruptionBudget", REDIS)
    assert not _hook_objects(_without_test_pods(external))
