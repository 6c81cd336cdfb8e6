"""Gatehouse in a real cluster, checked from pods inside it with ``python -m gatehouse.probe``."""

from __future__ import annotations

import ipaddress
import time

import pytest

from tests.k8s.conftest import (
    HELM,
    Cluster,
    Release,
    helm_install,
    option,
    run,
)

pytestmark = pytest.mark.k8s

FOREIGN = "https://evil.example"


def search(release: Release) -> str:
    return f"{release.base_url}/search?q=k8s"


# -- CORS, per namespace -----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["a", "b"])
def test_own_origin_allowed_other_namespace_origin_refused(releases, probe, which) -> None:
    release, other = releases if which == "a" else releases[::-1]
    allowed = probe(release.namespace, "--url", search(release), "--origin", release.origin,
                    "--expect", "allowed", "--expect-security-headers")  # fmt: skip
    assert allowed.returncode == 0, allowed
    # The other namespace's origin is foreign here: its allowlist does not leak across.
    refused = probe(release.namespace, "--url", search(release), "--origin", other.origin,
                    "--expect", "refused", "--expect-security-headers", "--json")  # fmt: skip
    assert refused.returncode == 0, refused
    assert "no Access-Control-Allow-Origin" in refused.json()["preflight"]["reasons"]


def test_preflight_for_a_json_put_is_allowed(releases, probe) -> None:
    release = releases[0]
    result = probe(
        release.namespace, "--url", f"{release.base_url}/items/1", "--origin", release.origin,
        "--method", "PUT", "--data", '{"name": "k8s"}', "--preflight-headers", "content-type",
        "--expect", "allowed", "--expect-status", "404", "--expect-security-headers",
    )  # fmt: skip
    assert result.returncode == 0, result


# -- security headers on errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "extra", "status"),
    [
        ("/items/987654", (), "404"),
        ("/search?q=k8s", ("--host-header", "not-trusted.example"), "400"),
        ("/items", ("--method", "POST", "--data", "{}"), "422"),
    ],
    ids=["404", "400-host", "422"],
)
def test_security_and_cors_headers_on_errors(releases, probe, path, extra, status) -> None:
    release = releases[0]
    result = probe(
        release.namespace, "--url", f"{release.base_url}{path}", "--origin", release.origin,
        *extra, "--no-preflight", "--no-whoami", "--expect-status", status,
        "--expect-security-headers", "--expect", "allowed",
    )  # fmt: skip
    assert result.returncode == 0, result


# -- the limit ---------------------------------------------------------------------------------


def test_limit_is_exact_across_replicas_through_the_service(
    cluster: Cluster, releases, probe
) -> None:
    release = releases[0]
    assert len(cluster.api_pods(release)) >= 2, "the release should run at least 2 API pods"
    limit = release.search_limit
    extra = 5
    result = None
    # A fresh pod is a fresh client IP, so a fresh bucket; a second try covers a burst that
    # happened to straddle the window's end.
    for _attempt in range(2):
        result = probe(
            release.namespace, "--url", search(release), "--origin", release.origin,
            "--no-preflight", "--repeat", str(limit + extra), "--concurrency", str(limit + extra),
            "--expect-status", f"200={limit}", "--expect-status", f"429={extra}",
            "--expect-security-headers", "--expect", "allowed", "--json",
        )  # fmt: skip
        if result.returncode == 0:
            break
    assert result is not None and result.returncode == 0, result
    assert result.json()["status_counts"] == {"200": limit, "429": extra}


def test_limit_keyed_by_client_ip_through_the_ingress(
    cluster: Cluster, releases, outsider, request
) -> None:
    ingress_url = option(request.config, "ingress_url")
    if not ingress_url:
        pytest.skip("no --ingress-url given (the ingress controller's URL as pods reach it)")
    release = releases[0]
    host = option(request.config, "ingress_host")
    limit = release.search_limit
    url = f"{ingress_url.rstrip('/')}/search?q=ingress"
    for _client in ("first", "second"):
        # Each pod is its own client: both get the whole limit, and each sees its own IP
        # even when it sends a forged X-Forwarded-For.
        result = cluster.probe(
            outsider, "--url", url, "--host-header", host, "--origin", release.origin,
            "--no-preflight", "--repeat", str(limit + 2), "--concurrency", str(limit + 2),
            "--header", "X-Forwarded-For: 203.0.113.50",
            "--expect-status", f"200={limit}", "--expect-status", "429=2",
            "--expect-client-ip", "self", "--expect-security-headers", "--json",
        )  # fmt: skip
        assert result.returncode == 0, result


# -- who may connect, and whom the service believes --------------------------------------------


