// etcd v3.7.4 (the version Kubernetes v1.37 is tested with is 3.7.x), for the local test cluster.
module gatehouse.local/cluster/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v3.7.4
