//go:build tools

// Package tools pins the etcd server module so that `go build` can build the
// etcd binary for the e2e harness.
package tools

import _ "go.etcd.io/etcd/server/v3"
