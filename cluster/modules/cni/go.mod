// The CNI reference plugins v1.10.0 for the local test cluster's pod network.
module gatehouse.local/cluster/cni

go 1.26.8

require github.com/containernetworking/plugins v1.10.0