def test_network_policy_refuses_unlabelled_pod_from_another_namespace(
    cluster: Cluster, releases, outsider, request
) -> None:
    if option(request.config, "no_netpol"):
        pytest.skip("--no-netpol: this cluster does not enforce NetworkPolicy")
    release = releases[0]
    service = cluster.core.read_namespaced_service(
        release.fullname, release.namespace, _request_timeout=10
    )
    port = service.spec.ports[0].port
    # An IP: no DNS in the way. /whoami: the probe paths are not served on this port.
    url = f"http://{service.spec.cluster_ip}:{port}/whoami"
    blocked = cluster.probe(outsider, "--url", url, "--origin", release.origin,
                            "--timeout", "5", "--no-preflight", "--no-whoami", labelled=False,
                            wait_reachable=False)  # fmt: skip
    assert blocked.returncode == 3, blocked
    assert "cannot reach" in blocked.stderr + blocked.stdout, blocked
    # The control: a labelled pod in the release's namespace reaches the same address.
    admitted = cluster.probe(release.namespace, "--url", url, "--origin", release.origin,
                             "--host-header", release.service_host,
                             "--no-preflight", "--no-whoami", "--expect-status", "200")  # fmt: skip
    assert admitted.returncode == 0, admitted


def test_forwarded_for_from_a_pod_reaching_a_replica_is_not_trusted(
    cluster: Cluster, releases
) -> None:
    release = releases[0]
    pods = cluster.api_pods(release)
    assert pods, "no running API pod"
    pod_ip = ipaddress.ip_address(pods[0].status.pod_ip)
    trusted = [ipaddress.ip_network(cidr, strict=False) for cidr in release.trusted_cidrs]
    if any(pod_ip in network for network in trusted):
        pytest.skip(
            f"release {release.namespace}/{release.name} trusts the pod network "
            f"({', '.join(release.trusted_cidrs)}): its labelled pods are proxies by design"
        )
    host = f"[{pod_ip}]" if pod_ip.version == 6 else str(pod_ip)
    result = cluster.probe(
        release.namespace, "--url", f"http://{host}:8000/whoami", "--origin", release.origin,
        "--host-header", release.service_host, "--no-preflight",
        "--header", "X-Forwarded-For: 203.0.113.7", "--header", "X-Forwarded-Proto: https",
        "--expect-client-ip", "self", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result
    assert result.json()["client"]["scheme"] == "http"


# -- change without loss -----------------------------------------------------------------------


def test_rollout_after_an_origins_change_drops_no_request(
    cluster: Cluster, releases, request, tmp_path
) -> None:
    release = releases[1]
    if not release.throwaway:
        pytest.skip("changes the release: runs only on the suite's own releases")
    seconds = option(request.config, "rollout_seconds") or 180
    # /whoami (the probe paths are not served on the Service's port): past the limit it
    # answers 429, still an answer with CORS headers; a dropped request is an error or a 5xx.
    loop = cluster.start_probe(
        release.namespace, "--url", f"{release.base_url}/whoami", "--origin", release.origin,
        "--no-preflight", "--no-whoami", "--duration", str(seconds), "--interval", "0.05",
        "--concurrency", "2", "--timeout", "5", "--expect", "allowed", "--json",
    )  # fmt: skip
    time.sleep(5)  # the loop is under way before the rollout starts
    added = "https://added.k8s-test.example"
    release.values["config"]["allowedOrigins"] = [release.origin, added]
    # Origins alone reload without new pods (the chart's checksum leaves them out): a
    # setting that needs a restart makes this a rollout.
    release.values["config"]["logLevel"] = "debug"
    started = time.monotonic()
    helm_install(release, tmp_path)
    took = time.monotonic() - started
    assert took < seconds - 10, (
        f"the upgrade took {took:.0f} s, longer than the probe loop: raise --rollout-seconds"
    )
    result = cluster.finish(release.namespace, loop, timeout=seconds + 120)
    assert result.returncode == 0, result
    report = result.json()
    assert report["errors"] == {}, report["errors"]
    assert set(report["status_counts"]) <= {"200", "429"}, report["status_counts"]
    assert report["status_counts"]["200"] > 0, report["status_counts"]
    # And the new origin is live everywhere.
    after = cluster.probe(
        release.namespace, "--url", f"{release.base_url}/search?q=new", "--origin", added,
        "--repeat", "4", "--concurrency", "4", "--expect", "allowed",
    )  # fmt: skip
    assert after.returncode == 0, after


# -- the chart's own tests ---------------------------------------------------------------------


@pytest.mark.parametrize("which", [0, 1], ids=["a", "b"])
def test_helm_test_passes(releases, which) -> None:
    release = releases[which]
    done = run([HELM, "test", release.name, "--namespace", release.namespace, "--timeout", "5m"],
               timeout=420, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
