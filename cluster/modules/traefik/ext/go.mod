// Traefik's extension point for its dynamic configuration: upstream keeps it as a nested
// module in its repository (pkg/config/dynamic/ext, replaced by a local path in Traefik's
// go.mod), so it is neither in Traefik's module zip nor on the Go module proxy. In the
// open-source build it holds only empty types; this is that, and no more.
module github.com/traefik/traefik/dynamic/ext

go 1.24.0
