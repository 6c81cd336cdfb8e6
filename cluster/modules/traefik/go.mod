// Traefik v3.7.12, the ingress controller (Ingress and Gateway API) of the local test cluster.
// v3.7.13, the newest release on the Go module proxy, cannot be built from it: lego v5.4.1,
// which it requires, needs versions of two DNS-provider SDKs the proxy does not serve
// (github.com/nrdcg/oci-go-sdk/*/v1065 v1065.124.0, github.com/akamai/AkamaiOPEN-edgegrid-golang/v13
// v13.4.0, 403 Forbidden); every module v3.7.12 needs is served, but for the two replaced below.
module gatehouse.local/cluster/traefik

go 1.26.0

require (
	github.com/traefik/traefik/v3 v3.7.12
	// The Gateway API release Traefik v3.7.12 is built with (and supports, "Standard v1.6.1"
	// in its docs): the cluster installs this module's config/crd/standard CRDs.
	sigs.k8s.io/gateway-api v1.6.1
)

// Traefik's go.mod has replace directives, which a dependent module does not inherit; these
// are the ones its build needs:
replace (
	// Traefik's dynamic-configuration extension point is a nested module of its repository
	// (./pkg/config/dynamic/ext, replaced by that local path), so it is in no module zip and
	// not on the proxy: ./ext is its content in the open-source build (two empty types).
	github.com/traefik/traefik/dynamic/ext => ./ext
	// Traefik's fork of go-http-auth (the basicAuth/digestAuth middlewares, unused here). The
	// commit v3.7.12 pins (v0.4.1-0.20260804094822-b975dcaa8c48) is not served by the Go module
	// proxy (403 Forbidden); this is the fork's commit Traefik v3.6.12 pins, with the same API.
	github.com/abbot/go-http-auth => github.com/containous/go-http-auth v0.4.1-0.20200324110947-a37a7636d23e
	// Traefik's fork of gorilla/mux, as v3.7.12 pins it.
	github.com/gorilla/mux => github.com/containous/mux v0.0.0-20250523120546-41b6ec3aed59
)
