#!/usr/bin/env bash
# The main job: a local 3-node orchestrator cluster on loopback that you can write to and
# read from. It builds everything, starts the cluster, writes and reads through every node,
# kills the leader to show failover without data loss, and keeps running until Ctrl-C.
#
#   scripts/demo.sh           run until interrupted
#   scripts/demo.sh --check   run the same steps non-interactively, then shut down (tests use this)
#
# EDGEPLANE_SKIP_BUILD=1 uses the binaries already in target/debug (the test suite sets it,
# since cargo holds the build lock while tests run).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=setup.sh
. scripts/setup.sh

check=false
[ "${1:-}" = "--check" ] && check=true

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
fail() { echo "demo: $*" >&2; exit 1; }

if [ "${EDGEPLANE_SKIP_BUILD:-0}" != 1 ]; then
    say "building (debug; the first build takes a few minutes)"
    cargo build --workspace --locked --quiet
    bash scripts/build-workloads.sh
fi
bin=target/debug
edgectl="$bin/edgectl"

ids=(1 2 3)
api() { echo "127.0.0.$1:8101"; }
peer() { echo "127.0.0.$1:7101"; }
members=()
for i in "${ids[@]}"; do members+=(--member "$i=$(peer "$i"),$(api "$i")"); done
export EDGEPLANE_SERVERS="$(api 1),$(api 2),$(api 3)"
# Edge runtimes present this to register (a demo secret; set your own in production).
export EDGEPLANE_BOOTSTRAP_TOKEN=edgeplane-demo-bootstrap-token
edges=(line-a-edge line-b-edge cloud-1)
declare -A edge_args=(
    [line-a-edge]="--label zone=hall-1 --label line=a --capabilities sensor.temperature,sensor.vibration,wasm.simd --listen 127.0.0.1:9101"
    [line-b-edge]="--label zone=hall-2 --label line=b --capabilities sensor.vibration,wasm.simd --listen 127.0.0.1:9102"
    [cloud-1]="--label zone=cloud --tier cloud --capabilities wasm.simd,accel.gpu --memory-mib 8192 --instance-slots 64 --listen 127.0.0.1:9103"
)

for i in "${ids[@]}" edge; do
    addrs=("$(api "$i")" "$(peer "$i")")
    [ "$i" = edge ] && addrs=(127.0.0.1:9101 127.0.0.1:9102 127.0.0.1:9103)
    for addr in "${addrs[@]}"; do
        if (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null; then
            fail "something already listens on $addr (an earlier demo still running?)"
        fi
    done
done

dir=.edgeplane/demo
rm -rf "$dir"
mkdir -p "$dir"
declare -A pids=()

start_node() {
    "$bin/orchestrator" --id "$1" --data-dir "$dir/node$1" "${members[@]}" >>"$dir/node$1.log" 2>&1 &
    pids[$1]=$!
}

start_edge() {
    # shellcheck disable=SC2086 # the arguments are meant to split
    "$bin/edge-runtime" --name "$1" --data-dir "$dir/$1" --heartbeat-ms 500 ${edge_args[$1]} >>"$dir/$1.log" 2>&1 &
    pids[$1]=$!
}

# Instances reported Running by every edge runtime's status API.
running_instances() {
    local total=0 port n
    for port in 9101 9102 9103; do
        n=$(curl -s "http://127.0.0.1:$port/v1/instances" 2>/dev/null | grep -o '"phase":"Running"' | wc -l || true)
        total=$((total + n))
    done
    echo "$total"
}

stop_all() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    pids=()
}
trap 'stop_all' EXIT
trap 'echo; say "shutting down"; exit 0' INT TERM

leader() {
    "$edgectl" --timeout 2 cluster status 2>/dev/null | awk '$3 == "leader" { print $2; exit }'
}

wait_for_leader() {
    local l=""
    for _ in $(seq 100); do
        l=$(leader || true)
        [ -n "$l" ] && { echo "$l"; return 0; }
        sleep 0.1
    done
    fail "no leader elected within 10 s; logs are in $dir"
}

say "starting 3 orchestrators on 127.0.0.1-3 (API port 8101, peer port 7101); logs in $dir"
for i in "${ids[@]}"; do start_node "$i"; done
first_leader=$(wait_for_leader)
"$edgectl" cluster status

