"""NetworkPolicy presets: who may connect as the ingress controller, which DNS the pods may
ask, and the Prometheus scrape on the metrics port alone. The expected labels are written
here from the controllers' and DNS add-ons' own manifests, not read from the chart."""

from __future__ import annotations

import json

import pytest

from .conftest import (
    API,
    CHART,
    CONTROLLER_PRESETS,
    RELEASE,
    Doc,
    expected_controller_peer,
    helm,
    load_values,
    one,
    render,
)

KUBE_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
OPENSHIFT_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "openshift-dns"}},
    "podSelector": {"matchLabels": {"dns.operator.openshift.io/daemonset-dns": "default"}},
}


def _api_policy(docs: list[Doc]) -> Doc:
    return dict(one(docs, "NetworkPolicy", API)["spec"])


def _controller_rule(docs: list[Doc]) -> Doc:
    # The port-http rule: the controller is its first peer, the client-label peers follow.
    (rule,) = [
        r for r in _api_policy(docs)["ingress"] if {"port": "http", "protocol": "TCP"} in r["ports"]
    ]
    return rule


def _dns_rules(policy: Doc) -> list[Doc]:
    return [
        rule
        for rule in policy["egress"]
        if any(p.get("port") in (53, 5353) for p in rule.get("ports", []))
    ]


def _ports(rule: Doc) -> set[tuple[int, str]]:
    return {(p["port"], p["protocol"]) for p in rule["ports"]}


@pytest.mark.parametrize("preset", list(CONTROLLER_PRESETS))
def test_controller_preset_admits_that_controller(preset: str) -> None:
    docs = render("default", "--set", f"networkPolicy.ingressController.preset={preset}")
    rule = _controller_rule(docs)
    assert rule["from"][0] == CONTROLLER_PRESETS[preset]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_default_controller_is_traefik(rendered: dict[str, list[Doc]]) -> None:
    assert _controller_rule(rendered["default"])["from"][0] == CONTROLLER_PRESETS["traefik"]


