//go:build tools

// Package tools pins kube-apiserver so that `go build` can build it from the
// k8s.io/kubernetes module for the e2e harness.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
