"""The bundled Redis's generated password in a real cluster: made once by the chart's hook
Job, absent from every release object and from Redis's command line, used by the API, and
kept (with the Redis pod) across an unrelated ``helm upgrade``.

One throwaway release (one API replica) in its own Pod Security "restricted" namespace, so
the hook Job's pod is admitted under the same rules as the chart's other pods.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT
from tests.k8s.conftest import (
    HELM,
    KUBECTL,
    LOCAL_VALUES,
    Cluster,
    ProbeResult,
    Release,
    helm_install,
    ingress_trusted_cidrs,
    on_local_cluster,
    option,
    release_values,
    run,
)

pytestmark = pytest.mark.k8s

KEY = "redis-password"


@dataclass
class RedisRelease:
    release: Release
    secret: str  # the generated Secret's name
    tmp: Path

    @property
    def namespace(self) -> str:
        return self.release.namespace


def generated_password(cluster: Cluster, redis: RedisRelease) -> str:
    secret = cluster.core.read_namespaced_secret(redis.secret, redis.namespace, _request_timeout=10)
    return base64.b64decode(secret.data[KEY]).decode()


def redis_pod(cluster: Cluster, redis: RedisRelease) -> Any:
    selector = f"app.kubernetes.io/instance={redis.release.name},app.kubernetes.io/component=redis"
    pods = cluster.core.list_namespaced_pod(
        redis.namespace, label_selector=selector, _request_timeout=10
    ).items
    running = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
    assert len(running) == 1, f"expected one running Redis pod, found {len(running)}"
    return running[0]


def redis_exec(redis: RedisRelease, pod: Any, *command: str) -> str:
    done = run([KUBECTL, "exec", "-n", redis.namespace, pod.metadata.name, "-c", "redis", "--",
                *command], timeout=60)  # fmt: skip
    return done.stdout


def redis_cli(redis: RedisRelease, pod: Any, *command: str) -> str:
    """redis-cli inside the Redis container, authenticated from the mounted Secret file
    (REDISCLI_AUTH: the password stays off every command line here too)."""
    script = 'REDISCLI_AUTH="$(cat "$REDIS_PASSWORD_FILE")" exec redis-cli "$@"'
    return redis_exec(redis, pod, "sh", "-c", script, "redis-cli", *command)


@pytest.fixture(scope="module")
def redis_release(
    cluster: Cluster, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> RedisRelease:
    config = request.config
    namespace = cluster.create_namespace("gh-k8s-redis")
    values = release_values(
        config, ["https://app-redis.k8s-test.example"], ingress_trusted_cidrs(cluster, config),
        ingress=False,
    )  # fmt: skip
    values["replicaCount"] = 1  # one API pod is enough here; the node has 2 cores
    given = option(config, "chart_values") or ([LOCAL_VALUES] if on_local_cluster() else [])
    release = Release(namespace, "gatehouse", values, True, tuple(ROOT / p for p in given))
    tmp = tmp_path_factory.mktemp("redis-secret")
    helm_install(release, tmp)
    return RedisRelease(release, f"{release.fullname}-redis-password", tmp)


def test_the_hook_job_made_a_random_password_no_release_object_holds(
    cluster: Cluster, redis_release: RedisRelease
) -> None:
    password = generated_password(cluster, redis_release)
    assert len(password) == 43, "32 random bytes, URL-safe base64 without padding"
    encoded = base64.b64encode(password.encode()).decode()
    for what in (["manifest"], ["hooks"], ["values", "--all"]):
        stored = run([HELM, "get", what[0], redis_release.release.name,
                      "-n", redis_release.namespace, *what[1:]]).stdout  # fmt: skip
        assert password not in stored and encoded not in stored, f"helm get {what[0]}"
    # The hook's Job, ServiceAccount, Role, RoleBinding, ConfigMap and NetworkPolicy are gone.
    left = run([KUBECTL, "get", "job,serviceaccount,role,rolebinding,configmap,networkpolicy",
                "-n", redis_release.namespace, "-o", "name",
                "-l", "app.kubernetes.io/component=redis-password"]).stdout  # fmt: skip
    assert left.strip() == ""


def test_the_password_is_not_on_redis_command_line(
    cluster: Cluster, redis_release: RedisRelease
) -> None:
    password = generated_password(cluster, redis_release)
    pod = redis_pod(cluster, redis_release)
    # The server is PID 1 (the script exec'd it), and its argv names no password; Redis
    # rewrites its title over argv, so the container spec is checked too.
    assert redis_exec(redis_release, pod, "cat", "/proc/1/comm").strip() == "redis-server"
    for path in ("/proc/1/cmdline", "/proc/1/environ"):
        assert password not in redis_exec(redis_release, pod, "cat", path), path
    spec = run([KUBECTL, "get", "pod", pod.metadata.name, "-n", redis_release.namespace,
                "-o", "json"]).stdout  # fmt: skip
    (container,) = json.loads(spec)["spec"]["containers"]
    assert password not in json.dumps([container["command"], container["args"], container["env"]])
    # What the server holds is the password's SHA-256, as an ACL rule.
    acl = redis_cli(redis_release, pod, "ACL", "LIST")
    assert password not in acl and re.search(r"#[0-9a-f]{64}", acl), acl


def limit_holds(probe: Callable[..., ProbeResult], release: Release) -> None:
    """limit + 2 requests from a new pod (a new client, a new budget): exactly 2 refused.
    With failure mode open, an API that could not authenticate to Redis would refuse none."""
    limit = release.search_limit
    result = None
    for _attempt in range(2):  # a burst may straddle a window's end once
        result = probe(
            release.namespace, "--url", f"{release.base_url}/search?q=redis", "--origin",
            release.origin, "--no-preflight", "--repeat", str(limit + 2), "--concurrency", "1",
            "--expect-status", f"200={limit}", "--expect-status", "429=2",
        )  # fmt: skip
        if result.returncode == 0:
            break
    assert result is not None and result.returncode == 0, result


def test_the_api_counts_its_limited_requests_in_redis(
    cluster: Cluster, redis_release: RedisRelease, probe: Callable[..., ProbeResult]
) -> None:
    pod = redis_pod(cluster, redis_release)
    before = int(redis_cli(redis_release, pod, "DBSIZE"))
    limit_holds(probe, redis_release.release)
    assert int(redis_cli(redis_release, pod, "DBSIZE")) > before


def test_an_unrelated_upgrade_keeps_the_password_and_the_redis_pod(
    cluster: Cluster, redis_release: RedisRelease, probe: Callable[..., ProbeResult]
) -> None:
    password = generated_password(cluster, redis_release)
    pod = redis_pod(cluster, redis_release)
    restarts = pod.status.container_statuses[0].restart_count
    upgraded = replace(
        redis_release.release,
        values={**redis_release.release.values, "config": {
            **redis_release.release.values["config"], "logLevel": "debug"}},
    )  # fmt: skip
    helm_install(upgraded, redis_release.tmp)  # helm upgrade --install --wait: the hook ran again
    assert generated_password(cluster, redis_release) == password
    after = redis_pod(cluster, redis_release)
    assert after.metadata.uid == pod.metadata.uid, "the Redis pod was recreated"
    assert after.status.container_statuses[0].restart_count == restarts
    # The API (its pods rolled for the new log level) still counts in Redis.
    limit_holds(probe, upgraded)
