#!/usr/bin/env bash
# Builds helm for the chart tests, once per machine.
#
# helm is built from the Go module pinned in e2e/helm (helm.sh/helm/v3, with every
# dependency fixed by its go.sum) and cached outside the repository, under a versioned
# path:
#   ${FERROLB_CACHE_DIR:-~/.cache/ferrolb}/helm-<version>/helm
# A second run finds it and does nothing. Set FERROLB_HELM to the path of an existing
# helm executable to skip the build altogether.
#
# Prints the path of helm on its last line; build progress goes to stderr.
set -euo pipefail

HELM_VERSION=v3.19.0
here=$(cd "$(dirname "$0")/.." && pwd)

if [[ -n "${FERROLB_HELM:-}" ]]; then
  [[ -f "$FERROLB_HELM" && -x "$FERROLB_HELM" ]] || {
    echo "FERROLB_HELM=$FERROLB_HELM is not an executable file" >&2
    exit 1
  }
  echo "$FERROLB_HELM"
  exit 0
fi

out="${FERROLB_CACHE_DIR:-$HOME/.cache/ferrolb}/helm-$HELM_VERSION"
mkdir -p "$out"

if [[ ! -x "$out/helm" ]]; then
  # Test binaries run in parallel; concurrent callers wait for one build.
  exec 9>"$out/lock"
  flock 9
  if [[ ! -x "$out/helm" ]]; then
    echo "building helm $HELM_VERSION (a few minutes, once per machine)" >&2
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false -mod=readonly"
    cd "$here/helm"
    # What helm's own Makefile stamps in: its version, and the Kubernetes version
    # (from its client-go, v0.X -> 1.X) that `helm template` and `helm lint` assume
    # without a cluster.
    k8s=$(go list -m -f '{{.Version}}' k8s.io/client-go)
    minor=${k8s#v0.}
    minor=${minor%%.*}
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
      ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
    done
    # Into a temporary name, then renamed: an interrupted build leaves nothing that a
    # later run would take for a finished one.
    go build -o "$out/helm.tmp" -ldflags "$ldflags" helm.sh/helm/v3/cmd/helm
    mv "$out/helm.tmp" "$out/helm"
  fi
  exec 9>&-
fi
echo "$out/helm"
