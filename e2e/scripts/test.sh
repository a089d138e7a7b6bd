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
results=$(mktemp)
trap 'rm -f "$results"' EXIT
cargo test --locked --workspace -- --test-threads "${FERROLB_TEST_THREADS:-2}" 2>&1 | tee "$results"
# The README's quickstarts must keep working too.
FERROLB_QUICKSTART_EXIT=1 e2e/scripts/quickstart.sh
FERROLB_QUICKSTART_EXIT=1 e2e/scripts/quickstart.sh --aws
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
