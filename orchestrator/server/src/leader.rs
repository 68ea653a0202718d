//! The leader's control loops: placement (every 100 ms, and at once after a plan that left
//! replicas for the next), and collection of module blobs
//! nothing refers to, of expired bootstrap tokens and of expired Events (every 10 s).
//!
//! They run on every orchestrator but act only while it leads. Each turn reads a copy of the
//! applied state (O(1)), runs the pure planner ([`edgeplane_core::placement`]) or collector
//! ([`edgeplane_core::gc`]) on a blocking thread, never on the async reactor or the Raft
//! actor, and proposes what they return as one transaction. Every write carries a
//! precondition on what was read, so a turn planned from a state that moved on is refused
//! whole and planned again.

use std::time::{Duration, Instant};

use edgeplane_api::Consistency;
use edgeplane_core::placement::{self, Unplaced};
use edgeplane_core::{gc, Command};
use raft::StateRole;

use crate::app::AppState;
use crate::http::{rfc3339_now, unix_ms_now};
use crate::metrics::LeaderView;

/// How often the leader looks at the heartbeats and plans placements if anything changed.
const PLACEMENT_INTERVAL: Duration = Duration::from_millis(100);
/// The heartbeats are looked at in full (and the node metrics renewed) at least this often.
const LOOK_AT_LEAST_EVERY: Duration = Duration::from_secs(1);
/// Plans are made at least this often even when nothing they depend on changed and no
/// rollout waits on the clock: a safety net, since the planner's inputs are fingerprinted.
const REPLAN_AT_LEAST_EVERY: Duration = Duration::from_secs(10);
/// How often the leader collects module blobs nothing refers to.
const GC_INTERVAL: Duration = Duration::from_secs(10);

/// Runs the leader's loops until the process stops.
pub async fn run(state: AppState) {
    let mut placement = Placement::default();
    // The term this member led in at the last look.
    let mut led_in = None;
    let mut last_gc = Instant::now();
    let mut ticker = tokio::time::interval(PLACEMENT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set when a plan left replicas for the next: that one is made at once, not a tick later.
    let mut again = false;
    loop {
        if !std::mem::take(&mut again) {
            ticker.tick().await;
        }
        let Some(status) = state.node.status().await else { return };
        let leader = status.role == StateRole::Leader;
        let term = leader.then_some(status.term);
        if term != led_in {
            led_in = term;
            state.scheduler_metrics.observe(None);
            placement = Placement::default();
        }
        state.heartbeats.set_leading(term);
        if !leader {
            continue;
        }
        again = placement.turn(&state).await;
        if last_gc.elapsed() >= GC_INTERVAL {
            last_gc = Instant::now();
            collect_blobs(&state).await;
            collect_expired_tokens(&state).await;
            collect_expired_events(&state).await;
        }
    }
}

/// The placement loop's memory between turns.
#[derive(Default)]
struct Placement {
    last_unplaced: Vec<Unplaced>,
    /// When the heartbeats were last looked at in full, and the applied index then.
    last_look: Option<(Instant, u64)>,
    /// The last plan that had nothing to do.
    idle: Option<Idle>,
}

struct Idle {
    /// Of the inputs it was planned from.
    fingerprint: u64,
    at: Instant,
    /// When the clock alone may change what planning finds ([`placement::Plan::revisit_at_ms`]).
    revisit_at_ms: Option<u64>,
}

impl Placement {
    /// One look and, if anything may have changed, one plan. Returns whether a plan was
    /// applied that left replicas for the next (which may then come at once).
    async fn turn(&mut self, state: &AppState) -> bool {
        let policy = state.config.node_health;
        let snapshot = match state.node.read(Consistency::Stale).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "placement: cannot read the state");
                return false;
            }
        };
        // When neither the state nor any node's verdict or instance report changed since the
        // last full look (the cheap pass of `look` tells), the turn ends here.
        let applied_index = snapshot.applied_index();
        let heartbeats_changed = state.heartbeats.look(&policy);
        let looked_recently = self.last_look.is_some_and(|(at, index)| index == applied_index && at.elapsed() < LOOK_AT_LEAST_EVERY);
        if !heartbeats_changed && looked_recently {
            return false;
        }
        self.last_look = Some((Instant::now(), applied_index));
        let now = rfc3339_now();
        let unix_ms = unix_ms_now();
        // Planning what was planned last time with nothing to do would find nothing again,
        // unless the clock moved past what a rollout waits for.
        let skip = self
            .idle
            .as_ref()
            .filter(|idle| idle.at.elapsed() < REPLAN_AT_LEAST_EVERY && idle.revisit_at_ms.is_none_or(|at| unix_ms < at))
            .map(|idle| idle.fingerprint);
        let observed = state.heartbeats.observe();
        let turn = tokio::task::spawn_blocking(move || {
            let (liveness, silence) = observed.liveness(&snapshot, policy);
            let nodes = liveness.health.iter().map(|(n, &h)| (n.clone(), (h, silence.get(n).copied().unwrap_or(0)))).collect();
            let fingerprint = liveness.fingerprint(snapshot.applied_index());
            let planned = (Some(fingerprint) != skip).then(|| {
                let started = Instant::now();
                let plan = placement::plan(&snapshot, &liveness, placement::Now { rfc3339: &now, unix_ms });
                (fingerprint, plan, started.elapsed())
            });
            (nodes, planned)
        })
        .await;
        let (nodes, planned) = match turn {
            Ok(turn) => turn,
            Err(e) => {
                tracing::error!(error = %e, "placement: the planner failed");
                return false;
            }
        };
        let metrics = &state.scheduler_metrics;
        let plan = planned.map(|(fingerprint, plan, took)| {
            metrics.plan_seconds.observe(took.as_secs_f64());
            self.idle = plan.commands.is_empty().then(|| Idle { fingerprint, at: Instant::now(), revisit_at_ms: plan.revisit_at_ms });
            if plan.unplaced != self.last_unplaced {
                for u in &plan.unplaced {
                    tracing::info!(workload = %u.workload, missing = u.missing, "placement: {}", u.reason);
                }
                self.last_unplaced = plan.unplaced.clone();
            }
            plan
        });
        metrics.observe(Some(LeaderView {
            nodes,
            pending_replicas: self.last_unplaced.iter().map(|u| u64::from(u.missing)).sum(),
            unplaced_workloads: self.last_unplaced.len() as u64,
        }));
        let Some(plan) = plan else { return false };
        if plan.commands.is_empty() {
            return false;
        }
        // Whatever becomes of these writes, the next turn looks and plans again.
        self.last_look = None;
        let writes = plan.commands.len();
        match state.node.write(Command::Transaction(plan.commands)).await {
            Ok(_) => {
                metrics.placed(&plan.placements);
                tracing::info!(writes, deferred = plan.deferred, "placement: applied");
                plan.deferred > 0
            }
            // A precondition failed (the state moved on) or no quorum: plan again next tick.
            Err(e) => {
                tracing::debug!(error = %e, "placement: not applied");
                false
            }
        }
    }
}

