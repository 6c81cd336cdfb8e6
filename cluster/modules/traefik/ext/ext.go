// Package ext is the open-source build's (empty) extension of Traefik's dynamic configuration:
// dynamic.HTTPConfiguration and dynamic.Router embed these types, which add no field.
package ext

// HTTP adds nothing to dynamic.HTTPConfiguration.
type HTTP struct{}

// Router adds nothing to dynamic.Router.
type Router struct{}
