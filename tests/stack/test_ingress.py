"""Through nginx as the ingress: one shared limit, per-client budgets, per-namespace CORS,
and no way to the probes or the metrics."""

from __future__ import annotations

from collections import Counter

import httpx
from prometheus_client.parser import text_string_to_metric_families

from stack import Stack
from tests.stack.conftest import (
    CLIENT_A,
    CLIENT_B,
    CLIENT_DIRECT,
    burst,
    client,
    management,
    search_counts,
    statuses,
    wait_for_fresh_window,
)


def first_origin(stack: Stack, env: str) -> str:
    return stack.config(env)["APP_ALLOWED_ORIGINS"].split(",")[0]


def search_limit(stack: Stack, env: str) -> tuple[str, int]:
    limit = stack.config(env)["APP_RATE_LIMIT_SEARCH"]
    return limit, int(limit.split("/")[0])


def test_100_concurrent_requests_over_3_replicas_admit_exactly_the_limit(flushed: Stack) -> None:
    stack = flushed
    limit, amount = search_limit(stack, "local")
    assert amount == 10, f"values-local.yaml renders APP_RATE_LIMIT_SEARCH={limit}"
    replicas = stack.pods("local")
    assert len(replicas) == 3
    origin = first_origin(stack, "local")
    before = [search_counts(pod) for pod in replicas]
    wait_for_fresh_window(stack, "local", limit, needed=5)

    replies = burst(stack, "local", 100, headers={"Origin": origin})

    counts = statuses(replies)
    per_replica = [search_counts(pod) - old for pod, old in zip(replicas, before, strict=True)]
    print(f"\n100 concurrent GET /search from {CLIENT_A}, limit {limit}: status counts {counts}")
    for pod, served in zip(replicas, per_replica, strict=True):
        print(f"  {pod.name} {pod.ip}: {dict(sorted(served.items()))}")
    assert counts == {200: amount, 429: 100 - amount}
    assert all(sum(served.values()) > 0 for served in per_replica), "nginx skipped a replica"
    assert sum(sum(served.values()) for served in per_replica) == 100
    for reply in replies:
        if reply.status == 429:
            assert int(reply.headers["retry-after"]) >= 1
            assert reply.headers["access-control-allow-origin"] == origin
            assert reply.headers["x-ratelimit-remaining"] == "0"


