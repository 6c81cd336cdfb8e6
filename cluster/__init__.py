"""A real single-node Kubernetes cluster on this machine, as local processes.

Every component is upstream code built from a pinned Go module (``cluster/modules/*/go.mod``)
into a cache outside git: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kubelet, kube-proxy (iptables mode), kubectl, containerd with Debian's runc, the CNI
reference plugins, CoreDNS and kube-router's NetworkPolicy controller. ``python -m cluster
up`` (``make cluster``) builds what is missing, starts them, waits for a Ready node and
answering DNS and writes ``.cluster/kubeconfig``; ``python -m cluster down`` (``make
cluster-stop``) stops exactly what it started and removes its state.
"""
