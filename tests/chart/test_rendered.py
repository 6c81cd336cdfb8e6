"""Assertions on what the chart renders for each environment: proxy trust, origins,
restart-on-change, Pod Security "restricted", NetworkPolicies, images and probes."""

from __future__ import annotations

import pytest
import yaml

from .conftest import (
    API,
    ENVIRONMENTS,
    K8S,
    REDIS,
    Doc,
    expected_controller_peer,
    find,
    load_values,
    one,
    pod_specs,
    render,
)

ENVS = list(ENVIRONMENTS)


def _api_container(docs: list[Doc]) -> Doc:
    spec = one(docs, "Deployment", API)["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "api"]
    return container


def _env(container: Doc) -> dict[str, str]:
    """The container's literal ``env`` values (not the ConfigMap's, not Secret refs)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _checksum(docs: list[Doc]) -> str:
    annotations = one(docs, "Deployment", API)["spec"]["template"]["metadata"]["annotations"]
    return annotations["checksum/config"]


@pytest.mark.parametrize("env", ENVS)
def test_forwarded_allow_ips_are_the_environment_cidrs(
    rendered: dict[str, list[Doc]], env: str
) -> None:
    container = _api_container(rendered[env])
    names = [e["name"] for e in container["env"]]
    assert names.count("FORWARDED_ALLOW_IPS") == 1, names
    trusted = _env(container)["FORWARDED_ALLOW_IPS"]
    expected = load_values(env)["proxy"]["trustedCIDRs"]
    assert trusted.split(",") == expected
    assert "*" not in trusted
    # Proxy trust is the environment's alone: no flag can say otherwise.
    assert not any("forwarded" in arg or "proxy" in arg for arg in container["args"])


@pytest.mark.parametrize("env", ENVS)
def test_the_api_runs_the_one_start_command(rendered: dict[str, list[Doc]], env: str) -> None:
    container = _api_container(rendered[env])
    assert container["command"] == ["python", "-m", "gatehouse"]
    assert container["args"] == ["--host", "0.0.0.0", "--port", "8000"]
    assert container["ports"][0]["containerPort"] == 8000


@pytest.mark.parametrize("env", ENVS)
def test_configmap_holds_exactly_the_environment_origins(
    rendered: dict[str, list[Doc]], env: str
) -> None:
    data = one(rendered[env], "ConfigMap", API)["data"]
    expected = load_values(env)["config"]["allowedOrigins"]
    assert data["APP_ALLOWED_ORIGINS"].split(",") == expected
    assert data["APP_ENVIRONMENT"] == load_values(env)["config"]["environment"]


def test_environments_do_not_share_origins() -> None:
    named = [e for e in ENVS if e != "default"]
    seen: dict[str, str] = {}
    for env in named:
        for origin in load_values(env)["config"]["allowedOrigins"]:
            assert origin not in seen, f"{origin} is in both {seen.get(origin)} and {env}"
            seen[origin] = env


def test_dev_trusts_the_kind_pod_subnet() -> None:
    kind = yaml.safe_load((K8S / "kind-cluster.yaml").read_text())
    assert load_values("dev")["proxy"]["trustedCIDRs"] == [kind["networking"]["podSubnet"]]


def test_local_values_trust_the_loopback_ingress_range() -> None:
    for env in ("local", "local-b"):
        values = load_values(env)
        assert values["proxy"]["trustedCIDRs"] == ["127.0.10.0/24"]
        assert values["replicaCount"] == 3


def test_configmap_is_mounted_as_a_directory_for_hot_reload(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["default"]
    container = _api_container(docs)
    spec = one(docs, "Deployment", API)["spec"]["template"]["spec"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/gatehouse"]
    assert "subPath" not in mount
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == API
    env = {e["name"]: e for e in container["env"]}
    assert env["APP_ALLOWED_ORIGINS_FILE"]["value"] == "/etc/gatehouse/APP_ALLOWED_ORIGINS"
    assert container["envFrom"] == [{"configMapRef": {"name": API}}]


def test_existing_configmap_renders_no_configmap() -> None:
    docs = render("default", "--set", "existingConfigMap=team-origins")
    # (The Redis password Job's script ConfigMap is another object: tests/chart/test_redis.py.)
    assert not find(docs, "ConfigMap", API)
    assert _api_container(docs)["envFrom"] == [{"configMapRef": {"name": "team-origins"}}]
    assert _checksum(docs) != _checksum(render("default", "--set", "existingConfigMap=other"))


@pytest.mark.parametrize("env", ENVS)
def test_app_replicas_matches_the_deployment(rendered: dict[str, list[Doc]], env: str) -> None:
    # The start-up estimate of the peers the fallback divides by (the pods learn the live
    # count through Redis): with an HPA, its ceiling, since too many only makes the
    # fallback stricter and too few would let the deployment admit a multiple of a limit.
    docs = rendered[env]
    deployment = one(docs, "Deployment", API)
    hpas = find(docs, "HorizontalPodAutoscaler")
    expected = hpas[0]["spec"]["maxReplicas"] if hpas else deployment["spec"]["replicas"]
    env_vars = {e["name"]: e.get("value") for e in _api_container(docs)["env"]}
    assert env_vars["APP_REPLICAS"] == str(expected)


def test_prod_has_hpa_pdb_and_tls_way_in(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["prod"]
    assert one(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 3
    assert "replicas" not in one(docs, "Deployment", API)["spec"]
    one(docs, "PodDisruptionBudget", API)
    route = one(docs, "HTTPRoute")
    assert route["spec"]["parentRefs"][0]["sectionName"] == "https"


def test_staging_ingress_has_tls(rendered: dict[str, list[Doc]]) -> None:
    ingress = one(rendered["staging"], "Ingress")
    hosts = {r["host"] for r in ingress["spec"]["rules"]}
    assert hosts <= {h for t in ingress["spec"]["tls"] for h in t["hosts"]}


def test_pdb_only_with_more_than_one_pod() -> None:
    # The API's budget (Redis has its own: tests/chart/test_redis.py).
    assert not find(render("default", "--set", "replicaCount=1"), "PodDisruptionBudget", API)
    assert find(render("default", "--set", "replicaCount=2"), "PodDisruptionBudget", API)
    one_with_hpa = render("default", "--set", "replicaCount=1", "--set", "autoscaling.enabled=true")
    assert find(one_with_hpa, "PodDisruptionBudget", API)


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_an_unready_pod_never_blocks_a_node_drain(rendered: dict[str, list[Doc]], env: str) -> None:
    # Without AlwaysAllow, a crash-looping pod counts against the budget and drains stall.
    pdb = one(rendered[env], "PodDisruptionBudget", API)
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


@pytest.mark.parametrize("env", ENVS)
def test_replicas_spread_only_over_nodes_they_may_run_on(
    rendered: dict[str, list[Doc]], env: str
) -> None:
    spec = one(rendered[env], "Deployment", API)["spec"]["template"]["spec"]
    (constraint,) = spec["topologySpreadConstraints"]
    assert constraint["nodeTaintsPolicy"] == "Honor"
    assert constraint["matchLabelKeys"] == ["pod-template-hash"]


def _containers(spec: Doc) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize("env", ENVS)
def test_every_container_is_restricted(rendered: dict[str, list[Doc]], env: str) -> None:
    """Pod Security Standard "restricted", checked field by field, test pods included."""
    problems = []
    specs = list(pod_specs(rendered[env]))
    assert any(label.startswith("Pod/") for label, _ in specs), "no helm test pods rendered"
    for label, spec in specs:
        pod_sc = spec.get("securityContext", {})
        for volume in spec.get("volumes", []):
            if "hostPath" in volume:
                problems.append(f"{label}: hostPath volume")
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                problems.append(f"{label}: {key}")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{label}: service account token mounted")
        for c in _containers(spec):
            sc = c.get("securityContext", {})
            where = f"{label}/{c['name']}"
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
            checks = {
                "runAsNonRoot": non_root is True,
                "runAsUser fixed and non-zero": isinstance(uid, int) and uid > 0,
                "runAsGroup fixed": isinstance(sc.get("runAsGroup", pod_sc.get("runAsGroup")), int),
                "allowPrivilegeEscalation false": sc.get("allowPrivilegeEscalation") is False,
                "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem") is True,
                "drop ALL": sc.get("capabilities", {}).get("drop") == ["ALL"],
                "no added capabilities": not sc.get("capabilities", {}).get("add"),
                "not privileged": not sc.get("privileged"),
                "seccomp RuntimeDefault": seccomp in {"RuntimeDefault", "Localhost"},
                "requests and limits": {"requests", "limits"} <= set(c.get("resources", {})),
                "no hostPort": all("hostPort" not in p for p in c.get("ports", [])),
                "writable /tmp": any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])),
            }
            problems += [f"{where}: {name}" for name, ok in checks.items() if not ok]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("env", ENVS)
def test_dev_mode_is_off_in_every_environment(rendered: dict[str, list[Doc]], env: str) -> None:
    container = _api_container(rendered[env])
    assert "--reload" not in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_dev_mode_reloads_with_a_writable_root(rendered: dict[str, list[Doc]]) -> None:
    docs = render("dev", "--set", "devMode.enabled=true")
    container = _api_container(docs)
    # The reloader watches the package's own sources (/app/src in the dev image).
    assert container["args"] == ["--host", "0.0.0.0", "--port", "8000", "--reload"]
    assert container["command"] == ["python", "-m", "gatehouse"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is False
    # Everything else stays "restricted".
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # Only the API container changes: Redis and the test pods keep a read-only root.
    for label, spec in pod_specs(docs):
        for c in _containers(spec):
            if c is not container:
                assert c["securityContext"]["readOnlyRootFilesystem"] is True, label
    # Off again is exactly the default API container.
    off = render("dev", "--set", "devMode.enabled=false")
    assert _api_container(off) == _api_container(rendered["dev"])


def _client_namespace_peers(docs: list[Doc]) -> list[Doc]:
    api = one(docs, "NetworkPolicy", API)["spec"]
    peers = [p for rule in api["ingress"] for p in rule["from"]]
    return [p for p in peers if "matchExpressions" in p.get("namespaceSelector", {})]


def test_client_namespaces_rule_only_when_set() -> None:
    assert not _client_namespace_peers(render("default"))
    docs = render("default", "--set", "networkPolicy.clientNamespaces={gatehouse-verify,team-b}")
    client = load_values("default")["networkPolicy"]["clientLabel"]
    # One peer, namespace AND label: a separate namespace-only peer would admit every pod there.
    assert _client_namespace_peers(docs) == [
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": ["gatehouse-verify", "team-b"],
                    }
                ]
            },
            "podSelector": {"matchLabels": {client["key"]: client["value"]}},
        }
    ]


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_environments_admit_labelled_verify_pods(rendered: dict[str, list[Doc]], env: str) -> None:
    (peer,) = _client_namespace_peers(rendered[env])
    (expression,) = peer["namespaceSelector"]["matchExpressions"]
    assert expression["values"] == ["gatehouse-verify"]
    assert peer["podSelector"]["matchLabels"]


@pytest.mark.parametrize("env", ENVS)
def test_network_policies_for_api_and_redis(rendered: dict[str, list[Doc]], env: str) -> None:
    docs = rendered[env]
    api = one(docs, "NetworkPolicy", API)["spec"]
    assert api["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    assert set(api["policyTypes"]) == {"Ingress", "Egress"}
    peers = [p for rule in api["ingress"] for p in rule["from"]]
    values = load_values(env)["networkPolicy"]
    assert expected_controller_peer(load_values(env)) in peers
    client = {values["clientLabel"]["key"]: values["clientLabel"]["value"]}
    assert {"podSelector": {"matchLabels": client}} in peers
    assert all(p for p in peers), "an empty peer would admit everything"

    redis = one(docs, "NetworkPolicy", REDIS)["spec"]
    assert redis["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    (rule,) = redis["ingress"]
    assert [
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule["from"]
    ] == ["api"]
    assert redis["egress"] == []


def test_test_pods_carry_the_client_label(rendered: dict[str, list[Doc]]) -> None:
    values = load_values("default")["networkPolicy"]["clientLabel"]
    pods = find(rendered["default"], "Pod")
    assert len(pods) == 4
    for pod in pods:
        assert pod["metadata"]["labels"][values["key"]] == values["value"]
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert "helm.sh/hook-delete-policy" in pod["metadata"]["annotations"]
        assert pod["spec"]["restartPolicy"] == "Never"


def test_test_pods_check_both_origins(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["staging"]
    first_origin = load_values("staging")["config"]["allowedOrigins"][0]
    image = _api_container(docs)["image"]
    commands = []
    for pod in find(docs, "Pod"):
        (container,) = pod["spec"]["containers"]
        assert container["image"] == image
        commands.append(" ".join(container["command"] + container["args"]))
    assert any(f"--origin {first_origin} --expect allowed" in c for c in commands), commands
    assert any("--origin https://evil.example --expect refused" in c for c in commands), commands
    assert any("/whoami" in c and "--expect-status 200" in c for c in commands), commands


@pytest.mark.parametrize("env", ENVS)
def test_no_latest_images(rendered: dict[str, list[Doc]], env: str) -> None:
    for label, spec in pod_specs(rendered[env]):
        for c in _containers(spec):
            image = c["image"]
            assert "@sha256:" in image or ":" in image.rsplit("/", 1)[-1], (
                f"{label}: untagged {image}"
            )
            assert not image.endswith(":latest"), f"{label}: {image}"


def test_image_defaults_to_app_version_and_digest_wins(rendered: dict[str, list[Doc]]) -> None:
    chart = yaml.safe_load((K8S.parent / "charts" / "gatehouse" / "Chart.yaml").read_text())
    assert _api_container(rendered["default"])["image"] == f"gatehouse-api:{chart['appVersion']}"
    digest = "sha256:" + "a" * 64
    docs = render("default", "--set", f"image.digest={digest}")
    assert _api_container(docs)["image"] == f"gatehouse-api@{digest}"


@pytest.mark.parametrize("env", ENVS)
def test_probes_hit_the_real_routes_on_a_named_port(
    rendered: dict[str, list[Doc]], env: str
) -> None:
    container = _api_container(rendered[env])
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    metrics_port = load_values(env)["metrics"]["port"]
    assert port_names == {"http": 8000, "metrics": metrics_port}
    expected = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    # The service serves these paths only on APP_METRICS_PORT: probes must go there.
    assert _env(container)["APP_METRICS_PORT"] == str(metrics_port)
    for probe, path in expected.items():
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path, probe
        assert http_get["port"] == "metrics", probe
    service = one(rendered[env], "Service", API)
    assert service["spec"]["ports"][0]["targetPort"] in port_names


@pytest.mark.parametrize("env", ENVS)
def test_graceful_shutdown_fits_the_grace_period(rendered: dict[str, list[Doc]], env: str) -> None:
    spec = one(rendered[env], "Deployment", API)["spec"]["template"]["spec"]
    container = _api_container(rendered[env])
    graceful = int(_env(container)["APP_GRACEFUL_SHUTDOWN_SECONDS"])
    assert graceful == load_values(env)["shutdown"]["timeoutGracefulShutdownSeconds"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "/bin/sleep"
    assert graceful < spec["terminationGracePeriodSeconds"] - int(pre_stop[1])


def test_shutdown_that_does_not_fit_is_refused() -> None:
    from .conftest import CHART, RELEASE, helm

    result = helm(
        "template", RELEASE, str(CHART), "--set", "shutdown.timeoutGracefulShutdownSeconds=28"
    )
    assert result.returncode != 0
    assert "terminationGracePeriodSeconds" in result.stderr


def test_redis_runs_with_password_and_no_persistence(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["default"]
    (redis,) = one(docs, "Deployment", REDIS)["spec"]["template"]["spec"]["containers"]
    args = redis["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "volatile-ttl"
    assert args[args.index("--save") + 1] == ""
    assert args[args.index("--appendonly") + 1] == "no"
    # Redis reads the password from the same Secret key as the API (tests/chart/test_redis.py).
    spec = one(docs, "Deployment", REDIS)["spec"]["template"]["spec"]
    (auth,) = [v["secret"] for v in spec["volumes"] if "secret" in v]
    api_env = {e["name"]: e for e in _api_container(docs)["env"]}
    assert api_env["APP_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": auth["secretName"],
        "key": auth["items"][0]["key"],
    }
    data = one(docs, "ConfigMap", API)["data"]
    assert data["APP_REDIS_URL"] == f"redis://{REDIS}:6379/0"


def test_external_redis_comes_from_a_secret() -> None:
    docs = render(
        "default",
        "--set",
        "redis.enabled=false",
        "--set",
        "externalRedis.existingSecret=redis-conn",
    )
    assert not find(docs, "Deployment", REDIS)
    assert not find(docs, "NetworkPolicy", REDIS)
    assert "APP_REDIS_URL" not in one(docs, "ConfigMap", API)["data"]
    env = {e["name"]: e for e in _api_container(docs)["env"]}
    assert env["APP_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "redis-conn",
        "key": "redis-url",
    }


@pytest.mark.parametrize("env", ENVS)
def test_long_running_containers_have_probes(rendered: dict[str, list[Doc]], env: str) -> None:
    # .checkov.yaml skips CKV_K8S_8/9 for the helm test pods; this keeps the rule for the rest.
    # Run-to-completion pods (helm test pods, the Redis password hook Job) have nothing to probe.
    for label, spec in pod_specs(rendered[env]):
        if label.startswith(("Pod/", "Job/")):
            continue
        for c in _containers(spec):
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, f"{label}/{c['name']} has no {probe}"
