//! The audit log: one record for every mutating request and every refused one, hash-chained.
//!
//! Record `n` carries the hash of record `n - 1` and its own hash over that, its sequence
//! number and its event ([`chain_hash`]). Editing, removing or reordering any record changes
//! every hash after it, so a verifier that knows the chain's last hash (replicated through
//! Raft) finds the first record that was touched. `GET /v1/audit?after=N&limit=M` pages
//! through the log as [`AuditPage`]; `edgectl audit verify` walks it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const AUDIT: &str = "/v1/audit";

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened: who asked what, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditEvent {
    /// When the request arrived (RFC 3339, the accepting orchestrator's clock).
    pub time: String,
    /// The `X-Request-Id` the answer carried.
    pub request_id: String,
    /// The orchestrator that took the request.
    pub server: u64,
    /// Who: a user, `system:node:<name>`, `system:serviceaccount:<ns>:<name>`, or
    /// `system:anonymous`.
    pub user: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The client's address.
    pub source: String,
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The HTTP status of the answer.
    pub code: u16,
    /// `applied`, or why not (`Forbidden: ...`, `Conflict`, ...).
    pub outcome: String,
}

/// An event in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditRecord {
    /// 1, 2, 3, ... without gaps.
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
    pub event: AuditEvent,
}

impl AuditRecord {
    /// The record following `prev_hash` at `seq`.
    pub fn chained(seq: u64, prev_hash: &str, event: AuditEvent) -> AuditRecord {
        let hash = chain_hash(prev_hash, seq, &event);
        AuditRecord { seq, prev_hash: prev_hash.to_owned(), hash, event }
    }
}

/// `sha256(prev_hash "\n" seq "\n" event-as-JSON)`, lowercase hex.
pub fn chain_hash(prev_hash: &str, seq: u64, event: &AuditEvent) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(format!("\n{seq}\n").as_bytes());
    hasher.update(serde_json::to_vec(event).expect("audit events serialize"));
    crate::hex::encode(&hasher.finalize())
}

/// The last record of the chain, as the replicated state knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
}

/// A page of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// The chain's head in the replicated state when the page was read.
    pub head: AuditHead,
}

/// Where a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub seq: u64,
    pub why: String,
}

/// Checks `records` (in order, starting after `prev` = `(seq, hash)`) link up and hash right;
/// returns the new `(seq, hash)` or the first broken record.
pub fn verify(prev: (u64, &str), records: &[AuditRecord]) -> Result<(u64, String), Broken> {
    let (mut seq, mut hash) = (prev.0, prev.1.to_owned());
    for record in records {
        if record.seq != seq + 1 {
            return Err(Broken { seq: record.seq, why: format!("expected record {} next, found {}", seq + 1, record.seq) });
        }
        if record.prev_hash != hash {
            return Err(Broken { seq: record.seq, why: "it does not follow the record before it (previous hash differs)".to_owned() });
        }
        let computed = chain_hash(&record.prev_hash, record.seq, &record.event);
        if computed != record.hash {
            return Err(Broken { seq: record.seq, why: "its contents do not match its hash: it was edited".to_owned() });
        }
        seq = record.seq;
        hash = computed;
    }
    Ok((seq, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> AuditEvent {
        AuditEvent {
            time: format!("2026-12-02T10:00:{n:02}Z"),
            request_id: format!("r{n}"),
            server: 1,
            user: "alice".into(),
            groups: vec!["ops".into()],
            source: "127.0.0.1".into(),
            method: "POST".into(),
            path: "/apis/edgeplane.io/v1alpha1/namespaces/default/workloads".into(),
            code: 201,
            outcome: "applied".into(),
        }
    }

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut records: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let prev = records.last().map_or(GENESIS.to_owned(), |r| r.hash.clone());
            records.push(AuditRecord::chained(seq, &prev, event(seq)));
        }
        records
    }

    #[test]
    fn an_intact_chain_verifies_and_any_edit_names_its_record() {
        let records = chain(5);
        assert_eq!(verify((0, GENESIS), &records).map(|(seq, _)| seq), Ok(5));

        let mut edited = records.clone();
        edited[2].event.code = 200;
        assert_eq!(verify((0, GENESIS), &edited).map_err(|b| b.seq), Err(3));

        // Rehashing the edited record is caught at the next one.
        let mut rehashed = edited.clone();
        rehashed[2].hash = chain_hash(&rehashed[2].prev_hash, 3, &rehashed[2].event);
        assert_eq!(verify((0, GENESIS), &rehashed).map_err(|b| b.seq), Err(4));

        let mut removed = records.clone();
        removed.remove(1);
        assert_eq!(verify((0, GENESIS), &removed).map_err(|b| b.seq), Err(3));
    }
}
