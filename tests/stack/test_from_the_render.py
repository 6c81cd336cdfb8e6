"""The harness runs what the chart renders: no process, no test, just the translation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from stack.containers import create_args, security_flags
from stack.kubelet import ProjectedVolume, expand, expand_all, resolve_env
from stack.loopback import (
    VENV_BIN,
    LoopbackError,
    localise,
    localise_in_container,
    program_name,
    resolve_services,
)
from stack.nginx import ControllerConfig, Location, Upstream, render_conf
from stack.render import Manifest, render

from stack import ENVIRONMENTS


def rendered(env: str = "local", *sets: str) -> Manifest:
    spec = ENVIRONMENTS[env].with_sets(*sets)
    return render(spec.release, spec.namespace, spec.values_files, spec.sets)


def test_kubernetes_variable_expansion() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$$(A)", env) == "$(A)"  # escaped
    assert expand("$(MISSING) $(A", env) == "$(MISSING) $(A"  # left as written
    assert expand("cost $5", env) == "cost $5"


def test_the_api_environment_is_the_configmap_the_secret_and_the_deployment() -> None:
    manifest = rendered()
    api = manifest.deployment("api")
    env = resolve_env(api.containers[0], manifest, {})
    config = manifest.config_maps[api.containers[0].env_from[0]["configMapRef"]["name"]]
    assert {k: env[k] for k in config} == config  # envFrom, whole
    assert env["APP_REPLICAS"] == str(api.replicas) == "3"
    assert env["APP_REDIS_PASSWORD"] == next(iter(manifest.secrets.values()))["redis-password"]
    assert env["APP_ALLOWED_ORIGINS_FILE"] == "/etc/gatehouse/APP_ALLOWED_ORIGINS"


def test_a_chart_value_changes_what_runs() -> None:
    manifest = rendered("local", "replicaCount=2", "config.rateLimit.search=7/minute")
    api = manifest.deployment("api")
    env = resolve_env(api.containers[0], manifest, {})
    assert api.replicas == 2 and env["APP_REPLICAS"] == "2"
    assert env["APP_RATE_LIMIT_SEARCH"] == "7/minute"


def test_only_the_loopback_differences_are_overridden(tmp_path: Path) -> None:
    manifest = rendered()
    redis = manifest.deployment("redis").containers[0]
    redis_env = resolve_env(redis, manifest, {})
    argv = expand_all([*redis.command, *redis.args], redis_env)
    assert "$$(" not in " ".join(argv)  # the kubelet's escape was undone, as it does
    local, process_env = localise(
        argv,
        redis_env,
        ip="127.0.30.1",
        ports={6379: 40001},
        services={},
        mounts={"/data": tmp_path / "data", "/etc/redis-auth": tmp_path / "auth"},
        home=tmp_path,
    )
    # sh runs the chart's script, which execs the server named after it.
    assert local[:2] == ["/bin/sh", "-c"] and local[3] == "redis-server"
    # Everything as rendered, except the port, the data dir, and the address to bind.
    expected = [*argv[1:], "--bind", "127.0.30.1"]
    expected[expected.index("6379")] = "40001"
    expected[expected.index("/data")] = str(tmp_path / "data")
    assert local[1:] == expected
    # The password is read from the mounted Secret: it is on no command line.
    assert process_env["REDIS_PASSWORD_FILE"] == str(tmp_path / "auth" / "password")
    password = resolve_env(manifest.deployment("api").containers[0], manifest, {})
    assert not any(password["APP_REDIS_PASSWORD"] in arg for arg in local)
    assert not any(name.startswith("APP_") for name in process_env)

    api = manifest.deployment("api").containers[0]
    api_env = resolve_env(api, manifest, {})
    argv = expand_all([*api.command, *api.args], api_env)
    services = {("gatehouse-redis", 6379): ("127.0.30.1", 40001)}
    mounts = {"/etc/gatehouse": tmp_path / "config"}
    local, process_env = localise(
        argv,
        api_env,
        ip="127.0.20.1",
        ports={8000: 40002, 9090: 40003},
        services=services,
        mounts=mounts,
        home=tmp_path,
    )
    # The chart's `python -m gatehouse`, with the virtualenv's python (gatehouse is installed there).
    assert argv[:3] == ["python", "-m", "gatehouse"]
    assert local[:3] == [str(VENV_BIN / "python"), "-m", "gatehouse"]
    assert local[3:] == [
        {"0.0.0.0": "127.0.20.1", "8000": "40002"}.get(arg, arg) for arg in argv[3:]
    ]
    assert process_env["APP_REDIS_URL"] == "redis://127.0.30.1:40001/0"
    assert process_env["APP_ALLOWED_ORIGINS_FILE"] == str(
        tmp_path / "config" / "APP_ALLOWED_ORIGINS"
    )
    # The metrics port is a container port too: it moves with the others.
    assert (api_env["APP_METRICS_PORT"], process_env["APP_METRICS_PORT"]) == ("9090", "40003")
    changed = {k for k in api_env if api_env[k] != process_env[k]}
    assert changed == {"APP_REDIS_URL", "APP_ALLOWED_ORIGINS_FILE", "APP_METRICS_PORT"}


def test_the_probes_the_harness_waits_on_are_on_the_metrics_port() -> None:
    api = rendered().deployment("api").containers[0]
    probes = {"startup": api.startup_probe, "readiness": api.readiness_probe}
    assert {kind: (p.kind, p.port, p.path) for kind, p in probes.items() if p} == {
        "startup": ("http", "metrics", "/healthz"),
        "readiness": ("http", "metrics", "/readyz"),
    }
    # A container port of its own, which the harness maps like any other.
    assert api.port_number("metrics") == 9090 != api.port_number("http")


def test_the_program_is_named_by_its_module_under_python() -> None:
    assert program_name(["python", "-m", "gatehouse", "--host", "0.0.0.0"]) == "gatehouse"
    assert program_name(["/opt/venv/bin/python3.12", "-m", "gatehouse"]) == "gatehouse"
    assert program_name(["/usr/bin/redis-server", "--port", "6379"]) == "redis-server"
    assert program_name(["python", "-c", "print()"]) == "python"
    with pytest.raises(LoopbackError, match="python chooses its listen address"):
        localise_in_container(
            ["python", "-c", "print()"], {}, ip="127.0.20.1", ports={}, services={}
        )
    # The words after `-m gatehouse` are the program's: its port is mapped, a missing --host added.
    local, _ = localise_in_container(
        ["python", "-m", "gatehouse", "--port", "8000"],
        {},
        ip="127.0.20.1",
        ports={8000: 40002},
        services={},
    )
    assert local == ["python", "-m", "gatehouse", "--port", "40002", "--host", "127.0.20.1"]


def test_service_names_resolve_in_every_form() -> None:
    services = {("gatehouse-redis.ns.svc", 6379): ("127.0.30.1", 1234)}
    for url in (
        "redis://gatehouse-redis.ns.svc:6379/0",
        "redis://gatehouse-redis.ns.svc.cluster.local:6379/0",
    ):
        assert resolve_services(url, services) == "redis://127.0.30.1:1234/0"
    assert resolve_services("redis://other:6379/0", services) == "redis://other:6379/0"
    assert (
        resolve_services("redis://:pw@gatehouse-redis.ns.svc:6379", services)
        == "redis://:pw@127.0.30.1:1234"
    )


def test_configmap_volumes_are_laid_out_and_updated_like_the_kubelet_does(tmp_path: Path) -> None:
    volume = ProjectedVolume(tmp_path / "config")
    volume.write({"A": "1", "B": "2"})
    first = os.readlink(tmp_path / "config" / "..data")
    assert first.startswith("..") and (tmp_path / "config" / first / "A").read_text() == "1"
    assert os.readlink(tmp_path / "config" / "A") == "..data/A"
    volume.write({"A": "one"})
    second = os.readlink(tmp_path / "config" / "..data")
    assert second != first and not (tmp_path / "config" / first).exists()
    assert (tmp_path / "config" / "A").read_text() == "one"
    assert not (tmp_path / "config" / "B").exists()
    assert not (tmp_path / "config" / "..data_tmp").exists()


def test_nginx_follows_the_controller_settings(tmp_path: Path) -> None:
    upstream = Upstream("ns-svc-http", (("127.0.20.1", 1), ("127.0.20.2", 2)))
    servers = {
        "api.localtest": [
            Location("/", "Prefix", upstream, "Ingress/x"),
            Location("/api", "Prefix", upstream, "Ingress/x"),
        ]
    }

    def conf(**settings: str) -> str:
        config = ControllerConfig({**ControllerConfig.load().settings, **settings})
        return render_conf(
            prefix=tmp_path,
            listen=("127.0.10.1", 80),
            status_port=81,
            servers=servers,
            config=config,
            generation=1,
        )

    project = conf()  # what k8s/ingress/*.yaml configure
    assert "set_real_ip_from" not in project  # use-forwarded-headers: "false"
    assert "proxy_set_header X-Forwarded-For $full_x_forwarded_for;" in project
    assert "default $proxy_add_x_forwarded_for;" in project  # compute-full-forwarded-for
    assert "proxy_bind 127.0.10.1;" in project
    assert "proxy_next_upstream error timeout;" in project
    assert "location = /api {" in project and "location /api/ {" in project
    assert "server_tokens off;" in project

    replacing = conf(**{"compute-full-forwarded-for": "false"})
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in replacing
    trusting = conf(**{"use-forwarded-headers": "true", "proxy-real-ip-cidr": "10.0.0.0/8"})
    assert "set_real_ip_from 10.0.0.0/8;" in trusting


def test_both_local_environments_route_their_own_host() -> None:
    hosts = {env: [route.host for route in rendered(env).routes] for env in ("local", "local-b")}
    assert hosts == {"local": ["api-a.localtest"], "local-b": ["api-b.localtest"]}


def test_the_container_runtime_translates_the_pod_spec_to_docker_flags(tmp_path: Path) -> None:
    manifest = rendered()
    api = manifest.deployment("api")
    pod_spec = api.pod_template["spec"]
    raw = pod_spec["containers"][0]
    api_env = resolve_env(api.containers[0], manifest, {})
    argv = expand_all([*api.containers[0].command, *api.containers[0].args], api_env)
    services = {("gatehouse-redis", 6379): ("127.0.30.1", 40001)}
    local, variables = localise_in_container(
        argv, api_env, ip="127.0.20.1", ports={8000: 40002, 9090: 40003}, services=services
    )
    # The image's python; the real mount path; only the address, port and Service change.
    assert local == [{"0.0.0.0": "127.0.20.1", "8000": "40002"}.get(a, a) for a in argv]
    assert variables["APP_ALLOWED_ORIGINS_FILE"] == "/etc/gatehouse/APP_ALLOWED_ORIGINS"
    assert {k for k in api_env if api_env[k] != variables[k]} == {
        "APP_REDIS_URL",
        "APP_METRICS_PORT",
    }

    args = create_args(
        name="n",
        labels={"gatehouse.stack": "x"},
        image="gatehouse-api:dev",
        pod_spec=pod_spec,
        container=raw,
        local_dirs={"config": tmp_path / "config", "tmp": tmp_path / "tmp"},
        env_names=sorted(variables),
        argv=local,
    )
    joined = " ".join(args)
    for flags in (
        "--network host",
        "--user 10001:10001",
        "--group-add 10001",
        "--read-only",
        "--cap-drop ALL",
        "--security-opt no-new-privileges",
        f"--tmpfs /tmp:rw,nosuid,nodev,mode=1777,size={64 * 2**20}",
        f"--volume {tmp_path / 'config'}:/etc/gatehouse:ro",
        f"--memory {256 * 2**20} --cpus 1",
        "--entrypoint python gatehouse-api:dev -m gatehouse --host 127.0.20.1 --port 40002",
    ):
        assert flags in joined
    assert "seccomp" not in joined  # RuntimeDefault is docker's default profile
    assert "--env APP_REDIS_PASSWORD" in joined
    assert api_env["APP_REDIS_PASSWORD"] not in joined  # values reach docker by environment

    with pytest.raises(LoopbackError, match="sysctls"):
        security_flags({"securityContext": {"sysctls": []}}, raw)
