"""SIGTERM under load: what is in flight finishes, and the container exits in time.

Kubernetes runs the preStop sleep, then sends SIGTERM, and kills the container when
terminationGracePeriodSeconds have passed since the start. The drain after SIGTERM
must therefore fit in what the preStop sleep leaves of the grace period.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx

from .container import Container

LOAD_THREADS = 4
LOAD_MAX_REQUESTS = 3000  # per thread: the loop is bounded in count as well as time
LOAD_MAX_SECONDS = 20.0
SLOW_REQUESTS = 3


def _load(url: str, results: dict[str, int], stop: threading.Event) -> None:
    """Keep-alive GETs until the server goes away (or the bounds are reached)."""
    deadline = time.monotonic() + LOAD_MAX_SECONDS
    with httpx.Client(timeout=5) as client:
        for _ in range(LOAD_MAX_REQUESTS):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                status = client.get(url).status_code
            except httpx.TransportError:
                results["transport_errors"] = results.get("transport_errors", 0) + 1
                return  # the listener closed: the end of this client's load
            results[str(status)] = results.get(str(status), 0) + 1


def _slow_post(host: str, port: int, host_header: str, sent_half: threading.Event,
               finish: threading.Event, replies: list[bytes]) -> None:  # fmt: skip
    """A request in flight at SIGTERM: headers and half the body before, the rest after."""
    body = b'{"name": "drain", "quantity": 1}'
    head = (
        f"POST /items HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head + body[:10])
        sent_half.set()
        finish.wait(10)
        sock.sendall(body[10:])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        replies.append(reply)


def test_sigterm_under_load_drains_and_exits_within_grace(start_container, pod) -> None:  # type: ignore[no-untyped-def]
    served: Container = start_container(f"{pod.run_as_user}:{pod.run_as_group}")
    host_header = pod.env.get("APP_TRUSTED_HOSTS", "localhost").split(",")[0]

    stop = threading.Event()
    load_results: list[dict[str, int]] = [{} for _ in range(LOAD_THREADS)]
    loaders = [
        # The kubelet's probe, on the management port: the same server, drained alike.
        threading.Thread(target=_load, args=(f"{served.management_url}/healthz", results, stop))
        for results in load_results
    ]
    finish = threading.Event()
    replies: list[bytes] = []
    halves = [threading.Event() for _ in range(SLOW_REQUESTS)]
    slow = [
        threading.Thread(
            target=_slow_post,
            args=(served.host, served.port, host_header, half, finish, replies),
        )
        for half in halves
    ]
    try:
        for thread in loaders + slow:
            thread.start()
        assert all(half.wait(10) for half in halves)
        time.sleep(0.5)  # the load is running

        served.signal("TERM")
        signalled = time.monotonic()
        time.sleep(0.5)  # the server is draining: let the slow requests finish now
        finish.set()
        drain_seconds = served.wait(timeout=pod.termination_grace_seconds)
    finally:
        finish.set()
        stop.set()
        for thread in loaders + slow:
            thread.join(30)

    budget = pod.termination_grace_seconds - pod.pre_stop_sleep_seconds
    assert drain_seconds <= budget, (
        f"drained in {drain_seconds:.1f} s, after a {pod.pre_stop_sleep_seconds} s preStop "
        f"sleep: over the {pod.termination_grace_seconds} s grace period"
    )
    assert served.exit_code() == 0, served.logs()

    # Every in-flight request got its whole answer.
    assert len(replies) == SLOW_REQUESTS
    for reply in replies:
        assert reply.startswith(b"HTTP/1.1 201"), reply[:200]
    # The load saw only successes until the listener went away; no 5xx on the way down.
    totals: dict[str, int] = {}
    for results in load_results:
        for key, count in results.items():
            totals[key] = totals.get(key, 0) + count
    assert totals.get("200", 0) > 0
    assert set(totals) <= {"200", "transport_errors"}, totals
    print(
        f"SIGTERM -> exit in {time.monotonic() - signalled:.2f} s; load: {totals}; "
        f"{len(replies)} in-flight POSTs answered 201"
    )
