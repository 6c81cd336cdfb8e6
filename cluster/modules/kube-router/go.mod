// kube-router v2.1.0: only its NetworkPolicy firewall controller runs, in the local test
// cluster only (iptables + ipset; this kernel has no nftables queue for other agents).
module gatehouse.local/cluster/kube-router

go 1.26.0

require github.com/cloudnativelabs/kube-router/v2 v2.1.0