def test_each_client_ip_has_its_own_budget_through_the_ingress(flushed: Stack) -> None:
    stack = flushed
    limit, amount = search_limit(stack, "local")
    wait_for_fresh_window(stack, "local", limit, needed=5)
    host = {"Host": stack.host("local")}
    budgets: dict[str, Counter[int]] = {}
    for source in (CLIENT_A, CLIENT_B):
        with client(stack, source) as session:
            # A forged X-Forwarded-For buys nothing: nginx appends the real peer.
            budgets[source] = Counter(
                session.get(
                    "/search?q=x", headers={**host, "X-Forwarded-For": f"203.0.113.{i}"}
                ).status_code
                for i in range(amount + 2)
            )
    print(f"\nper-client budgets through the ingress: { {k: dict(v) for k, v in budgets.items()} }")
    assert budgets == {
        CLIENT_A: Counter({200: amount, 429: 2}),
        CLIENT_B: Counter({200: amount, 429: 2}),
    }

    with client(stack, CLIENT_B) as session:
        seen = session.get(
            "/whoami",
            headers={**host, "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
        ).json()
    assert seen["client_ip"] == CLIENT_B  # the rightmost untrusted hop: the real peer
    assert seen["scheme"] == "http"  # the client's X-Forwarded-Proto was overwritten
    assert seen["host"] == stack.host("local")


def test_a_client_bypassing_the_ingress_cannot_choose_its_identity(flushed: Stack) -> None:
    stack = flushed
    limit, amount = search_limit(stack, "local")
    wait_for_fresh_window(stack, "local", limit, needed=5)
    replica = stack.pods("local")[0]
    transport = httpx.HTTPTransport(local_address=CLIENT_DIRECT)
    base = f"http://{replica.ip}:{replica.port('http')}"
    with httpx.Client(base_url=base, transport=transport, timeout=10) as session:
        host = {"Host": stack.host("local")}
        seen = session.get("/whoami", headers={**host, "X-Forwarded-For": "10.1.2.3"}).json()
        codes = Counter(
            session.get(
                "/search?q=x", headers={**host, "X-Forwarded-For": f"10.9.9.{i}"}
            ).status_code
            for i in range(amount + 3)
        )
    print(f"\ndirect to {replica.ip} from {CLIENT_DIRECT}: /whoami {seen}, /search {dict(codes)}")
    assert seen["client_ip"] == CLIENT_DIRECT  # the peer is outside 127.0.10.0/24: XFF ignored
    assert codes == Counter({200: amount, 429: 3})  # one budget, whatever XFF says


def test_each_namespace_allows_its_own_origins_only(flushed: Stack) -> None:
    stack = flushed
    origin_a, origin_b = first_origin(stack, "local"), first_origin(stack, "local-b")
    assert origin_a != origin_b
    results = {}
    for env in ("local", "local-b"):
        with client(stack) as session:
            for origin in (origin_a, origin_b):
                response = session.get(
                    "/whoami", headers={"Host": stack.host(env), "Origin": origin}
                )
                assert response.status_code == 200
                results[(env, origin)] = response.headers.get("access-control-allow-origin")
                # A preflight answers for the same allowlist.
                preflight = session.options(
                    "/items",
                    headers={
                        "Host": stack.host(env),
                        "Origin": origin,
                        "Access-Control-Request-Method": "POST",
                        "Access-Control-Request-Headers": "content-type",
                    },
                )
                allowed = preflight.headers.get("access-control-allow-origin")
                assert allowed == results[(env, origin)]
    print(f"\nAccess-Control-Allow-Origin by (namespace, origin): {results}")
    assert results == {
        ("local", origin_a): origin_a,
        ("local", origin_b): None,
        ("local-b", origin_a): None,
        ("local-b", origin_b): origin_b,
    }


def test_unknown_host_gets_the_default_backend(pair: Stack) -> None:
    with client(pair) as session:
        response = session.get("/whoami", headers={"Host": "unknown.localtest"})
    assert response.status_code == 404
    assert "x-request-id" not in response.headers  # nginx answered, no replica was reached


MANAGEMENT_PATHS = ("/healthz", "/readyz", "/metrics")


def spellings(path: str) -> list[str]:
    """``path`` as written, and as a client might write it to reach the same route (the
    server decodes %xx; a trailing slash, a query or a doubled slash change nothing)."""
    name = path.lstrip("/")
    return [path, f"{path}/", f"{path}?format=json", f"/{path}", f"/%{ord(name[0]):02x}{name[1:]}"]


def test_health_and_metrics_answer_on_the_management_port_only(flushed: Stack) -> None:
    stack = flushed
    pods = [pod for env in stack.envs for pod in stack.pods(env)]
    routed = [stack.host(env) for env in stack.envs]
    # Names nginx does not route (its default backend), and what a kubelet or a scraper
    # would send: an address, localhost.
    other_hosts = ["unknown.localtest", stack.ingress_ip, pods[0].ip, "localhost"]
    answered: Counter[tuple[str, int]] = Counter()
    with client(stack) as session:
        for host in [*routed, *other_hosts]:
            for path in MANAGEMENT_PATHS:
                for spelling in spellings(path):
                    response = session.get(spelling, headers={"Host": host})
                    where = f"Host {host} GET {spelling}: {response.status_code} {response.text}"
                    assert response.status_code == 404, where
                    # A routed host reaches a replica, which refuses on its serving port;
                    # any other host stops at nginx.
                    reached_replica = "x-request-id" in response.headers
                    assert reached_replica == (host in routed), where
                    answered[("replica" if reached_replica else "nginx", response.status_code)] += 1
    print(f"\nprobe and metrics paths through the ingress, by who answered: {dict(answered)}")

    # Bypassing the ingress changes nothing: the serving port has no such routes.
    replica = pods[0]
    transport = httpx.HTTPTransport(local_address=CLIENT_DIRECT)
    with httpx.Client(transport=transport, timeout=10) as session:
        for path in MANAGEMENT_PATHS:
            response = session.get(
                f"http://{replica.ip}:{replica.port('http')}{path}",
                headers={"Host": stack.host(replica.env)},
            )
            assert response.status_code == 404, f"{path}: {response.text}"

    # The management port answers them, on every replica of both namespaces, for a caller
    # sending Host = the pod's address as the kubelet does. Stack.up waited on the rendered
    # probes there (startup /healthz, readiness /readyz on port `metrics`): on port `http`
    # they would have met the 404s above and no pod would have become ready.
    for pod in pods:
        assert pod.port("metrics") != pod.port("http")
        live = management(pod, "/healthz")
        assert (live.status_code, live.json()) == (200, {"status": "ok"}), pod.name
        ready = management(pod, "/readyz")
        assert ready.status_code == 200, pod.name
        assert ready.json()["status"] == "ready" and ready.json()["redis"] == "ok"
        metrics = management(pod, "/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith(
            "text/plain"
        )
        families = {family.name for family in text_string_to_metric_families(metrics.text)}
        assert "gatehouse_http_requests" in families, sorted(families)
        # ... and nothing else: the management port is no second way into the API.
        assert management(pod, "/whoami").status_code == 404, pod.name
