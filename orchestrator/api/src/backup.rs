//! Backups of the control plane: what a backup says about itself, and what the cluster reports
//! about the last one it took.
//!
//! `GET /v1/backup` answers with one line of JSON, a [`BackupInfo`], then the state it
//! describes (the replicated state machine's snapshot encoding). `edgectl backup create` seals
//! that into a backup file (`edgeplane_tls::backup`) with the operator's backup key; the
//! orchestrators' scheduled backups write the same files. `orchestrator restore` reads one back.

use serde::{Deserialize, Serialize};

/// The version of [`BackupInfo`] and of what follows it.
pub const BACKUP_FORMAT: u32 = 1;

/// The header of a backup: where in the log the state was taken, and a checksum of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupInfo {
    pub format: u32,
    /// When the member read the state (its clock, ms since the Unix epoch).
    pub created_at_ms: u64,
    /// The member that served it.
    pub member: u64,
    /// The log index the state is at: every write committed at or before it is in the backup.
    pub index: u64,
    /// The member's term when it read the state.
    pub term: u64,
    /// Objects in the state (resources, modules' blobs, credentials, ...).
    pub objects: u64,
    /// Length and sha256 (hex) of the state.
    pub state_bytes: u64,
    pub state_sha256: String,
}

impl BackupInfo {
    /// Describes `state`, taken at `index` in `term` by `member` at `created_at_ms`.
    pub fn describe(state: &[u8], index: u64, term: u64, objects: u64, member: u64, created_at_ms: u64) -> BackupInfo {
        BackupInfo {
            format: BACKUP_FORMAT,
            created_at_ms,
            member,
            index,
            term,
            objects,
            state_bytes: state.len() as u64,
            state_sha256: crate::hex::sha256(state),
        }
    }

    /// Whether `state` is the state this header describes.
    pub fn check(&self, state: &[u8]) -> Result<(), String> {
        if self.format != BACKUP_FORMAT {
            return Err(format!("backup format {} is not the one this build reads ({BACKUP_FORMAT})", self.format));
        }
        if state.len() as u64 != self.state_bytes {
            return Err(format!("the state is {} bytes, the header says {}", state.len(), self.state_bytes));
        }
        let sha = crate::hex::sha256(state);
        if sha != self.state_sha256 {
            return Err(format!("the state's sha256 is {sha}, the header says {}", self.state_sha256));
        }
        Ok(())
    }

    /// Splits a `GET /v1/backup` answer into its header and the state.
    pub fn split(answer: &[u8]) -> Result<(BackupInfo, &[u8]), String> {
        let end = answer.iter().position(|b| *b == b'\n').ok_or("the answer has no header line")?;
        let info: BackupInfo = serde_json::from_slice(&answer[..end]).map_err(|e| format!("the header line: {e}"))?;
        let state = &answer[end + 1..];
        info.check(state)?;
        Ok((info, state))
    }
}

/// The last scheduled backup a member took, kept in the replicated store (kind
/// [`LAST_BACKUP_KIND`], named after the member) so that every member reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    pub member: u64,
    /// The file, as the member named it.
    pub path: String,
    pub created_at_ms: u64,
    pub index: u64,
    pub objects: u64,
    pub file_bytes: u64,
    pub duration_ms: u64,
}

/// Store kind of [`LastBackup`] records.
pub const LAST_BACKUP_KIND: &str = "backups";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_splits_into_a_header_and_the_state_it_checks() {
        let info = BackupInfo::describe(b"{\"state\":1}", 42, 3, 1, 2, 1_000);
        let mut answer = serde_json::to_vec(&info).expect("json");
        answer.push(b'\n');
        answer.extend_from_slice(b"{\"state\":1}");
        let (read, state) = BackupInfo::split(&answer).expect("splits");
        assert_eq!((read, state), (info.clone(), &b"{\"state\":1}"[..]));
        let mut changed = answer.clone();
        *changed.last_mut().expect("a byte") = b']';
        assert!(BackupInfo::split(&changed).expect_err("changed").contains("sha256"));
        assert!(BackupInfo::split(&answer[..answer.len() - 1]).expect_err("cut").contains("bytes"));
        let future = BackupInfo { format: 2, ..info };
        assert!(future.check(b"{\"state\":1}").expect_err("newer").contains("format 2"));
    }
}
