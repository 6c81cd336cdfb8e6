"""nginx as the ingress controller: its config from the rendered Ingress/HTTPRoute objects.

The proxy behaviour follows the controller settings the project deploys with
(``controller.config`` in k8s/ingress/ingress-nginx-values.yaml, with the kind overlay on
top), read by ``ControllerConfig.load``, and the way ingress-nginx's template turns
those settings into nginx directives:

- ``use-forwarded-headers: "false"``: the TCP peer is the client. ``X-Real-IP`` is the
  peer, and ``X-Forwarded-Proto``/``-Host``/``-Port`` are set from this hop, overwriting
  whatever the client sent.
- ``compute-full-forwarded-for: "true"``: the peer is appended to the client's
  ``X-Forwarded-For`` (otherwise it replaces it). The API walks the list from the right
  and stops at the first untrusted hop, so a forged left part changes nothing.
- ``proxy-next-upstream`` (ingress-nginx default ``error timeout``, 3 tries): a request
  that fails to reach one endpoint is retried on the next.
- Connections to the pods leave from the controller's own address (``proxy_bind``),
  which is inside the CIDR the API trusts, as a controller pod's address is.
- Round robin over the endpoints, shared by the workers (``zone``); no passive
  health marking (``max_fails=0``): ingress-nginx balances in Lua and forgets nothing
  until the endpoints change.

TLS and ``ssl-redirect`` are not modelled: the local Ingress has no TLS section.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from .processes import Process, StartError, free_port, http_ok
from .render import ROOT

NGINX = "/usr/sbin/nginx"
# The base settings, then the local (kind) overlay, as the cluster installs them.
CONTROLLER_VALUES = (
    ROOT / "k8s" / "ingress" / "ingress-nginx-values.yaml",
    ROOT / "k8s" / "ingress" / "ingress-nginx-kind-values.yaml",
)
# ingress-nginx's defaults for the settings read below.
CONTROLLER_DEFAULTS = {
    "use-forwarded-headers": "false",
    "compute-full-forwarded-for": "false",
    "forwarded-for-header": "X-Forwarded-For",
    "proxy-real-ip-cidr": "0.0.0.0/0",
    "server-tokens": "false",
    "proxy-connect-timeout": "5",
    "proxy-read-timeout": "60",
    "proxy-send-timeout": "60",
    "proxy-next-upstream": "error timeout",
    "proxy-next-upstream-tries": "3",
    "proxy-next-upstream-timeout": "0",
    "upstream-keepalive-connections": "320",
}


def _flag(value: str) -> bool:
    return value.strip().lower() == "true"


@dataclass(frozen=True)
class ControllerConfig:
    """The ingress-nginx ConfigMap settings this stand-in honours."""

    settings: Mapping[str, str]

    @classmethod
    def load(cls, files: Sequence[Path] = CONTROLLER_VALUES) -> ControllerConfig:
        settings = dict(CONTROLLER_DEFAULTS)
        for path in files:
            if path.exists():
                values = yaml.safe_load(path.read_text()) or {}
                config = (values.get("controller") or {}).get("config") or {}
                settings.update({key: str(value) for key, value in config.items()})
        return cls(settings)

    def __getitem__(self, key: str) -> str:
        return self.settings[key]

    @property
    def use_forwarded_headers(self) -> bool:
        return _flag(self["use-forwarded-headers"])

    @property
    def compute_full_forwarded_for(self) -> bool:
        return _flag(self["compute-full-forwarded-for"])


@dataclass(frozen=True)
class Upstream:
    """One Service port's endpoints (the ready pods behind it), local addresses."""

    name: str
    endpoints: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Location:
    path: str
    path_type: str  # Prefix, Exact, ImplementationSpecific
    upstream: Upstream
    source: str


def _location_blocks(location: Location) -> list[str]:
    """nginx locations for one Ingress path, matched the way Kubernetes defines them."""
    path = location.path
    if location.path_type == "Exact":
        return [f"= {path}"]
    if location.path_type == "Prefix" and path != "/":
        # Prefix matches whole path elements: /api matches /api and /api/x, not /apix.
        stem = path.rstrip("/")
        return [f"= {stem}", f"{stem}/"]
    return [path]


