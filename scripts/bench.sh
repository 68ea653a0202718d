#!/usr/bin/env bash
# Runs every benchmark against release binaries and prints `BENCH <name> <value> <unit>` lines.
# Not part of CI's pass/fail: these machines are shared and noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=setup.sh
. scripts/setup.sh

cargo build --workspace --release --locked
export EDGEPLANE_BIN_DIR="$PWD/target/release"
target/release/edgeplane-bench raft "$@"
target/release/edgeplane-bench api
