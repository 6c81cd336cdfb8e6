"""The cluster's certificates, made with openssl: one CA, a serving cert, client certs.

Identities follow Kubernetes' conventions, so the default RBAC and the Node authorizer
treat each component as a real cluster would (system:kube-controller-manager,
system:node:<node> in system:nodes, and so on). ECDSA P-256 keys: quick to make, and every
component accepts them.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from cluster.layout import (
    CLUSTER_DOMAIN,
    KUBERNETES_SERVICE_IP,
    NODE_IP,
    NODE_NAME,
    Layout,
)

DAYS = "3650"


@dataclass(frozen=True)
class Identity:
    file: str  # pki/<file>.crt and .key
    common_name: str
    organization: str | None = None


CLIENTS = (
    Identity("admin", "gatehouse-admin", "system:masters"),
    Identity("controller-manager", "system:kube-controller-manager"),
    Identity("scheduler", "system:kube-scheduler"),
    Identity("kubelet", f"system:node:{NODE_NAME}", "system:nodes"),
    Identity("kube-proxy", "system:kube-proxy"),
    Identity("kube-router", "gatehouse:kube-router"),
    # The API server's own client identity towards kubelets (logs, exec, port-forward).
    Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"),
)

APISERVER_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
    "localhost",
)
APISERVER_IPS = (NODE_IP, KUBERNETES_SERVICE_IP, "127.0.0.1")


def openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def new_key(pki: Path, name: str) -> None:
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=pki)
    (pki / f"{name}.key").chmod(0o600)


def signed_cert(pki: Path, name: str, subject: str, extensions: str) -> None:
    new_key(pki, name)
    openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
    (pki / f"{name}.ext").write_text(extensions)
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", DAYS, "-sha256", "-extfile", f"{name}.ext",
        "-out", f"{name}.crt", cwd=pki,
    )  # fmt: skip
    (pki / f"{name}.csr").unlink()
    (pki / f"{name}.ext").unlink()


def subject(identity: Identity) -> str:
    parts = [f"/CN={identity.common_name}"]
    if identity.organization:
        parts.insert(0, f"/O={identity.organization}")
    return "".join(parts)


def make_pki(layout: Layout) -> None:
    """Everything under .cluster/pki; kept as is when the CA is already there."""
    pki = layout.pki
    if (pki / "ca.crt").exists() and (pki / ".complete").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    new_key(pki, "ca")
    openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=gatehouse-cluster-ca",
        "-days", DAYS, "-sha256", "-out", "ca.crt",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=pki,
    )  # fmt: skip
    names = ",".join(
        [f"DNS:{name}" for name in APISERVER_NAMES] + [f"IP:{ip}" for ip in APISERVER_IPS]
    )
    signed_cert(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={names}\n",
    )
    for identity in CLIENTS:
        signed_cert(
            pki,
            identity.file,
            subject(identity),
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n",
        )
    # Service account tokens: the API server signs them, everyone checks them.
    new_key(pki, "service-account")
    openssl("ec", "-in", "service-account.key", "-pubout", "-out", "service-account.pub", cwd=pki)
    (pki / ".complete").write_text("")