def _proxy_block(config: ControllerConfig, bind: str, upstream: Upstream) -> list[str]:
    if not upstream.endpoints:
        # ingress-nginx answers 503 when a Service has no ready endpoint.
        return ["return 503;"]
    xff = "$full_x_forwarded_for" if config.compute_full_forwarded_for else "$remote_addr"
    header = config["forwarded-for-header"]
    return [
        f"proxy_pass http://{upstream.name};",
        f"proxy_bind {bind};",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        # The client's Host, as the ingress passes it: the API's trusted-host check sees it.
        "proxy_set_header Host $best_http_host;",
        "proxy_set_header X-Request-ID $req_id;",
        "proxy_set_header X-Real-IP $remote_addr;",
        f"proxy_set_header {header} {xff};",
        "proxy_set_header X-Forwarded-Host $best_http_host;",
        "proxy_set_header X-Forwarded-Port $pass_port;",
        "proxy_set_header X-Forwarded-Proto $pass_access_scheme;",
        "proxy_set_header X-Forwarded-Scheme $pass_access_scheme;",
        "proxy_set_header X-Scheme $pass_access_scheme;",
        "proxy_set_header X-Original-URI $request_uri;",
        'proxy_set_header Proxy "";',  # httpoxy
        f"proxy_connect_timeout {config['proxy-connect-timeout']}s;",
        f"proxy_send_timeout {config['proxy-send-timeout']}s;",
        f"proxy_read_timeout {config['proxy-read-timeout']}s;",
        f"proxy_next_upstream {config['proxy-next-upstream']};",
        f"proxy_next_upstream_tries {config['proxy-next-upstream-tries']};",
        f"proxy_next_upstream_timeout {config['proxy-next-upstream-timeout']};",
        "proxy_redirect off;",
    ]


