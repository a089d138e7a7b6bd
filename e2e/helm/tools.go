//go:build tools

// Package tools pins helm so that `go build` can build the helm binary that
// the chart tests run (e2e/scripts/helm-bin.sh).
package tools

import _ "helm.sh/helm/v3/cmd/helm"