async fn collect_blobs(state: &AppState) {
    let Ok(snapshot) = state.node.read(Consistency::Stale).await else { return };
    let Ok(deletes) = tokio::task::spawn_blocking(move || gc::unreferenced_blobs(&snapshot)).await else { return };
    propose_deletes(state, deletes, "module blobs nothing refers to").await;
}

/// Deletes bootstrap tokens past their expiry (they are refused already; this keeps the
/// store from collecting them).
async fn collect_expired_tokens(state: &AppState) {
    let now = unix_ms_now();
    let deletes: Vec<Command> = state
        .node
        .latest()
        .list(crate::auth::BOOTSTRAP_TOKENS, None)
        .filter(|(_, o)| o.value.get("expiresAtMs").and_then(serde_json::Value::as_u64).is_some_and(|at| at <= now))
        .map(|(k, o)| Command::Delete { key: k.clone(), precondition: edgeplane_core::Precondition::ResourceVersion(o.resource_version) })
        .collect();
    propose_deletes(state, deletes, "expired bootstrap tokens").await;
}

/// Deletes Events past their time to live, and the oldest beyond the bound.
async fn collect_expired_events(state: &AppState) {
    let Ok(snapshot) = state.node.read(Consistency::Stale).await else { return };
    let cutoff = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(edgeplane_core::events::TTL_SECONDS as i64))
        .map_or_else(|_| String::new(), |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    let Ok(deletes) = tokio::task::spawn_blocking(move || edgeplane_core::events::expired(&snapshot, &cutoff)).await else { return };
    propose_deletes(state, deletes, "expired events").await;
}

/// Proposes a collection's conditional deletes as one transaction. One that loses to a
/// concurrent write (or finds no quorum) is simply collected again on the next round.
async fn propose_deletes(state: &AppState, deletes: Vec<Command>, what: &str) {
    if deletes.is_empty() {
        return;
    }
    let count = deletes.len();
    match state.node.write(Command::Transaction(deletes)).await {
        Ok(_) => tracing::info!(count, "deleted {what}"),
        Err(e) => tracing::debug!(error = %e, "deleting {what} not applied; trying again later"),
    }
}
