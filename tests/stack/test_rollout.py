"""A rollout: new origins rendered into the ConfigMap reach the pods, old ones stop working."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import httpx
from stack.processes import group_members

from tests.stack.conftest import CLIENT_A, start

NEW_ORIGIN = "http://new-a.localtest:5175"


def test_new_origins_go_live_pod_by_pod_without_errors() -> None:
    stack = start("local")
    try:
        host = stack.host("local")
        old_origin = stack.config("local")["APP_ALLOWED_ORIGINS"].split(",")[0]
        old_pods = stack.pods("local")
        old_groups = {process.pid for pod in old_pods for process in pod.processes if process.pid}
        old_containers = stack.containers()  # none for the process runtime
        redis_before = stack.pods("local", "redis")[0]

        def allowed(origin: str) -> str | None:
            response = httpx.get(
                f"{stack.ingress_url}/healthz", headers={"Host": host, "Origin": origin}, timeout=5
            )
            return response.headers.get("access-control-allow-origin")

        assert allowed(old_origin) == old_origin
        assert allowed(NEW_ORIGIN) is None

        # Traffic through the ingress for the whole rollout.
        seen: Counter[int | str] = Counter()
        stop = threading.Event()

        def load() -> None:
            transport = httpx.HTTPTransport(local_address=CLIENT_A)
            with httpx.Client(
                base_url=stack.ingress_url, transport=transport, timeout=10
            ) as session:
                while not stop.is_set():
                    try:
                        response = session.get("/healthz", headers={"Host": host})
                    except (httpx.ReadError, httpx.RemoteProtocolError):
                        # nginx's reload closed an idle keep-alive connection as it was
                        # reused (see Stack.rollout); a GET may be retried, and is.
                        seen["reset, retried"] += 1
                        response = session.get("/healthz", headers={"Host": host})
                    seen[response.status_code] += 1

        loader = threading.Thread(target=load)
        loader.start()
        started = time.monotonic()
        try:
            stack.rollout("local", f"config.allowedOrigins={{{NEW_ORIGIN}}}")
        finally:
            stop.set()
            loader.join()
        took = time.monotonic() - started

        new_pods = stack.pods("local")
        print(
            f"\nrollout of {len(new_pods)} pods in {took:.1f} s: {[p.ip for p in old_pods]} -> "
            f"{[p.ip for p in new_pods]}; {sum(seen.values())} requests meanwhile: {dict(seen)}"
        )
        assert seen[200] > 0 and set(seen) <= {200, "reset, retried"}
        assert {pod.ip for pod in new_pods}.isdisjoint({pod.ip for pod in old_pods})
        assert not group_members(old_groups), "an old pod's process is still running"
        # New pods are new containers; the old ones are gone from the engine.
        assert set(stack.containers()).isdisjoint(old_containers)
        assert len(stack.containers(running_only=True)) == len(old_containers)
        assert stack.pods("local", "redis")[0] is redis_before  # its template did not change
        assert allowed(NEW_ORIGIN) == NEW_ORIGIN
        assert allowed(old_origin) is None
        # The new pods got the new ConfigMap, mounted in the kubelet's layout.
        volume = new_pods[0].root / "volumes" / "config"
        data = volume / "..data"
        assert data.is_symlink() and os.readlink(data).startswith("..20")
        assert os.readlink(volume / "APP_ALLOWED_ORIGINS") == "..data/APP_ALLOWED_ORIGINS"
        assert (volume / "APP_ALLOWED_ORIGINS").read_text() == NEW_ORIGIN
    finally:
        stack.down()
