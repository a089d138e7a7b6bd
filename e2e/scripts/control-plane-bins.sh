#!/usr/bin/env bash
# Builds kube-apiserver and etcd for the e2e harness, once per machine.
#
# The binaries are built from the Go modules pinned in e2e/control-plane/{kube,etcd}
# and cached outside the repository, under a versioned path:
#   ${FERROLB_CACHE_DIR:-~/.cache/ferrolb}/control-plane/<k8s>-<etcd>/{kube-apiserver,etcd}
# A second run finds them and does nothing. Set FERROLB_CONTROL_PLANE_BIN to a
# directory that already holds both binaries to skip the build altogether.
#
# Prints the directory that holds the binaries on its last line.
set -euo pipefail

K8S_VERSION=v1.34.1
ETCD_VERSION=v3.6.5
here=$(cd "$(dirname "$0")/.." && pwd)

if [[ -n "${FERROLB_CONTROL_PLANE_BIN:-}" ]]; then
  for b in kube-apiserver etcd; do
    [[ -x "$FERROLB_CONTROL_PLANE_BIN/$b" ]] || { echo "FERROLB_CONTROL_PLANE_BIN=$FERROLB_CONTROL_PLANE_BIN has no executable $b" >&2; exit 1; }
  done
  echo "$FERROLB_CONTROL_PLANE_BIN"
  exit 0
fi

out="${FERROLB_CACHE_DIR:-$HOME/.cache/ferrolb}/control-plane/${K8S_VERSION}-${ETCD_VERSION}"
mkdir -p "$out"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"

# Build into a temporary name and rename, so an interrupted build never leaves a
# half-written binary that a later run would take for a finished one.
if [[ ! -x "$out/kube-apiserver" ]]; then
  echo "building kube-apiserver $K8S_VERSION (several minutes, once per machine)" >&2
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  (cd "$here/control-plane/kube" && go build -o "$out/kube-apiserver.tmp" \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
    k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$out/kube-apiserver.tmp" "$out/kube-apiserver"
fi
if [[ ! -x "$out/etcd" ]]; then
  echo "building etcd $ETCD_VERSION (once per machine)" >&2
  (cd "$here/control-plane/etcd" && go build -o "$out/etcd.tmp" -ldflags "-s -w" go.etcd.io/etcd/server/v3)
  mv "$out/etcd.tmp" "$out/etcd"
fi
echo "$out"
