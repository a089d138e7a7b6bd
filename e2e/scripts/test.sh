#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the end-to-end tests
# against a real kube-apiserver and etcd (built once per machine).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

export FERROLB_CONTROL_PLANE_BIN=${FERROLB_CONTROL_PLANE_BIN:-$(e2e/scripts/control-plane-bins.sh | tail -n 1)}
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# The e2e tests run the real binary.
cargo build --locked -p ferrolb
# Each e2e test starts its own apiserver and etcd; two at a time suit 2 cores.
cargo test --locked --workspace -- --test-threads "${FERROLB_TEST_THREADS:-2}"
FERROLB_QUICKSTART_EXIT=1 e2e/scripts/quickstart.sh
