#!/usr/bin/env bash
# Runs every benchmark against release binaries and prints `BENCH <name> <value> <unit>` lines.
# Not part of CI's pass/fail: these machines are shared and noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=setup.sh
. scripts/setup.sh

bash scripts/build-workloads.sh >/dev/null
cargo build --workspace --release --locked
export EDGEPLANE_BIN_DIR="$PWD/target/release"
target/release/edgeplane-bench raft "$@"
target/release/edgeplane-bench api
# The data plane: HTTP and MQTT ingest through filter -> detector -> outbox, and the drain.
target/release/edgeplane-bench edge
# Edge failover: SIGKILL the runtime running a workload, until it takes readings elsewhere.
target/release/edgeplane-bench failover
# Simulated nodes: heartbeats the leader sustains, and placements over 1,000 nodes.
target/release/edgeplane-bench scale

# The wasm host: instantiation, and each workload in wasm against the same code natively.
cargo bench --locked -p edgeplane-edge-runtime --bench wasm 2>/dev/null | grep '^BENCH'

# The edge runtime's footprint: stripped binary, and resident memory when registered and idle.
stripped=$(mktemp)
work=$(mktemp -d)
cleanup() {
    kill "${edge_pid:-}" "${orch_pid:-}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$stripped" "$work"
}
trap cleanup EXIT
strip -o "$stripped" target/release/edge-runtime
awk -v b="$(wc -c <"$stripped")" 'BEGIN { printf "BENCH edge_binary_mb %.1f MB\n", b / 1048576 }'
token=edgeplane-bench-bootstrap-token
target/release/orchestrator --id 1 --data-dir "$work/orch" --member 1=127.0.0.1:17101,127.0.0.1:18101 \
    --bootstrap-token "$token" --log warn 2>"$work/orch.log" &
orch_pid=$!
target/release/edge-runtime --name bench-edge --data-dir "$work/edge" --servers 127.0.0.1:18101 \
    --bootstrap-token "$token" --log warn 2>"$work/edge.log" &
edge_pid=$!
for _ in $(seq 100); do
    curl -sf http://127.0.0.1:18101/apis/edgeplane.io/v1alpha1/edgenodes/bench-edge >/dev/null && break
    sleep 0.1
done
curl -sf http://127.0.0.1:18101/apis/edgeplane.io/v1alpha1/edgenodes/bench-edge >/dev/null \
    || { echo "bench: the edge runtime did not register; see $work/edge.log" >&2; exit 1; }
sleep 3
awk '/^VmRSS:/ { printf "BENCH edge_idle_rss_mb %.1f MB\n", $2 / 1024 }' "/proc/$edge_pid/status"