say "writing through node 1, reading back from every node (linearizable reads)"
"$edgectl" -s "$(api 1)" store put sensor line-a-temp --value '{"unit":"celsius","min":15,"max":80}'
"$edgectl" -s "$(api 2)" store put sensor line-b-vibration --value '{"unit":"mm/s","max":7.1}'
for i in "${ids[@]}"; do
    echo "-- node $i:"
    "$edgectl" -s "$(api "$i")" store list sensor
done

say "SIGKILL the leader (node $first_leader) and keep writing"
kill -KILL "${pids[$first_leader]}"
wait "${pids[$first_leader]}" 2>/dev/null || true
started=$(date +%s%N)
"$edgectl" store put sensor line-c-pressure --value '{"unit":"bar","max":4.5}'
echo "write committed $(( ($(date +%s%N) - started) / 1000000 )) ms after the kill"
new_leader=$(wait_for_leader)
[ "$new_leader" != "$first_leader" ] || fail "the killed node is still reported as leader"
"$edgectl" cluster status || true

say "restarting node $first_leader: it catches up from the others"
start_node "$first_leader"
for _ in $(seq 100); do
    n=$("$edgectl" -s "$(api "$first_leader")" store list sensor --stale 2>/dev/null | tail -n +2 | wc -l || echo 0)
    [ "$n" = 3 ] && break
    sleep 0.1
done
[ "$n" = 3 ] || fail "node $first_leader did not catch up (it holds $n of 3 objects)"
"$edgectl" -s "$(api "$first_leader")" store list sensor --stale
"$edgectl" cluster status

say "declarative resources: applying the factory manifests (edge nodes, workloads, a model)"
"$edgectl" apply -f manifests/factory
"$edgectl" get nodes -o wide
"$edgectl" get workloads -A
"$edgectl" describe workload vibration-anomalies -n factory

say "pushing the workload modules (wasm) into the registry"
for module in threshold-filter window-aggregator anomaly-detector ts-compressor; do
    "$edgectl" module push "target/workloads/$module.wasm" --name "$module" --version 1.0.0 -n factory
done

say "starting 3 edge runtimes (two line-side, one cloud-tier); they register and take their assignments"
for e in "${edges[@]}"; do start_edge "$e"; done
# 1 filter (line a) + 2 anomaly detectors (daemon on the vibration nodes) + 2 aggregators.
expected=5
for _ in $(seq 200); do
    [ "$(running_instances)" -ge "$expected" ] && break
    sleep 0.1
done
"$edgectl" get assignments -A
for e in "${edges[@]}"; do
    port=${edge_args[$e]##*:}
    echo "-- $e runs: $(curl -s "http://127.0.0.1:$port/v1/instances" | grep -o '"assignment":"[^"]*"' | cut -d'"' -f4 | tr '\n' ' ')"
done
n=$(running_instances)
[ "$n" -ge "$expected" ] || fail "only $n of $expected instances are running; logs are in $dir"
echo "$n instances running on the edge"

if $check; then
    say "check passed; shutting down"
    exit 0
fi

cat <<TRY

The cluster is running. Try, in another terminal:

  export EDGEPLANE_SERVERS=$EDGEPLANE_SERVERS
  $edgectl cluster status
  $edgectl store put thing my-first --value '{"hello":"edge"}'
  $edgectl store get thing my-first
  $edgectl store put thing my-first --value '{"hello":"again"}' --if-version 1   # compare-and-swap
  curl -s http://$(api 2)/v1/store/sensor
  curl -s http://$(api 1)/metrics | grep edgeplane_raft_
  $edgectl get workloads -A -o wide
  $edgectl watch workloads -A                      # in one terminal, then in another:
  $edgectl apply -f manifests/factory              # edit a file first to see "configured"
  $edgectl describe node line-a-edge
  $edgectl get assignments -A -o wide             # which replica runs where
  curl -s http://127.0.0.1:9101/v1/instances       # what line-a-edge runs, and how it is doing
  curl -s http://$(api 1)/v1/nodes/line-a-edge/heartbeat   # the leader's view (ask the leader)

Press Ctrl-C to stop everything.
TRY
while true; do
    for i in "${!pids[@]}"; do
        kill -0 "${pids[$i]}" 2>/dev/null || fail "process $i exited; see $dir/node$i.log or $dir/$i.log"
    done
    sleep 1
done
