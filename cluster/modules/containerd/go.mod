// containerd v2.4.2 (CRI v1, cgroup v1 still supported) for the local test cluster.
module gatehouse.local/cluster/containerd

go 1.26.6

require github.com/containerd/containerd/v2 v2.4.2
