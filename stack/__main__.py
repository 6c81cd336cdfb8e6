"""``python -m stack up``: run environments of the chart on loopback until Ctrl-C.

    python -m stack up                              # local and local-b, side by side
    python -m stack up --env local                  # namespace A only
    python -m stack up --set config.rateLimit.search=5/minute
    python -m stack up --runtime container          # API replicas as containers of IMAGE

``--set`` is helm's and applies to every environment given. SIGINT, SIGTERM and SIGHUP
stop every process the stack started and remove its temporary directory.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import sys
import time
from types import FrameType

from .harness import ENVIRONMENTS, RUNTIMES, Stack
from .loopback import LoopbackError
from .processes import StartError
from .render import RenderError


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def examples(stack: Stack) -> list[str]:
    """Ready-to-paste curl commands: an allowed origin, a refused one, and a 429."""
    assert stack.nginx is not None
    port = stack.nginx.port
    lines: list[str] = []
    names = list(stack.envs)
    for i, name in enumerate(names):
        host = stack.host(name)
        config = stack.config(name)
        allowed = config["APP_ALLOWED_ORIGINS"].split(",")[0]
        other = stack.config(names[(i + 1) % len(names)])["APP_ALLOWED_ORIGINS"].split(",")[0]
        refused = other if other != allowed else "https://evil.example"
        limit = int(re.match(r"\d+", config["APP_RATE_LIMIT_SEARCH"]).group())  # type: ignore[union-attr]
        resolve = f"--resolve {host}:{port}:{stack.ingress_ip}"
        url = shlex.quote(f"http://{host}:{port}/search?q=lamp")
        lines += [
            f"# {name}: allowed origin (Access-Control-Allow-Origin comes back)",
            f"curl -si {resolve} {url} -H {shlex.quote('Origin: ' + allowed)}",
            f"# {name}: refused origin (no Access-Control-Allow-Origin)",
            f"curl -si {resolve} {url} -H {shlex.quote('Origin: ' + refused)}",
            f"# {name}: {limit} per window on /search, then 429 with Retry-After",
            f"for i in $(seq {limit + 1}); do curl -s -o /dev/null -w '%{{http_code}} ' "
            f"{resolve} {url}; done; echo",
            f"# {name}: who the service thinks you are (a forged X-Forwarded-For changes nothing)",
            f"curl -s {resolve} http://{host}:{port}/whoami -H 'X-Forwarded-For: 203.0.113.9'; echo",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up",), help="up: start, print, wait for Ctrl-C")
    parser.add_argument(
        "--env",
        action="append",
        choices=sorted(ENVIRONMENTS),
        help="environment to run (repeatable; default: all of them)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="helm --set, every env"
    )
    parser.add_argument("--port", type=int, help="ingress port (default: a free one)")
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=os.environ.get("STACK_RUNTIME") or "process",
        help="API replicas as local processes, or as containers of --image "
        "(default: $STACK_RUNTIME, else process)",
    )
    parser.add_argument(
        "--image",
        default=os.environ.get("IMAGE") or "gatehouse-api:dev",
        help="the image of the container runtime, built by scripts/build-image when missing "
        "(default: $IMAGE, else gatehouse-api:dev)",
    )
    args = parser.parse_args(argv)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    specs = [ENVIRONMENTS[name].with_sets(*args.set) for name in args.env or sorted(ENVIRONMENTS)]
    stack = Stack(specs, ingress_port=args.port, runtime=args.runtime, image=args.image)
    try:
        started = time.monotonic()
        stack.up()
        print(
            f"stack up in {time.monotonic() - started:.1f} s (rendered by scripts/helm template; "
            f"runtime {stack.runtime}{', image ' + stack.image if stack.runtime == 'container' else ''})"
        )
        print("\n".join(stack.summary()))
        print("\nTry:\n" + "\n".join(examples(stack)))
        print("\nCtrl-C stops everything.", flush=True)
        reported: set[str] = set()
        while True:
            time.sleep(1)
            for env in stack.envs.values():
                for pods in env.pods.values():
                    for pod in pods:
                        for process in pod.processes:
                            if not process.running() and process.name not in reported:
                                reported.add(process.name)
                                print(f"{process.name} exited:\n{process.log_tail()}", flush=True)
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
        return 0
    except (StartError, RenderError, LoopbackError) as error:
        print(f"stack: {error}", file=sys.stderr)
        return 1
    finally:
        stack.down()


if __name__ == "__main__":
    sys.exit(main())
