// CoreDNS v1.14.7, the cluster DNS of the local test cluster.
module gatehouse.local/cluster/coredns

go 1.26.0

require github.com/coredns/coredns v1.14.7
