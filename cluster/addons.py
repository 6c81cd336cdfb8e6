"""What the cluster runs on itself: CoreDNS (as every cluster has it), kube-router's RBAC,
and Traefik as the ingress controller, with the Gateway API CRDs it serves.

CoreDNS is the Deployment `coredns`, labelled `k8s-app: kube-dns`, behind the `kube-dns`
Service in kube-system, as kubeadm lays it out, so NetworkPolicies written for real
clusters (DNS egress to `k8s-app=kube-dns`) hold here unchanged. Its Corefile serves only
the cluster's zone: nothing is forwarded, so no query leaves the machine.

Traefik is the Deployment `traefik` behind the Service `traefik` in the namespace `traefik`
(Pod Security `restricted`), serving the IngressClass `traefik`, the GatewayClass `traefik`
and one Gateway of that class, `traefik/gatehouse` (listener `http`, the plain-HTTP entry
point), for HTTPRoutes of any namespace. Pods reach it at http://traefik.traefik.svc, the
host at the node's NodePort.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cluster.layout import CLUSTER_DOMAIN, DNS_SERVICE_IP, NODE_IP

# Port 53 in the pod too, as in real clusters: NetworkPolicies match the pod's port (after
# the Service's DNAT), and charts allow DNS egress on 53. A non-root process may bind it
# through the namespaced, "safe" sysctl below.
COREDNS_PORT = 53
# What Pod Security "restricted" asks of each add-on container beyond its pod's context.
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
}

COREFILE = f"""\
.:{COREDNS_PORT} {{
    errors
    health :8080 {{
        lameduck 5s
    }}
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
    loop
    reload
    loadbalance
}}
"""


def coredns(image: str) -> list[dict[str, Any]]:
    labels = {"k8s-app": "kube-dns"}
    meta = {"name": "coredns", "namespace": "kube-system"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {"Corefile": COREFILE},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {**meta, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "priorityClassName": "system-cluster-critical",
                        "dnsPolicy": "Default",
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65532,
                            "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                            "sysctls": [
                                {"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}
                            ],
                        },
                        "containers": [
                            {
                                "name": "coredns",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {
                                        "name": "dns",
                                        "containerPort": COREDNS_PORT,
                                        "protocol": "UDP",
                                    },
                                    {
                                        "name": "dns-tcp",
                                        "containerPort": COREDNS_PORT,
                                        "protocol": "TCP",
                                    },
                                ],
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    "periodSeconds": 10,
                                },
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 2,
                                },
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "32Mi"},
                                    "limits": {"memory": "128Mi"},
                                },
                                "securityContext": RESTRICTED_CONTAINER,
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "selector": labels,
                "clusterIP": DNS_SERVICE_IP,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": COREDNS_PORT, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": COREDNS_PORT, "protocol": "TCP"},
                ],
            },
        },
    ]


def kube_router_rbac() -> list[dict[str, Any]]:
    """What kube-router's NetworkPolicy controller reads (and the node it annotates)."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "gatehouse:kube-router"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies"],
                    "verbs": ["get", "list", "watch"],
                },
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch", "update"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "gatehouse:kube-router"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "gatehouse:kube-router",
            },
            "subjects": [
                {
                    "kind": "User",
                    "name": "gatehouse:kube-router",
                    "apiGroup": "rbac.authorization.k8s.io",
                }
            ],
        },
    ]


# -- Traefik ------------------------------------------------------------------------------------

TRAEFIK_NAMESPACE = "traefik"
TRAEFIK_CLASS = "traefik"
# Unprivileged ports in the pod (no capability to bind 80/443); the Service maps 80 and 443.
TRAEFIK_WEB_PORT = 8000
TRAEFIK_WEBSECURE_PORT = 8443
TRAEFIK_PING_PORT = 8080  # the internal `traefik` entry point: /ping only, not in the Service
# The host reaches Traefik at http://NODE_IP:TRAEFIK_NODE_PORT (kube-proxy serves NodePorts on
# the node's own address only: configs.kube_proxy_config nodePortAddresses).
TRAEFIK_NODE_PORT = 30080
TRAEFIK_NODE_PORT_TLS = 30443
TRAEFIK_UID = 65532
# The cluster's one Gateway: HTTPRoutes attach to it with parentRefs
# [{name: gatehouse, namespace: traefik, sectionName: http}] (k8s/values-cluster.yaml).
GATEWAY_NAME = "gatehouse"
GATEWAY_LISTENER = "http"

# Traefik's static configuration. Each entry point leaves forwardedHeaders at its default (no
# trustedIPs, not insecure): X-Forwarded-* headers a client sends are removed, and the peer's
# address is what Traefik sends on in X-Forwarded-For. Header names that alias another one
# (X_Forwarded_For for X-Forwarded-For) are dropped, as Traefik's docs advise for backends
# that normalise names.
TRAEFIK_CONFIG: dict[str, Any] = {
    "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
    "entryPoints": {
        "web": {
            "address": f":{TRAEFIK_WEB_PORT}",
            "http": {"aliasHeadersStrategy": "delete"},
        },
        "websecure": {
            "address": f":{TRAEFIK_WEBSECURE_PORT}",
            # TLS with Traefik's own default certificate (no TLS Secret in this cluster).
            "http": {"aliasHeadersStrategy": "delete", "tls": {}},
        },
        "traefik": {
            "address": f":{TRAEFIK_PING_PORT}",
            "http": {"aliasHeadersStrategy": "delete"},
        },
    },
    "ping": {"entryPoint": "traefik"},
    "providers": {
        "kubernetesIngress": {"ingressClass": TRAEFIK_CLASS},
        "kubernetesGateway": {},
    },
    "log": {"level": "INFO", "noColor": True},
}


