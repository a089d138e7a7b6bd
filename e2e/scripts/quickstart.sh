#!/usr/bin/env bash
# Brings up a local control plane (kube-apiserver + etcd on 127.0.0.1), runs
# `ferrolb controller` with the bare-metal provider, applies a sample IPPool and
# Service, and shows the Service's EXTERNAL-IP.
#
# It then keeps everything running until Ctrl-C, so you can poke at it with
# kubectl (the script prints the KUBECONFIG to use). With
# FERROLB_QUICKSTART_EXIT=1 it tears down as soon as the address shows (CI).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
command -v kubectl >/dev/null || { echo "quickstart: kubectl is needed on PATH" >&2; exit 1; }

e2e/scripts/control-plane-bins.sh >/dev/null
cargo build --locked -q -p ferrolb -p ferrolb-e2e --bin ferrolb --bin ferrolb-dev-cluster
target=${CARGO_TARGET_DIR:-$root/target}

work=$(mktemp -d -t ferrolb-quickstart.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

export KUBECONFIG=$work/kubeconfig
"$target/debug/ferrolb-dev-cluster" --kubeconfig-out "$KUBECONFIG" >"$work/cluster.out" 2>"$work/cluster.log" &
pids+=($!)
for _ in $(seq 1 600); do
  grep -q '^export KUBECONFIG' "$work/cluster.out" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/cluster.log" >&2; exit 1; }
  sleep 0.1
done
grep -q '^export KUBECONFIG' "$work/cluster.out" || { echo "control plane did not start in 60s" >&2; cat "$work/cluster.log" >&2; exit 1; }
echo "control plane up: export KUBECONFIG=$KUBECONFIG"

"$target/debug/ferrolb" crds | kubectl apply -f - >/dev/null
kubectl wait --for=condition=Established crd/ippools.ferrolb.io --timeout=30s >/dev/null

"$target/debug/ferrolb" controller --provider baremetal --leader-election=false \
  --metrics-addr 127.0.0.1:0 >"$work/controller.log" 2>&1 &
pids+=($!)

kubectl apply -f docs/examples/ippool.yaml -f docs/examples/service.yaml
ip=""
for _ in $(seq 1 300); do
  ip=$(kubectl get svc web -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)
  [[ -n "$ip" ]] && break
  sleep 0.1
done
if [[ -z "$ip" ]]; then
  echo "the Service got no address in 30s; controller log:" >&2
  tail -n 50 "$work/controller.log" >&2
  exit 1
fi
# The pool's counts are written a moment after the address.
kubectl wait --for=jsonpath='{.status.assignedIPv4}'=1 ippool/default --timeout=10s >/dev/null || true
kubectl get svc web
kubectl get ippools
echo
echo "Service default/web has EXTERNAL-IP $ip"
if [[ "${FERROLB_QUICKSTART_EXIT:-0}" == 1 ]]; then
  exit 0
fi
echo "Still running. In another shell: export KUBECONFIG=$KUBECONFIG"
echo "Controller log: $work/controller.log. Ctrl-C tears it all down."
wait "${pids[1]}"