def test_an_explicit_selector_wins_over_the_preset() -> None:
    # k3s installs Traefik in kube-system: keep the preset's pod labels, change the namespace.
    namespace = {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
    docs = render(
        "default",
        "--set-json",
        f"networkPolicy.ingressController.namespaceSelector={json.dumps(namespace)}",
    )
    assert _controller_rule(docs)["from"][0] == {
        "namespaceSelector": namespace,
        "podSelector": CONTROLLER_PRESETS["traefik"]["podSelector"],
    }


def test_custom_controller_takes_the_selectors_as_given() -> None:
    namespace = {"matchLabels": {"kubernetes.io/metadata.name": "edge"}}
    docs = render(
        "default",
        "--set", "networkPolicy.ingressController.preset=custom",
        "--set", "networkPolicy.ingressController.namespaceSelector.matchLabels"
        ".kubernetes\\.io/metadata\\.name=edge",
    )  # fmt: skip
    # No pod selector given: every pod of that namespace, as written.
    assert _controller_rule(docs)["from"][0] == {"namespaceSelector": namespace, "podSelector": {}}


def test_custom_controller_without_a_namespace_is_refused() -> None:
    result = helm(
        "template", RELEASE, str(CHART), "--set", "networkPolicy.ingressController.preset=custom"
    )
    assert result.returncode != 0
    assert "networkPolicy.ingressController" in result.stderr


def test_an_unknown_controller_preset_is_refused() -> None:
    result = helm(
        "template", RELEASE, str(CHART), "--set", "networkPolicy.ingressController.preset=haproxy"
    )
    assert result.returncode != 0
    assert "/networkPolicy/ingressController/preset" in result.stderr


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_environments_admit_their_controller(rendered: dict[str, list[Doc]], env: str) -> None:
    expected = {"dev": "traefik", "staging": "traefik", "prod": "envoy-gateway"}[env]
    assert expected_controller_peer(load_values(env)) == CONTROLLER_PRESETS[expected]
    assert _controller_rule(rendered[env])["from"][0] == CONTROLLER_PRESETS[expected]


def test_the_cluster_values_admit_its_traefik() -> None:
    # k8s/values-cluster.yaml goes over prod's file in the cluster suite: Traefik must win.
    docs = render("prod", "-f", str(CHART.parents[1] / "k8s" / "values-cluster.yaml"))
    assert _controller_rule(docs)["from"][0] == CONTROLLER_PRESETS["traefik"]


def test_the_default_manifests_never_name_nginx(rendered_text: dict[str, str]) -> None:
    # ingress-nginx is retired: a new install must not depend on it anywhere.
    assert "nginx" not in rendered_text["default"].lower()


# -- DNS ------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy_name", [API, f"{API}-tests"])
def test_dns_default_is_kube_dns(rendered: dict[str, list[Doc]], policy_name: str) -> None:
    policy = one(rendered["default"], "NetworkPolicy", policy_name)["spec"]
    (rule,) = _dns_rules(policy)
    assert rule["to"] == [KUBE_DNS]
    assert _ports(rule) == {(53, "UDP"), (53, "TCP")}


@pytest.mark.parametrize("policy_name", [API, f"{API}-tests"])
def test_dns_node_local_allows_the_cache_and_kube_dns(policy_name: str) -> None:
    docs = render("default", "--set", "networkPolicy.dns.preset=node-local-dns")
    (rule,) = _dns_rules(one(docs, "NetworkPolicy", policy_name)["spec"])
    assert rule["to"] == [{"ipBlock": {"cidr": "169.254.20.10/32"}}, KUBE_DNS]
    assert _ports(rule) == {(53, "UDP"), (53, "TCP")}


def test_dns_node_local_address_is_a_value() -> None:
    docs = render(
        "default",
        "--set", "networkPolicy.dns.preset=node-local-dns",
        "--set", "networkPolicy.dns.nodeLocalAddress=169.254.25.10",
    )  # fmt: skip
    (rule,) = _dns_rules(_api_policy(docs))
    assert {"ipBlock": {"cidr": "169.254.25.10/32"}} in rule["to"]
    refused = helm(
        "template", RELEASE, str(CHART), "--set", "networkPolicy.dns.nodeLocalAddress=10.0.0.10"
    )
    assert refused.returncode != 0
    assert "/networkPolicy/dns/nodeLocalAddress" in refused.stderr


@pytest.mark.parametrize("policy_name", [API, f"{API}-tests"])
def test_dns_openshift_allows_the_operators_coredns(policy_name: str) -> None:
    docs = render("default", "--set", "networkPolicy.dns.preset=openshift")
    (rule,) = _dns_rules(one(docs, "NetworkPolicy", policy_name)["spec"])
    assert rule["to"] == [OPENSHIFT_DNS]
    # The Service's 53 is the pods' 5353, which is what a policy sees.
    assert _ports(rule) == {(5353, "UDP"), (5353, "TCP"), (53, "UDP"), (53, "TCP")}


def test_dns_custom_takes_selectors_and_ports() -> None:
    dns = {
        "preset": "custom",
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}},
        "podSelector": {"matchLabels": {"app": "unbound"}},
        "ports": [5053],
    }
    docs = render("default", "--set-json", f"networkPolicy.dns={json.dumps(dns)}")
    (rule,) = [r for r in _api_policy(docs)["egress"] if (5053, "UDP") in _ports(r)]
    assert rule["to"] == [
        {"namespaceSelector": dns["namespaceSelector"], "podSelector": dns["podSelector"]}
    ]
    assert _ports(rule) == {(5053, "UDP"), (5053, "TCP")}


def test_dns_custom_without_a_namespace_is_refused() -> None:
    result = helm("template", RELEASE, str(CHART), "--set", "networkPolicy.dns.preset=custom")
    assert result.returncode != 0
    assert "networkPolicy.dns" in result.stderr


# -- the scrape ------------------------------------------------------------------------------


def _metrics_rules(docs: list[Doc]) -> list[Doc]:
    return [
        rule
        for rule in _api_policy(docs)["ingress"]
        if any(p["port"] == "metrics" for p in rule["ports"])
    ]


@pytest.mark.parametrize("env", ["default", "dev", "staging"])
def test_no_one_reaches_the_metrics_port_by_default(
    rendered: dict[str, list[Doc]], env: str
) -> None:
    policy = _api_policy(rendered[env])
    ports = [p["port"] for rule in policy["ingress"] for p in rule["ports"]]
    assert ports and set(ports) == {"http"}, ports


def test_the_scraper_reaches_only_the_metrics_port() -> None:
    docs = render("default", "--set", "networkPolicy.metricsScraper.enabled=true")
    (rule,) = _metrics_rules(docs)
    # kube-prometheus-stack in `monitoring`: the operator labels its Prometheus pods so.
    assert rule == {
        "from": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            }
        ],
        "ports": [{"port": "metrics", "protocol": "TCP"}],
    }
    # The controller and clients still reach port http only.
    assert _controller_rule(docs)["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_prod_lets_its_prometheus_scrape(rendered: dict[str, list[Doc]]) -> None:
    (rule,) = _metrics_rules(rendered["prod"])
    assert rule["from"][0]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "prometheus"}
    }