# What Traefik's kubernetesGateway provider reads, and whose status it writes (its docs'
# kubernetes-gateway-rbac.yml).
GATEWAY_RESOURCES = (
    "gatewayclasses", "gateways", "httproutes", "grpcroutes", "tcproutes", "tlsroutes",
    "referencegrants", "backendtlspolicies",
)  # fmt: skip


def gateway_api_crds(module: Path) -> list[dict[str, Any]]:
    """The Standard channel of the sigs.k8s.io/gateway-api module: config/crd/standard, in the
    order of its kustomization (CRDs, then the ValidatingAdmissionPolicy guarding upgrades)."""
    kustomization = yaml.safe_load((module / "config" / "crd" / "kustomization.yaml").read_text())
    documents: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        if not resource.startswith("standard/"):
            continue
        text = (module / "config" / "crd" / resource).read_text()
        documents.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return documents


# Traefik's pods; k8s/values-cluster.yaml's NetworkPolicy selects them by both labels.
TRAEFIK_LABELS = {"app.kubernetes.io/name": "traefik", "app.kubernetes.io/component": "controller"}


def traefik(image: str) -> list[dict[str, Any]]:
    labels = TRAEFIK_LABELS
    meta = {"name": "traefik", "namespace": TRAEFIK_NAMESPACE, "labels": labels}
    read = ["get", "list", "watch"]
    restricted = {
        f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            # kubernetes.io/metadata.name: traefik is set by the API server.
            "metadata": {"name": TRAEFIK_NAMESPACE, "labels": restricted},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "gatehouse:traefik", "labels": labels},
            # Traefik's kubernetesIngress and kubernetesGateway providers: what they watch
            # (their informers start for all of it, Secrets and Nodes included) and the status
            # they write.
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "secrets", "configmaps", "nodes", "namespaces"],
                    "verbs": read,
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["ingresses", "ingressclasses"],
                    "verbs": read,
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["ingresses/status"],
                    "verbs": ["update"],
                },
                {
                    "apiGroups": ["gateway.networking.k8s.io"],
                    "resources": list(GATEWAY_RESOURCES),
                    "verbs": read,
                },
                {
                    "apiGroups": ["gateway.networking.k8s.io"],
                    "resources": [f"{name}/status" for name in GATEWAY_RESOURCES],
                    "verbs": ["update"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "gatehouse:traefik", "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "gatehouse:traefik",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "traefik", "namespace": TRAEFIK_NAMESPACE}
            ],
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {
                "name": TRAEFIK_CLASS,
                "labels": labels,
                # The cluster's only controller: an Ingress with no class is Traefik's too.
                "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
            },
            "spec": {"controller": "traefik.io/ingress-controller"},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": TRAEFIK_CLASS, "labels": labels},
            "spec": {"controllerName": "traefik.io/gateway-controller"},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {"traefik.yaml": yaml.safe_dump(TRAEFIK_CONFIG, sort_keys=False)},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY_NAME, "namespace": TRAEFIK_NAMESPACE, "labels": labels},
            "spec": {
                "gatewayClassName": TRAEFIK_CLASS,
                "listeners": [
                    {
                        "name": GATEWAY_LISTENER,
                        # Traefik binds a listener to the entry point whose own address has
                        # this port (the container's 8000, which the Service's port 80 and the
                        # NodePort lead to), not to a Service port: 80 would be refused as
                        # PortUnavailable.
                        "port": TRAEFIK_WEB_PORT,
                        "protocol": "HTTP",
                        # A test cluster's one shared entrance, like the IngressClass any
                        # namespace may use: the suite's releases live in namespaces it
                        # names at random.
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    }
                ],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "traefik",
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": TRAEFIK_UID,
                            "runAsGroup": TRAEFIK_UID,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "terminationGracePeriodSeconds": 30,
                        "containers": [
                            {
                                "name": "traefik",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "args": ["--configFile=/etc/traefik/traefik.yaml"],
                                "ports": [
                                    {"name": "web", "containerPort": TRAEFIK_WEB_PORT},
                                    {"name": "websecure", "containerPort": TRAEFIK_WEBSECURE_PORT},
                                    {"name": "ping", "containerPort": TRAEFIK_PING_PORT},
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ping", "port": "ping"},
                                    "periodSeconds": 2,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/ping", "port": "ping"},
                                    "periodSeconds": 10,
                                },
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "64Mi"},
                                    "limits": {"memory": "256Mi"},
                                },
                                "securityContext": RESTRICTED_CONTAINER,
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/traefik"}],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "traefik"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                # A NodePort on the node's address (NODE_IP) for the host; pods use port 80.
                "type": "NodePort",
                "selector": labels,
                "ports": [
                    {"name": "web", "port": 80, "targetPort": "web", "nodePort": TRAEFIK_NODE_PORT},
                    {
                        "name": "websecure",
                        "port": 443,
                        "targetPort": "websecure",
                        "nodePort": TRAEFIK_NODE_PORT_TLS,
                    },
                ],
            },
        },
    ]


def traefik_host_url() -> str:
    """Traefik as the host reaches it (the NodePort on the node's own address)."""
    return f"http://{NODE_IP}:{TRAEFIK_NODE_PORT}"
