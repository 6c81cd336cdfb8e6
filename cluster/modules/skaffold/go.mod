// Skaffold v2.19.0: `skaffold run|dev|verify` against the local test cluster (skaffold.yaml).
// The newest v2 release the Go module proxy serves (v2.17.x, v2.18.x, v2.19.1+ answer 403);
// it reads skaffold.yaml's apiVersion skaffold/v4beta14.
module gatehouse.local/cluster/skaffold

go 1.26.2

require github.com/GoogleContainerTools/skaffold/v2 v2.19.0

// Skaffold's go.mod pins these by replace directives, which a dependent module does not
// inherit; its build needs the same versions (ko and buildpacks break on newer ones).
replace (
	github.com/alessio/shellescape => github.com/alessio/shellescape v1.4.2
	github.com/buildpacks/imgutil => github.com/buildpacks/imgutil v0.0.0-20250909162057-9db16db815e3
	github.com/buildpacks/lifecycle => github.com/buildpacks/lifecycle v0.20.5
	github.com/buildpacks/pack => github.com/buildpacks/pack v0.38.2
	github.com/dprotaso/go-yit => github.com/dprotaso/go-yit v0.0.0-20240618133044-5a0af90af097
	github.com/google/go-containerregistry => github.com/google/go-containerregistry v0.21.2
	github.com/imdario/mergo => github.com/imdario/mergo v0.3.16
	k8s.io/api => k8s.io/api v0.33.4
	k8s.io/apimachinery => k8s.io/apimachinery v0.33.4
	k8s.io/client-go => k8s.io/client-go v0.33.4
	k8s.io/kube-openapi => k8s.io/kube-openapi v0.0.0-20250628140032-d90c4fd18f59
	k8s.io/kubectl => k8s.io/kubectl v0.33.4
)
