"""python -m cluster {up,down,status,load,build}: the local test cluster (make cluster)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from cluster import addons, build, daemons, images, node
from cluster.layout import NODE_NAME, Layout


def usage_lines(layout: Layout) -> str:
    return (
        f"cluster: up; node {NODE_NAME}, Kubernetes {layout.versions['kubernetes']}. Use it with:\n"
        f"  export KUBECONFIG={layout.kubeconfig}\n"
        f"  export PATH={layout.bin}:$PATH   # kubectl {layout.versions['kubernetes']}, built here\n"
        "  kubectl get nodes\n"
        "  scripts/helm install gatehouse charts/gatehouse -n gatehouse-dev -f k8s/values-dev.yaml -f k8s/values-cluster.yaml\n"
        f"  ingress: Traefik at {addons.traefik_host_url()} (host), "
        f"http://traefik.{addons.TRAEFIK_NAMESPACE}.svc (pods)\n"
        f"  logs: {layout.logs}/   stop: make cluster-stop"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build what is missing, start the cluster, wait until it is usable")
    sub.add_parser("down", help="stop what `up` started and remove its state (logs stay)")
    sub.add_parser("status", help="which daemons run; exit 1 when the cluster is not up")
    sub.add_parser("build", help="only build (or find cached) the binaries")
    logs = sub.add_parser("logs", help="the last lines of each daemon's log, stopped ones first")
    logs.add_argument("--lines", type=int, default=20)
    load = sub.add_parser("load", help="import Docker images into the node (no registry)")
    load.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    layout = Layout.default()

    if args.command not in ("status", "logs") and os.geteuid() != 0:
        print("cluster: needs root (network, mounts, cgroups)", file=sys.stderr)
        return 1
    try:
        if args.command == "build":
            build.link_binaries(layout, build.build_all(layout))
        elif args.command == "up":
            was_running = all(node.running(layout).values())
            started = time.monotonic()
            node.up(layout)
            how = "reused the running cluster" if was_running else "started"
            print(f"cluster: {how} in {time.monotonic() - started:.0f} s", file=sys.stderr)
            print(usage_lines(layout))
        elif args.command == "down":
            stopped = node.down(layout)
            print(
                f"cluster: stopped {', '.join(stopped) or 'nothing (none was running)'}; state removed"
            )
        elif args.command == "status":
            states = node.running(layout)
            for name, pid in states.items():
                print(f"{name:24} {'pid ' + str(pid) if pid else 'not running'}")
            return 0 if all(states.values()) else 1
        elif args.command == "logs":
            states = node.running(layout)
            for name in sorted(states, key=lambda n: states[n] is not None):
                state = "running" if states[name] else "NOT RUNNING"
                log = layout.logs / f"{name}.log"
                print(f"== {name} ({state}): last {args.lines} lines of {log}")
                print(daemons.log_tail(log, args.lines))
        elif args.command == "load":
            for image in args.images:
                images.import_docker_image(layout, image)
                print(f"cluster: loaded {image} into the node")
    except (build.BuildError, daemons.DaemonError, RuntimeError) as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
