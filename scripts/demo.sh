#!/usr/bin/env bash
# The main job: a factory on one machine. 3 orchestrators (Raft), 3 edge runtimes (two beside
# the production lines, one cloud-tier), a mosquitto broker and a sensor simulator. It applies
# the manifests in manifests/factory, shows the workloads processing the readings at the edge,
# then walks through failures: an edge node dies, the cloud is cut off and comes back, new
# model versions are rolled out. Then it keeps running until Ctrl-C.
#
# Secured end to end: `orchestrator init` makes the cluster's CA, member certificates and an
# administrator's credential; every link is TLS (the API, Raft between the orchestrators, the
# edges' calls and their own API, MQTT); edges enroll with a bootstrap token; the sensor
# simulator has a device certificate.
#
#   scripts/demo.sh           run until interrupted
#   scripts/demo.sh --check   the same steps non-interactively, checked, then shut down
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
note() { printf '    %s\n' "$*"; }
fail() { echo "demo: FAILED: $*" >&2; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

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
broker=127.0.0.1:18830
edges=(line-a-edge line-b-edge cloud-1)
declare -A edge_port=([line-a-edge]=9101 [line-b-edge]=9102 [cloud-1]=9103)
declare -A edge_args=(
    [line-a-edge]="--label zone=hall-1 --label line=a --capabilities sensor.temperature,sensor.vibration,wasm.simd"
    [line-b-edge]="--label zone=hall-2 --label line=b --capabilities sensor.vibration,wasm.simd"
    [cloud-1]="--label zone=cloud --tier cloud --capabilities wasm.simd,accel.gpu --memory-mib 8192 --instance-slots 64"
)

addresses=("$broker")
for i in "${ids[@]}"; do addresses+=("$(api "$i")" "$(peer "$i")"); done
for e in "${edges[@]}"; do addresses+=("127.0.0.1:${edge_port[$e]}"); done
for addr in "${addresses[@]}"; do
    if (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null; then
        fail "something already listens on $addr (an earlier demo still running?)"
    fi
done

dir=.edgeplane/demo
rm -rf "$dir"
mkdir -p "$dir"
pki="$dir/pki"
# edgectl as the administrator `orchestrator init` makes (the file names the CA and the
# certificate to present).
export EDGECTL_CONFIG="$pki/edgectl.toml"
admin_tls=(--cacert "$pki/ca.crt" --cert "$pki/admin/client.crt" --key "$pki/admin/client.key")
# Every process started here runs in its own session (setsid), so that Ctrl-C reaches only
# this script, which then stops them in order: the simulator, the edges and orchestrators, the
# broker.
declare -A pids=()

stop() {
    local p=${pids[$1]:-}
    [ -n "$p" ] || return 0
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unset "pids[$1]"
}
stop_all() {
    # The simulator first (it flushes its totals), the broker last.
    local p
    stop sensor-sim
    for p in "${!pids[@]}"; do [ "$p" = mosquitto ] || kill -TERM "${pids[$p]}" 2>/dev/null || true; done
    for p in "${!pids[@]}"; do [ "$p" = mosquitto ] || stop "$p"; done
    stop mosquitto
}
trap 'stop_all' EXIT
# Ctrl-C is how a run ends; in --check mode it is a failure (the checks did not finish).
trap 'echo; say "shutting down"; $check && exit 130; exit 0' INT TERM HUP

kill_now() {
    kill -KILL "${pids[$1]}" 2>/dev/null || true
    wait "${pids[$1]}" 2>/dev/null || true
    unset "pids[$1]"
}

start_orchestrator() {
    setsid "$bin/orchestrator" --id "$1" --data-dir "$dir/node$1" --tls-dir "$pki/members/$1" "${members[@]}" >>"$dir/node$1.log" 2>&1 &
    pids[$1]=$!
}

start_edge() {
    # shellcheck disable=SC2086 # the arguments are meant to split
    EDGEPLANE_BOOTSTRAP_TOKEN="$bootstrap_token" setsid "$bin/edge-runtime" --name "$1" --data-dir "$dir/$1" \
        --listen "127.0.0.1:${edge_port[$1]}" --ca-cert "$pki/ca.crt" \
        --heartbeat-ms 500 --mqtt-broker "$broker" ${edge_args[$1]} >>"$dir/$1.log" 2>&1 &
    pids[$1]=$!
}

# An edge's own API, as the administrator: HTTPS to its serving name <node>.nodes.edgeplane.
edge_get() { curl -sf "${admin_tls[@]}" --resolve "$1.nodes.edgeplane:${edge_port[$1]}:127.0.0.1" "https://$1.nodes.edgeplane:${edge_port[$1]}$2"; }

# `eventually SECONDS WHAT COMMAND...`: runs COMMAND every 100 ms until it succeeds.
eventually() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$(($(now_ms) + seconds * 1000))
    until "$@" >/dev/null 2>&1; do
        [ "$(now_ms)" -lt "$deadline" ] || fail "$what within $seconds s; logs are in $dir"
        sleep 0.1
    done
}

has_leader() { "$edgectl" --timeout 1 cluster status 2>/dev/null | awk '$3 == "leader" { found = 1 } END { exit !found }'; }
stats() { edge_get "$1" /v1/stats; }
instances() { edge_get "$1" /v1/instances; }
assignments() { "$edgectl" --timeout 3 -o json get assignments -n factory 2>/dev/null; }
# The node an Assignment of WORKLOAD is on ("" when there is none), in the assignments on stdin.
node_in() { jq -r --arg w "$1" '[.[] | select(.spec.workload == $w) | .spec.nodeName] | first // ""'; }
node_of() { assignments | node_in "$1"; }
# Whether NODE reports an instance of WORKLOAD Running.
runs() { instances "$1" | jq -e --arg w "$2" 'any(.[]; (.assignment | startswith("factory/" + $w + "-")) and .phase == "Running")'; }
all_ready() { [ "$("$edgectl" -o json get nodes | jq '[.[] | select(any(.status.conditions[]?; .type == "Ready" and .status == "True"))] | length')" = 3 ]; }
all_ready_replicas() {
    "$edgectl" -o json get workloads -n factory | jq -e 'length == 4 and all(.[]; (.status.readyReplicas // 0) >= .spec.replicas)'
}
all_running() {
    local current w n
    current=$(assignments) || return 1
    for w in line-a-temperature-filter vibration-anomalies vibration-classifier vibration-aggregates; do
        n=$(node_in "$w" <<<"$current")
        [ -n "$n" ] && runs "$n" "$w" || return 1
    done
}
# All records of the cloud sink matching the filters, as one JSON array (pages followed).
cloud_records() {
    local after=0 page all='[]'
    while :; do
        page=$("$edgectl" -o json data query -n factory --limit 10000 --after "$after" "$@")
        all=$(jq -s '.[0] + .[1].records' <(echo "$all") <(echo "$page"))
        [ "$(echo "$page" | jq '.records | length')" -gt 0 ] || break
        after=$(echo "$page" | jq '.next')
    done
    echo "$all"
}
# `has_cloud_records WORKLOAD [FILTERS...]`
has_cloud_records() {
    local workload=$1
    shift
    [ "$(cloud_records --workload "$workload" "$@" | jq length)" -gt 0 ]
}
# `stats_of EDGE`: its stats, or the demo fails saying which edge did not answer.
stats_of() { stats "$1" || fail "$1 does not answer on 127.0.0.1:${edge_port[$1]}; its log is in $dir"; }

say "initialising the cluster's PKI: a CA, each orchestrator's certificate, an administrator ($pki)"
"$bin/orchestrator" init --dir "$pki" "${members[@]}" | sed 's/^/    /'
"$bin/orchestrator" pki issue --ca-dir "$pki" --out-dir "$dir/mqtt" --server mosquitto --ip "${broker%:*}" | sed 's/^/    /'

say "starting the MQTT broker (mosquitto on $broker, TLS; every client presents a certificate of the cluster CA)"
cat >"$dir/mosquitto.conf" <<EOF
$([ "$(id -u)" = 0 ] && printf '# As root, mosquitto would drop to a user that cannot read the key.\nuser root')
listener ${broker#*:} ${broker%:*}
cafile $dir/mqtt/ca.crt
certfile $dir/mqtt/tls.crt
keyfile $dir/mqtt/tls.key
require_certificate true
use_identity_as_username true
allow_anonymous false
# Queue generously for edge sessions that are away for a while (store-and-forward starts here).
max_queued_messages 100000
EOF
setsid mosquitto -c "$dir/mosquitto.conf" >>"$dir/mosquitto.log" 2>&1 &
pids[mosquitto]=$!
eventually 5 "mosquitto did not listen on $broker" bash -c "exec 3<>/dev/tcp/${broker%:*}/${broker#*:}"

say "starting 3 orchestrators on 127.0.0.1-3 (API port 8101, Raft port 7101); logs in $dir"
for i in "${ids[@]}"; do start_orchestrator "$i"; done
eventually 10 "no leader was elected" has_leader
"$edgectl" cluster status

say "registering the factory's nodes and pushing the workload modules (wasm) into the registry"
"$edgectl" apply -f manifests/factory/nodes.yaml
for module in threshold-filter window-aggregator anomaly-detector ts-compressor onnx-inference; do
    "$edgectl" module push "target/workloads/$module.wasm" --name "$module" --version 1.0.0 -n factory
done
note "and a trained model: the vibration classifier (scikit-learn, exported to ONNX; checked by the registry with the edge's backend)"
"$edgectl" model push manifests/factory/models/vibration-classifier-1.0.0.onnx --name vibration-classifier --version 1.0.0 -n factory

say "a bootstrap token for the edge runtimes to enroll with (each gets its own certificate)"
echo "\$ edgectl token create --ttl 1h --uses 3"
bootstrap_token=$("$edgectl" token create --ttl 1h --uses 3 --description "demo edges" 2>/dev/null)
"$edgectl" token list

say "starting 3 edge runtimes: line-a-edge and line-b-edge beside the lines, cloud-1 in the cloud tier"
for e in "${edges[@]}"; do start_edge "$e"; done
eventually 20 "the edge runtimes did not all report Ready" all_ready
"$edgectl" get nodes -o wide

say "applying the workloads: a temperature filter, a vibration anomaly detector with its model, a trained vibration classifier, 10 s vibration summaries"
"$edgectl" apply -f manifests/factory
eventually 30 "the workloads did not all run" all_running
eventually 10 "the workloads' status did not show them ready" all_ready_replicas
"$edgectl" get workloads -n factory
echo
"$edgectl" get assignments -n factory -o wide
echo
echo "Why each replica is where it is (the scheduler's edgeplane.io/placed-because annotation):"
"$edgectl" -o json get assignments -n factory | jq -r '.[] | "  \(.spec.workload) on \(.spec.nodeName): \(.metadata.annotations["edgeplane.io/placed-because"] // "-")"'

say "starting the sensor simulator: 2 presses (temperature, vibration) on line A, 2 pumps (vibration) on line B, 10 Hz each"
note "faults are injected in turn every 15 s (worn bearing, overheating, imbalance, spikes); pump-b2 runs slightly imbalanced all along"
note "what it publishes and each fault as it starts: $dir/sensor-sim.log"
echo "\$ edgectl user create sensor-sim --group edgeplane:devices   # the simulator's device certificate"
"$edgectl" user create sensor-sim --group edgeplane:devices --days 1 --out-dir "$dir/sensor-sim" | sed 's/^/    /'
setsid "$bin/sensor-sim" --broker "$broker" --ca-cert "$pki/ca.crt" --cert "$dir/sensor-sim/client.crt" --key "$dir/sensor-sim/client.key" \
    --rate-hz 10 --fault-every-s 15 --imbalance >>"$dir/sensor-sim.log" 2>&1 &
pids[sensor-sim]=$!

say "the mission at work: readings filtered and scored at the edge, results arriving in the cloud"
eventually 30 "no anomaly reached the cloud sink" has_cloud_records vibration-anomalies
eventually 30 "no out-of-range temperature reached the cloud sink" has_cloud_records line-a-temperature-filter
eventually 30 "no vibration summary reached the cloud sink" has_cloud_records vibration-aggregates
eventually 40 "no fault found by the trained classifier reached the cloud sink" has_cloud_records vibration-classifier
grep '^fault' "$dir/sensor-sim.log" | sed 's/^/    simulator: /' || true
echo
echo "\$ edgectl top nodes      # readings in at each edge vs bytes sent up"
"$edgectl" top nodes
echo
echo "\$ edgectl data tail -n factory --workload vibration-anomalies --last 6     # anomalies, with the model that found them"
"$edgectl" data tail -n factory --workload vibration-anomalies --last 6
echo
echo "\$ edgectl data tail -n factory --workload vibration-classifier --last 4     # faults the trained ONNX model found (probability of a fault)"
"$edgectl" data tail -n factory --workload vibration-classifier --last 4
echo
echo "\$ edgectl data tail -n factory --workload line-a-temperature-filter --last 2   # only the temperatures out of band go up"
"$edgectl" data tail -n factory --workload line-a-temperature-filter --last 2
echo
echo "\$ edgectl data tail -n factory --workload vibration-aggregates --last 2   # 10 s summaries instead of raw readings"
"$edgectl" data tail -n factory --workload vibration-aggregates --last 2

# ---- Failure 1: an edge node dies. ----
victim=$(node_of vibration-anomalies)
say "failure 1: SIGKILL $victim, the node running the anomaly detector; the scheduler moves its work"
"$edgectl" get assignments -n factory -o wide | awk -v n="$victim" 'NR == 1 || $0 ~ n'
killed_at=$(now_ms)
kill_now "$victim"
moved_to=""
while :; do
    moved_to=$(node_of vibration-anomalies)
    if [ -n "$moved_to" ] && [ "$moved_to" != "$victim" ] && runs "$moved_to" vibration-anomalies >/dev/null 2>&1; then break; fi
    [ $(($(now_ms) - killed_at)) -lt 30000 ] || fail "vibration-anomalies was not running elsewhere 30 s after $victim died"
    sleep 0.05
done
move_ms=$(($(now_ms) - killed_at))
echo "vibration-anomalies runs on $moved_to ${move_ms} ms after $victim was killed (the leader saw its connection close: declared down 250 ms later, replaced, started)"
"$edgectl" get nodes
"$edgectl" get assignments -n factory -o wide
note "replicas whose placement only $victim satisfies (a nodeSelector) wait for it; the others moved"
eventually 30 "no anomaly from $moved_to reached the cloud" has_cloud_records vibration-anomalies --node "$moved_to"
echo "anomalies arrive from $moved_to now"

say "$victim comes back (with its certificate), stops its old replicas, and the scheduler may rebalance work onto it"
start_edge "$victim"
eventually 20 "$victim did not report Ready again" all_ready
# It resumes what it ran before it died, until the orchestrators tell it the work moved; what
# that old replica produced meanwhile is fenced by the cloud sink. (The scheduler may also
# place work on it again, under a new generation.) Settled: it runs exactly the generations
# assigned to it now, and its outbox is empty.
settled() {
    local current running
    current=$(assignments) && running=$(instances "$victim") || return 1
    jq -e -n --argjson a "$current" --argjson i "$running" --arg node "$victim" '
        ($a | map(select(.spec.nodeName == $node) | {key: ("factory/" + .metadata.name), value: .spec.generation}) | from_entries)
        == ($i | map({key: .assignment, value: .generation}) | from_entries)' || return 1
    [ "$(stats "$victim" | jq '.outbox.pendingRecords')" = 0 ]
}
eventually 20 "$victim did not settle on the work assigned to it now" settled
"$edgectl" get nodes
"$edgectl" get assignments -n factory -o wide
fenced=$(stats_of "$victim" | jq '.node.recordsFenced')
[ "$fenced" = 0 ] || note "the cloud refused (fenced) $fenced record(s) from $victim's old replica, made after its work had moved"

# ---- Failure 2: the cloud is cut off. ----
say "failure 2: the cloud is cut off (all 3 orchestrators SIGKILLed); the edges keep working and buffer"
# Outbox counters and the fenced count, before the cut and when the cloud comes back.
declare -A before=() at_back=()
counters='"\(.outbox.appendedRecords) \(.outbox.droppedRecords + .outbox.rejectedRecords + .outbox.corruptRecords) \(.node.recordsFenced)"'
for e in "${edges[@]}"; do before[$e]=$(stats_of "$e" | jq -r "$counters"); done
for i in "${ids[@]}"; do kill_now "$i"; done
cut_at=$(now_ms)
printf '    %-6s' "t"
for e in "${edges[@]}"; do printf '%-36s' "$e: readings in / outbox"; done
echo
for t in 2 4 6 8 10; do
    sleep 2
    printf '    %-6s' "+${t}s"
    for e in "${edges[@]}"; do
        printf '%-36s' "$(stats "$e" | jq -r '"\(.node.readingsIn) / \(.outbox.pendingRecords) records, \(.outbox.pendingReadings) readings"' || echo "no answer")"
    done
    echo
done
buffered=0
for e in "${edges[@]}"; do buffered=$((buffered + $(stats_of "$e" | jq '.outbox.pendingRecords'))); done
[ "$buffered" -gt 0 ] || fail "the edges buffered nothing while the cloud was away"
echo "    the edges hold $buffered records for the cloud, on disk (fsynced), while the sensors keep publishing"

say "the cloud comes back: the orchestrators restart from their Raft logs, the edges drain their backlog"
for e in "${edges[@]}"; do at_back[$e]=$(stats_of "$e" | jq -r "$counters"); done
for i in "${ids[@]}"; do start_orchestrator "$i"; done
back_at=$(now_ms)
eventually 20 "no leader was elected after the restart" has_leader
# Drained: each edge has delivered every record it had appended when the cloud came back
# (the sensors keep going, so its outbox need not be empty at any one moment).
drained() {
    local e
    for e in "${edges[@]}"; do
        [ "$(stats "$e" | jq '.outbox.deliveredRecords')" -ge "${at_back[$e]%% *}" ] || return 1
    done
}
eventually 60 "the edges did not drain their outboxes" drained
echo "    leader elected and backlog drained $(($(now_ms) - back_at)) ms after the restart (the cloud was away $(((back_at - cut_at) / 1000)) s)"
for e in "${edges[@]}"; do
    read -r appended_before lost_before fenced_before <<<"${before[$e]}"
    read -r appended_back _ _ <<<"${at_back[$e]}"
    read -r _ lost fenced <<<"$(stats_of "$e" | jq -r "$counters")"
    [ "$lost" = "$lost_before" ] || fail "$e dropped, had refused or found corrupt $((lost - lost_before)) outbox records"
    [ "$fenced" = "$fenced_before" ] || fail "$e had $((fenced - fenced_before)) records fenced around the cut-off"
    stored=$(cloud_records --node "$e")
    count=$(echo "$stored" | jq length)
    duplicated=$(echo "$stored" | jq -r 'group_by(.stream)[] | select((map(.seq) | unique | length) != length) | .[0].stream')
    [ -z "$duplicated" ] || fail "$e has duplicate sequence numbers in the cloud: $duplicated"
    # Streams number from 1. A number may be missing only for a record the cloud fenced (an old
    # replica's output after its work had moved, counted by the node; nothing was dropped,
    # checked above). A fenced record at a stream's end leaves no gap, hence at most.
    missing=$(echo "$stored" | jq '[group_by(.stream)[] | (map(.seq) | max) - length] | add // 0')
    [ "$missing" -le "$fenced" ] || fail "$e: $missing sequence numbers are missing from the cloud, but the cloud fenced only $fenced of its records"
    # Appended since the runtime's last start (the restarted node's earlier records are in the
    # cloud too): all of them delivered.
    [ "$count" -ge "$appended_back" ] || fail "$e had appended $appended_back records when the cloud came back, the cloud holds $count"
    printf '    %-12s %4s records in the cloud over %s stream(s), %3s of them made while the cloud was away; nothing dropped, %s fenced\n' \
        "$e" "$count" "$(echo "$stored" | jq '[.[].stream] | unique | length')" "$((appended_back - appended_before))" "$fenced"
done
echo "    nothing lost: each edge's streams are complete in the cloud (no duplicate, no gap but the records the cloud fenced)"

# ---- New model versions. ----
# Alerts on pump-b2 (the slightly imbalanced pump) per 10 s, by one workload and model version.
pump_alerts() {
    cloud_records --workload "$1" |
        jq --arg m "$2" --argjson from "$3" --argjson to "$4" \
            '[.[] | select(.model == $m) | .readings[]? | select(.device == "pump-b2" and .ts >= $from and .ts < $to)] | length'
}
say "new models, in place: vibration-detector 1.1.0 (parameters, retuned for slight imbalances) and vibration-classifier 1.1.0 (ONNX, retrained with imbalances labelled)"
window=10000
# Ends a second ago: the last second's alerts may still be on their way up.
v1_from=$(($(now_ms) - window - 1000))
detector_v1=$(pump_alerts vibration-anomalies 1.0.0 "$v1_from" "$((v1_from + window))")
classifier_v1=$(pump_alerts vibration-classifier 1.0.0 "$v1_from" "$((v1_from + window))")
echo "    pump-b2 alerts in 10 s with 1.0.0: detector $detector_v1, classifier $classifier_v1 (of about 100 readings)"
"$edgectl" apply -f manifests/updates/vibration-detector-1.1.0.yaml
"$edgectl" model push manifests/factory/models/vibration-classifier-1.1.0.onnx --name vibration-classifier --version 1.1.0 -n factory
applied_at=$(now_ms)
has_v11() { [ "$(cloud_records --workload "$1" | jq '[.[] | select(.model == "1.1.0")] | length')" -gt 0 ]; }
eventually 30 "no alert from vibration-detector 1.1.0 reached the cloud" has_v11 vibration-anomalies
eventually 30 "no alert from vibration-classifier 1.1.0 reached the cloud" has_v11 vibration-classifier
echo "    first alerts from both 1.1.0 models in the cloud $(($(now_ms) - applied_at)) ms after the updates (the instances were reconfigured, not restarted)"
v2_from=$(now_ms)
echo "    counting 10 s of alerts with the 1.1.0 models ..."
sleep 11
detector_v2=$(pump_alerts vibration-anomalies 1.1.0 "$v2_from" "$((v2_from + window))")
classifier_v2=$(pump_alerts vibration-classifier 1.1.0 "$v2_from" "$((v2_from + window))")
echo "    pump-b2 alerts in 10 s with 1.1.0: detector $detector_v2 (1.0.0: $detector_v1), classifier $classifier_v2 (1.0.0: $classifier_v1)"
[ "$detector_v2" -gt "$detector_v1" ] || fail "vibration-detector 1.1.0 flagged $detector_v2 pump-b2 readings in 10 s, no more than 1.0.0's $detector_v1"
[ "$classifier_v2" -gt "$classifier_v1" ] || fail "vibration-classifier 1.1.0 flagged $classifier_v2 pump-b2 readings in 10 s, no more than 1.0.0's $classifier_v1"
"$edgectl" data tail -n factory --workload vibration-classifier --last 4
"$edgectl" get models -n factory

echo
"$edgectl" top nodes
echo
echo "summary: workload moved in ${move_ms} ms; the edges buffered $buffered records while the cloud was away and lost none;"
echo "         on the imbalanced pump, per 10 s: detector 1.1.0 flagged $detector_v2 readings (1.0.0: $detector_v1), the retrained classifier $classifier_v2 (1.0.0: $classifier_v1)"

say "the web console, served by every orchestrator at /ui/: sign in as a viewer with a ServiceAccount token"
"$edgectl" apply -f manifests/console/viewer.yaml
console_token=$("$edgectl" serviceaccount token console -n ops 2>/dev/null)
page=$(curl -sf --cacert "$pki/ca.crt" "https://$(api 1)/ui/") || fail "https://$(api 1)/ui/ does not answer"
[[ $page == *"<title>edgeplane console</title>"* ]] || fail "https://$(api 1)/ui/ does not serve the console"
echo "    open https://$(api 1)/ui/ (your browser does not know the cluster's CA, $pki/ca.crt: accept it or import it)"
echo "    and sign in with: $console_token"

if $check; then
    say "check passed; shutting down"
    exit 0
fi

cat <<TRY

The factory keeps running. Try, in another terminal (as the administrator init made):

  export EDGECTL_CONFIG=$EDGECTL_CONFIG
  $edgectl whoami                                 # admin, in edgeplane:cluster-admins
  $edgectl get workloads -n factory -w            # follow the workloads (Ctrl-C to stop)
  $edgectl get assignments -n factory -o wide     # which replica runs where
  $edgectl describe workload vibration-anomalies -n factory
  $edgectl top nodes                              # readings in vs bytes up, per edge
  $edgectl data tail -n factory --workload vibration-anomalies -f   # anomalies as they arrive
  $edgectl data tail -n factory --workload vibration-aggregates -f  # 10 s summaries
  $edgectl node drain line-b-edge                 # move work off a node, then: node uncordon line-b-edge
  $edgectl cluster status                         # the Raft members
  $edgectl audit log --limit 20                   # who changed what (and who was refused)
  $edgectl audit verify                           # the audit chain, checked end to end
  $edgectl user create alice --group ops --out-dir /tmp/alice   # a user; bind a role to ops
  curl -s ${admin_tls[*]} --resolve line-a-edge.nodes.edgeplane:9101:127.0.0.1 https://line-a-edge.nodes.edgeplane:9101/v1/stats
  tail -f $dir/sensor-sim.log                     # the faults the simulator injects

Press Ctrl-C to stop everything. Every 10 s, a line on what the edges did:
TRY
# Anomalies since the last line: paged from the cloud sink's cursor, so each is counted once.
cursor=$("$edgectl" -o json data query -n factory --workload vibration-anomalies --limit 10000 | jq '.next')
while true; do
    for _ in $(seq 10); do
        for p in "${!pids[@]}"; do
            kill -0 "${pids[$p]}" 2>/dev/null || fail "$p exited; its log is in $dir"
        done
        sleep 1
    done
    line="$(date +%T)"
    for e in "${edges[@]}"; do
        line+=$(stats "$e" | jq -r --arg e "$e" '"  \($e): \(.node.readingsIn) in, \(.node.bytesIn / 1024 | floor) KiB -> \(.node.bytesUp / 1024 | floor) KiB up, outbox \(.outbox.pendingRecords)"' || echo "  $e: no answer")
    done
    if page=$("$edgectl" --timeout 2 -o json data query -n factory --workload vibration-anomalies --limit 10000 --after "$cursor" 2>/dev/null); then
        cursor=$(echo "$page" | jq '.next')
        line+=$(echo "$page" | jq -r '"  | anomalies: \([.records[].readings | length] | add // 0) (models: \([.records[].model] | unique | join(",")))"')
    else
        line+="  | anomalies: the cloud does not answer"
    fi
    echo "$line"
done
