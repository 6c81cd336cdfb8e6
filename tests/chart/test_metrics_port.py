"""/metrics, /healthz and /readyz live on the pods' own `metrics` port (APP_METRICS_PORT):
the probes use it, nothing routed from outside reaches it, and a scraper gets it through an
optional metrics Service and ServiceMonitor."""

from __future__ import annotations

import pytest

from .conftest import API, CHART, ENVIRONMENTS, RELEASE, Doc, find, helm, load_values, one, render

ENVS = list(ENVIRONMENTS)
METRICS_SERVICE = f"{API}-metrics"


def _api_container(docs: list[Doc]) -> Doc:
    spec = one(docs, "Deployment", API)["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "api"]
    return container


def _service_port_names(service: Doc) -> list[str]:
    return [p["name"] for p in service["spec"]["ports"]]


@pytest.mark.parametrize("env", ENVS)
def test_metrics_port_is_its_own_container_port(rendered: dict[str, list[Doc]], env: str) -> None:
    container = _api_container(rendered[env])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port = load_values(env)["metrics"]["port"]
    assert ports == {"http": 8000, "metrics": port}
    env_vars = {e["name"]: e.get("value") for e in container["env"]}
    assert env_vars["APP_METRICS_PORT"] == str(port)
    # Every probe path is served only on the metrics port.
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "metrics", probe


def test_metrics_port_follows_the_value() -> None:
    container = _api_container(render("default", "--set", "metrics.port=9102"))
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"] == 9102
    assert {e["name"]: e.get("value") for e in container["env"]}["APP_METRICS_PORT"] == "9102"


def test_metrics_port_cannot_be_the_serving_port() -> None:
    result = helm("template", RELEASE, str(CHART), "--set", "metrics.port=8000")
    assert result.returncode != 0
    assert "/metrics/port" in result.stderr


@pytest.mark.parametrize("env", ENVS)
def test_the_api_service_exposes_only_http(rendered: dict[str, list[Doc]], env: str) -> None:
    service = one(rendered[env], "Service", API)
    assert service["spec"]["ports"] == [
        {
            "name": "http",
            "port": load_values(env)["service"]["port"],
            "targetPort": "http",
            "protocol": "TCP",
        }
    ]


def _ingress_backends(docs: list[Doc]) -> list[Doc]:
    return [
        path["backend"]["service"]
        for ingress in find(docs, "Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]


def test_ingress_routes_only_to_http(rendered: dict[str, list[Doc]]) -> None:
    backends = _ingress_backends(rendered["staging"]) + _ingress_backends(rendered["dev"])
    assert backends, "no Ingress rendered to check"
    assert all(b == {"name": API, "port": {"name": "http"}} for b in backends), backends


def test_httproute_routes_only_to_http(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["prod"]
    (route,) = find(docs, "HTTPRoute")
    http_port = one(docs, "Service", API)["spec"]["ports"][0]
    assert http_port["name"] == "http"
    backends = [b for rule in route["spec"]["rules"] for b in rule["backendRefs"]]
    assert backends == [{"name": API, "port": http_port["port"]}]
    # Not the metrics Service, which prod renders too.
    assert all(b["name"] != METRICS_SERVICE for b in backends)


def test_metrics_service_and_monitor_are_off_by_default(rendered: dict[str, list[Doc]]) -> None:
    assert not find(rendered["default"], "Service", METRICS_SERVICE)
    assert not find(rendered["default"], "ServiceMonitor")


def test_metrics_service_targets_only_the_metrics_port() -> None:
    docs = render("default", "--set", "metrics.service.enabled=true")
    service = one(docs, "Service", METRICS_SERVICE)
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["type"] == "ClusterIP"
    api_pods = one(docs, "Deployment", API)["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == api_pods
    assert not find(docs, "ServiceMonitor")


def test_service_monitor_scrapes_the_metrics_service() -> None:
    docs = render(
        "default",
        "--set", "metrics.service.enabled=true",
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
        "--set", "metrics.serviceMonitor.interval=15s",
    )  # fmt: skip
    monitor = one(docs, "ServiceMonitor", API)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "15s",
         "scrapeTimeout": "10s"}
    ]  # fmt: skip
    # It selects the metrics Service and only it (the API Service has no metrics port).
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s["metadata"]["name"]
        for s in find(docs, "Service")
        if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert selected == [METRICS_SERVICE]


def test_service_monitor_without_the_metrics_service_is_refused() -> None:
    result = helm("template", RELEASE, str(CHART), "--set", "metrics.serviceMonitor.enabled=true")
    assert result.returncode != 0
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in result.stderr


def test_prod_is_scraped_through_the_metrics_service(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["prod"]
    one(docs, "Service", METRICS_SERVICE)
    assert one(docs, "ServiceMonitor", API)["metadata"]["labels"]["release"]


@pytest.mark.parametrize("env", ENVS)
def test_test_pods_never_reach_the_metrics_port(rendered: dict[str, list[Doc]], env: str) -> None:
    policy = one(rendered[env], "NetworkPolicy", f"{API}-tests")["spec"]
    ports = [p["port"] for rule in policy["egress"] for p in rule.get("ports", [])]
    assert 8000 in ports
    assert load_values(env)["metrics"]["port"] not in ports
    assert "metrics" not in ports


def test_a_helm_test_checks_metrics_are_not_routed(rendered: dict[str, list[Doc]]) -> None:
    commands = [
        " ".join(pod["spec"]["containers"][0]["args"]) for pod in find(rendered["default"], "Pod")
    ]
    assert any(
        f"--url http://{API}:80/metrics" in c and "--expect-status 404" in c for c in commands
    ), commands
    # And the Service check uses a real API route, not a probe path.
    assert not any("/healthz" in c or "/readyz" in c for c in commands), commands
