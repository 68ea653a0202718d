//! The audit log's part of the replicated state: the chain's head and its most recent
//! records.
//!
//! A mutating request's record is written by the same log entry as its write
//! ([`crate::Command::Audited`]), with the outcome the state machine decided, so a write and
//! its record exist together or not at all; refusals that wrote nothing come in batches
//! ([`crate::Command::Audit`]). The state keeps the last [`AUDIT_WINDOW`] records; each
//! orchestrator appends every record to its own archive on disk as it applies it, and serves
//! the whole history from there.

use std::sync::Arc;

use edgeplane_api::audit::{AuditEvent, AuditHead, AuditRecord, GENESIS};
use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::ApplyError;

/// Records the replicated state keeps (about 300 bytes each).
pub const AUDIT_WINDOW: usize = 50_000;

#[derive(Debug, Clone, PartialEq)]
pub struct AuditLog {
    head: AuditHead,
    records: OrdMap<u64, Arc<AuditRecord>>,
}

impl Default for AuditLog {
    fn default() -> Self {
        AuditLog { head: AuditHead { seq: 0, hash: GENESIS.to_owned() }, records: OrdMap::new() }
    }
}

impl AuditLog {
    /// Chains `event` on and returns its sequence number.
    pub(crate) fn append(&mut self, event: AuditEvent) -> u64 {
        let seq = self.head.seq + 1;
        let record = AuditRecord::chained(seq, &self.head.hash, event);
        self.head = AuditHead { seq, hash: record.hash.clone() };
        self.records.insert(seq, Arc::new(record));
        while self.records.len() > AUDIT_WINDOW {
            let Some(oldest) = self.records.get_min().map(|(seq, _)| *seq) else { break };
            self.records.remove(&oldest);
        }
        seq
    }

    /// The last record's sequence number and hash.
    pub fn head(&self) -> &AuditHead {
        &self.head
    }

    /// Up to `limit` records after `seq`, oldest first; empty once past the head. The first
    /// one returned may be later than `seq + 1` when those records have left the window.
    pub fn after(&self, seq: u64, limit: usize) -> Vec<Arc<AuditRecord>> {
        self.records.range(seq + 1..).take(limit).map(|(_, r)| r.clone()).collect()
    }

    /// The oldest record the state still holds.
    pub fn first_seq(&self) -> Option<u64> {
        self.records.get_min().map(|(seq, _)| *seq)
    }

    pub(crate) fn image(&self) -> AuditImage {
        AuditImage { head: self.head.clone(), records: self.records.values().map(|r| AuditRecord::clone(r)).collect() }
    }

    pub(crate) fn from_image(image: AuditImage) -> AuditLog {
        // Snapshots from before the audit log have no head: the chain starts at genesis.
        let head = if image.head.seq == 0 { AuditHead { seq: 0, hash: GENESIS.to_owned() } } else { image.head };
        AuditLog { head, records: image.records.into_iter().map(|r| (r.seq, Arc::new(r))).collect() }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AuditImage {
    head: AuditHead,
    records: Vec<AuditRecord>,
}

/// Completes a write's event with what the state machine decided.
pub(crate) fn settle(mut event: AuditEvent, result: &Result<crate::Applied, ApplyError>) -> AuditEvent {
    match result {
        Ok(applied) => {
            if event.code == 0 {
                event.code = match applied {
                    crate::Applied::Put { created: true, .. } => 201,
                    _ => 200,
                };
            }
            event.outcome = "applied".to_owned();
        }
        Err(e) => {
            let (code, reason) = match e {
                ApplyError::NotFound { .. } => (404, "NotFound"),
                ApplyError::AlreadyExists { .. } => (409, "AlreadyExists"),
                ApplyError::Conflict { .. } => (409, "Conflict"),
                ApplyError::Expired { .. } => (504, "Expired"),
                ApplyError::Undecodable { .. } => (500, "Undecodable"),
                ApplyError::Refused { .. } => (403, "Refused"),
            };
            event.code = code;
            event.outcome = format!("{reason}: {e}");
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use edgeplane_api::audit::AuditEvent;

    use crate::{ClusterState, Command, ObjectKey, Precondition};

    fn event(id: &str) -> Box<AuditEvent> {
        Box::new(AuditEvent {
            time: "2026-01-01T00:00:00.000Z".into(),
            request_id: id.into(),
            server: 1,
            user: "alice".into(),
            groups: Vec::new(),
            source: "127.0.0.1".into(),
            method: "PATCH".into(),
            path: "/x".into(),
            code: 0,
            outcome: String::new(),
        })
    }

    fn apply(state: &mut ClusterState, command: Command) {
        let index = state.applied_index() + 1;
        state.apply_entry(index, &command.encode(), None).expect("entry").ok();
    }

    /// A write that loses a compare-and-swap and will be retried leaves no record; the retry
    /// does, and a conflict that is the request's outcome does too. Before, a PATCH that lost
    /// one race had two records (the end-to-end audit test saw it).
    #[test]
    fn a_conflict_the_request_retries_is_not_recorded() {
        let mut state = ClusterState::default();
        let key = ObjectKey::new("notes", "", "n");
        let stale = || Command::Put { key: key.clone(), value: serde_json::json!(2), precondition: Precondition::ResourceVersion(99) };
        apply(&mut state, Command::Put { key: key.clone(), value: serde_json::json!(1), precondition: Precondition::None });
        apply(&mut state, Command::Audited { event: event("a"), command: Box::new(stale()), retried_on_conflict: true });
        assert_eq!(state.audit().head().seq, 0, "the lost race was recorded");
        apply(&mut state, Command::Audited { event: event("a"), command: Box::new(stale()), retried_on_conflict: false });
        assert_eq!(state.audit().head().seq, 1, "a conflict that ends the request is recorded");
        let fresh = Command::Put { key: key.clone(), value: serde_json::json!(3), precondition: Precondition::None };
        apply(&mut state, Command::Audited { event: event("b"), command: Box::new(fresh), retried_on_conflict: true });
        assert_eq!(state.audit().head().seq, 2, "the retry that applied is recorded");
    }
}