def render_conf(
    *,
    prefix: Path,
    listen: tuple[str, int],
    status_port: int,
    servers: Mapping[str | None, Sequence[Location]],
    config: ControllerConfig,
    generation: int,
) -> str:
    """The whole nginx.conf: one server per host (None = any host), like the controller."""
    host, port = listen
    upstreams = {
        location.upstream.name: location.upstream
        for locations in servers.values()
        for location in locations
    }
    lines = [
        f"# Generated by stack/nginx.py (generation {generation}) from the rendered routes;",
        "# proxy settings from k8s/ingress/ingress-nginx*-values.yaml. Do not edit.",
        "worker_processes 2;",
        f"pid {prefix}/nginx.pid;",
        f"error_log {prefix}/logs/error.log notice;",
        "events { worker_connections 1024; }",
        "http {",
        f"  server_tokens {'on' if _flag(config['server-tokens']) else 'off'};",
        "  log_format upstreaminfo '$remote_addr [$time_local] \"$request\" $status '",
        "                          'host=$host upstream=$upstream_addr upstream_status=$upstream_status';",
        f"  access_log {prefix}/logs/access.log upstreaminfo;",
        *(
            f"  {kind}_temp_path {prefix / 'tmp' / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ),
        "  map $http_host $best_http_host { default $http_host; '' $host; }",
        "  map $http_upgrade $connection_upgrade { default upgrade; '' close; }",
        # The client's X-Request-ID is kept, else nginx makes one (ingress-nginx's $req_id).
        "  map $http_x_request_id $req_id { default $http_x_request_id; '' $request_id; }",
    ]
    if config.use_forwarded_headers:
        # Trust X-Forwarded-* only from the configured proxies in front of the controller.
        lines += [
            f"  set_real_ip_from {cidr.strip()};"
            for cidr in config["proxy-real-ip-cidr"].split(",")
        ]
        lines += [
            f"  real_ip_header {config['forwarded-for-header']};",
            "  real_ip_recursive on;",
            "  map $http_x_forwarded_proto $pass_access_scheme { default $http_x_forwarded_proto; '' $scheme; }",
            "  map $http_x_forwarded_port $pass_port { default $http_x_forwarded_port; '' $server_port; }",
            "  map $http_x_forwarded_for $full_x_forwarded_for {",
            '    default "$http_x_forwarded_for, $realip_remote_addr"; \'\' "$realip_remote_addr"; }',
        ]
    else:
        # Anything the client sent in X-Forwarded-Proto/-Port is overwritten from this hop.
        lines += [
            "  map '' $pass_access_scheme { default $scheme; }",
            "  map '' $pass_port { default $server_port; }",
            "  map $http_x_forwarded_for $full_x_forwarded_for {",
            "    default $proxy_add_x_forwarded_for; '' $remote_addr; }",
        ]
    for upstream in upstreams.values():
        if not upstream.endpoints:
            continue
        lines += [f"  upstream {upstream.name} {{", f"    zone {upstream.name} 64k;"]
        lines += [f"    server {ip}:{p} max_fails=0;" for ip, p in upstream.endpoints]
        lines += [f"    keepalive {config['upstream-keepalive-connections']};", "  }"]

    # The default server takes unknown hosts: the controller's default backend (a 404),
    # or the routes that name no host (an HTTPRoute without hostnames).
    lines += [
        "  server {",
        f"    listen {host}:{port} default_server;",
        "    server_name _;",
        *(_locations(host, servers[None], config) if None in servers else []),
        *([] if None in servers else ["    location / { return 404; }"]),
        "  }",
    ]
    for server_name, locations in servers.items():
        if server_name is not None:
            lines += _server_block(host, port, server_name, locations, config)
    # The harness's own view: which config generation the workers run (like the
    # controller's status port, separate from the traffic listener).
    lines += [
        "  server {",
        f"    listen {host}:{status_port};",
        f'    location = /generation {{ access_log off; return 200 "{generation}\\n"; }}',
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _locations(bind: str, locations: Sequence[Location], config: ControllerConfig) -> list[str]:
    lines = []
    for location in locations:
        proxy = _proxy_block(config, bind, location.upstream)
        for match in _location_blocks(location):
            lines += [f"    location {match} {{  # {location.source}"]
            lines += [f"      {directive}" for directive in proxy]
            lines += ["    }"]
    return lines


def _server_block(
    bind: str, port: int, server_name: str, locations: Sequence[Location], config: ControllerConfig
) -> list[str]:
    return [
        "  server {",
        f"    listen {bind}:{port};",
        f"    server_name {server_name};",
        *_locations(bind, locations, config),
        "  }",
    ]


class Nginx:
    """``nginx`` in the foreground with its own prefix, conf, pid file and logs."""

    def __init__(self, prefix: Path, host: str, port: int | None = None) -> None:
        binary = shutil.which("nginx") or (NGINX if Path(NGINX).exists() else None)
        if binary is None:
            raise StartError("nginx is not installed (scripts/ensure-system-deps nginx-light)")
        self.binary = binary
        self.prefix = prefix
        self.host = host
        self.port = port or free_port(host)
        self.status_port = free_port(host)
        self.generation = 0
        self.conf_path = prefix / "nginx.conf"
        self.process = Process(
            "nginx",
            [*self._argv(), "-g", "daemon off; master_process on;"],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            cwd=prefix,
            log_path=prefix / "logs" / "stderr.log",
        )

    def _argv(self) -> list[str]:
        """nginx with its own prefix, conf and error log (never /var/log/nginx)."""
        conf, error_log = str(self.conf_path), str(self.prefix / "logs" / "error.log")
        return [self.binary, "-p", str(self.prefix), "-c", conf, "-e", error_log]

    def _write(
        self, servers: Mapping[str | None, Sequence[Location]], config: ControllerConfig
    ) -> None:
        self.generation += 1
        for sub in ("logs", "tmp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(
            render_conf(
                prefix=self.prefix,
                listen=(self.host, self.port),
                status_port=self.status_port,
                servers=servers,
                config=config,
                generation=self.generation,
            )
        )
        check = subprocess.run(  # noqa: S603 - nginx -t on the file just written
            [*self._argv(), "-t", "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise StartError(f"nginx rejected {self.conf_path}: {check.stderr.strip()}")

    def _live_generation(self) -> bool:
        try:
            import urllib.request

            url = f"http://{self.host}:{self.status_port}/generation"
            with urllib.request.urlopen(url, timeout=1) as response:
                return int(response.read().decode().strip()) == self.generation
        except (OSError, ValueError):
            return False

    def start(
        self, servers: Mapping[str | None, Sequence[Location]], config: ControllerConfig
    ) -> None:
        self._write(servers, config)
        self.process.start()
        self.process.wait_until(self._live_generation, timeout=10, what="nginx listening")

    def reload(
        self, servers: Mapping[str | None, Sequence[Location]], config: ControllerConfig
    ) -> None:
        """New config, graceful: old workers finish their requests, new ones take over."""
        self._write(servers, config)
        self.process.send(signal.SIGHUP)  # to the master only
        self.process.wait_until(
            self._live_generation, timeout=10, what=f"nginx generation {self.generation}"
        )

    def ready(self) -> bool:
        return self.process.running() and http_ok(self.host, self.status_port, "/generation")

    def stop(self) -> None:
        # SIGQUIT is nginx's graceful stop; Process.stop sends SIGTERM (fast stop), fine here.
        self.process.stop(grace=5)
