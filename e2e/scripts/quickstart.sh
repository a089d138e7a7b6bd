#!/usr/bin/env bash
# Brings up a local control plane (kube-apiserver + etcd on 127.0.0.1), runs
# `ferrolb controller` with the bare-metal provider, applies a sample IPPool and
# Service, and shows the Service's EXTERNAL-IP.
#
# With --aws it runs the AWS provider instead, against a local AWS endpoint
# (moto, seeded with a VPC, subnets and an instance behind each of two Nodes),
# and the EXTERNAL-IP is the Network Load Balancer's DNS name.
#
# It then keeps everything running until Ctrl-C, so you can poke at it with
# kubectl (the script prints the KUBECONFIG to use). With
# FERROLB_QUICKSTART_EXIT=1 it tears down as soon as the address shows (CI).
set -euo pipefail

provider=baremetal
case "${1:-}" in
  "") ;;
  --aws) provider=aws ;;
  *) echo "usage: $0 [--aws]" >&2; exit 2 ;;
esac

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
cluster_args=(--kubeconfig-out "$KUBECONFIG")
[[ $provider == aws ]] && cluster_args+=(--aws --cluster-name quickstart)
"$target/debug/ferrolb-dev-cluster" "${cluster_args[@]}" >"$work/cluster.out" 2>"$work/cluster.log" &
pids+=($!)
# moto is installed on first use, which takes a minute or two.
for _ in $(seq 1 3000); do
  grep -q '^export KUBECONFIG' "$work/cluster.out" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/cluster.log" >&2; exit 1; }
  sleep 0.1
done
grep -q '^export KUBECONFIG' "$work/cluster.out" || { echo "control plane did not start in 300s" >&2; cat "$work/cluster.log" >&2; exit 1; }
echo "control plane up: export KUBECONFIG=$KUBECONFIG"
# The AWS_* variables of the local AWS endpoint, when there is one.
eval "$(grep '^export AWS_' "$work/cluster.out" || true)"

"$target/debug/ferrolb" crds | kubectl apply -f - >/dev/null
kubectl wait --for=condition=Established crd/ippools.ferrolb.io --timeout=30s >/dev/null

if [[ $provider == aws ]]; then
  "$target/debug/ferrolb" controller --provider aws --cluster-name quickstart \
    --leader-election=false --metrics-addr 127.0.0.1:0 >"$work/controller.log" 2>&1 &
  pids+=($!)
  kubectl apply -f docs/examples/service-aws.yaml
  field='{.status.loadBalancer.ingress[0].hostname}'
else
  "$target/debug/ferrolb" controller --provider baremetal --leader-election=false \
    --metrics-addr 127.0.0.1:0 >"$work/controller.log" 2>&1 &
  pids+=($!)
  kubectl apply -f docs/examples/ippool.yaml -f docs/examples/service.yaml
  field='{.status.loadBalancer.ingress[0].ip}'
fi
addr=""
for _ in $(seq 1 600); do
  addr=$(kubectl get svc web -o jsonpath="$field" 2>/dev/null || true)
  [[ -n "$addr" ]] && break
  sleep 0.1
done
if [[ -z "$addr" ]]; then
  echo "the Service got no address in 60s; controller log:" >&2
  tail -n 50 "$work/controller.log" >&2
  exit 1
fi
kubectl get svc web
if [[ $provider == aws ]]; then
  kubectl get nodes -o custom-columns=NAME:.metadata.name,PROVIDER-ID:.spec.providerID
  echo
  echo "Service default/web is served by the Network Load Balancer $addr"
  echo "(in the local AWS endpoint $AWS_ENDPOINT_URL; with the AWS CLI:"
  echo " AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL aws elbv2 describe-load-balancers)"
else
  # The pool's counts are written a moment after the address.
  kubectl wait --for=jsonpath='{.status.assignedIPv4}'=1 ippool/default --timeout=10s >/dev/null || true
  kubectl get ippools
  echo
  echo "Service default/web has EXTERNAL-IP $addr"
fi
if [[ "${FERROLB_QUICKSTART_EXIT:-0}" == 1 ]]; then
  exit 0
fi
echo "Still running. In another shell: export KUBECONFIG=$KUBECONFIG"
echo "Controller log: $work/controller.log. Ctrl-C tears it all down."
wait "${pids[1]}"
