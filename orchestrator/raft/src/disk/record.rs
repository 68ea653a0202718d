//! The bytes of the Raft log's segment files: pure encoding and decoding, no IO.
//!
//! A segment is [`MAGIC`] followed by records. A record is one [`WriteBatch`]:
//!
//! ```text
//! record := payload length (u32 LE) · CRC-32 of the payload (u32 LE) · payload
//! payload := field*      field := tag (u8) · body length (u32 LE) · body
//! ```
//!
//! Bodies are raft-rs's protobuf messages, except the compaction mark (index and term, u64 LE
//! each). Fields come in [`WriteBatch`]'s order, so a record means exactly what
//! `LogState::apply` says the batch means. Snapshots' data never enters a record (it lives in
//! snapshot files); records carry their metadata only.

use protobuf::Message;
use raft::prelude::{ConfState, HardState, Snapshot, SnapshotMetadata};

use crate::storage::WriteBatch;

/// The first bytes of every segment file: the format and its version.
pub const MAGIC: &[u8; 8] = b"EPRLOG\x00\x01";

/// Bytes before a record's payload: its length and its checksum.
pub const HEADER_BYTES: usize = 8;

const RECEIVED_SNAPSHOT: u8 = 1;
const ENTRY: u8 = 2;
const HARD_STATE: u8 = 3;
const CONF_STATE: u8 = 4;
const OWN_SNAPSHOT: u8 = 5;
const COMPACT_THROUGH: u8 = 6;

/// Appends `batch` to `out` as one record.
pub fn encode(out: &mut Vec<u8>, batch: &WriteBatch) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    if let Some(snapshot) = &batch.snapshot {
        message(out, RECEIVED_SNAPSHOT, snapshot.get_metadata());
    }
    for entry in &batch.entries {
        message(out, ENTRY, entry);
    }
    if let Some(hs) = &batch.hard_state {
        message(out, HARD_STATE, hs);
    }
    if let Some(cs) = &batch.conf_state {
        message(out, CONF_STATE, cs);
    }
    if let Some(snapshot) = &batch.own_snapshot {
        message(out, OWN_SNAPSHOT, snapshot.get_metadata());
    }
    if let Some((index, term)) = batch.compact_through {
        out.push(COMPACT_THROUGH);
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&index.to_le_bytes());
        out.extend_from_slice(&term.to_le_bytes());
    }
    let payload = &out[start + HEADER_BYTES..];
    let length = u32::try_from(payload.len()).expect("a batch is far below 4 GiB");
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..start + HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
}

fn message(out: &mut Vec<u8>, tag: u8, m: &impl Message) {
    out.push(tag);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    m.write_to_vec(out).expect("raft messages always encode");
    let length = u32::try_from(out.len() - at - 4).expect("a message is far below 4 GiB");
    out[at..at + 4].copy_from_slice(&length.to_le_bytes());
}

/// What is wrong with the bytes at some offset of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// The record runs past the end of the file: a write the process did not finish.
    #[error("a record runs past the end of the file")]
    Truncated,
    #[error("a record's checksum does not match its bytes")]
    Checksum,
    /// The checksum matched, yet the fields do not parse: written by something else.
    #[error("a record's fields do not decode")]
    Malformed,
}

/// The next record in `bytes`: its batch and its length in bytes. `None` at the end.
pub fn next(bytes: &[u8]) -> Option<Result<(WriteBatch, usize), Damage>> {
    if bytes.is_empty() {
        return None;
    }
    let Some(header) = bytes.get(..HEADER_BYTES) else { return Some(Err(Damage::Truncated)) };
    let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    let Some(payload) = bytes.get(HEADER_BYTES..HEADER_BYTES + length) else { return Some(Err(Damage::Truncated)) };
    if crc32fast::hash(payload) != crc {
        return Some(Err(Damage::Checksum));
    }
    Some(decode(payload).map(|batch| (batch, HEADER_BYTES + length)).ok_or(Damage::Malformed))
}

/// Whether the record at the start of `bytes` claims to end at or past the end of `bytes`:
/// whether it is the last one.
pub fn ends_at_or_past(bytes: &[u8]) -> bool {
    match bytes.get(..4) {
        Some(length) => HEADER_BYTES + u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize >= bytes.len(),
        None => true,
    }
}

fn decode(mut payload: &[u8]) -> Option<WriteBatch> {
    let mut batch = WriteBatch::default();
    while let [tag, rest @ ..] = payload {
        let length = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let body = rest.get(4..4 + length)?;
        payload = &rest[4 + length..];
        match *tag {
            RECEIVED_SNAPSHOT => batch.snapshot = Some(snapshot_of(parse(body)?)),
            ENTRY => batch.entries.push(parse(body)?),
            HARD_STATE => batch.hard_state = Some(parse::<HardState>(body)?),
            CONF_STATE => batch.conf_state = Some(parse::<ConfState>(body)?),
            OWN_SNAPSHOT => batch.own_snapshot = Some(snapshot_of(parse(body)?)),
            COMPACT_THROUGH => {
                let (index, term) = body.split_at_checked(8)?;
                batch.compact_through = Some((u64::from_le_bytes(index.try_into().ok()?), u64::from_le_bytes(term.try_into().ok()?)));
            }
            _ => return None,
        }
    }
    // Entries of one batch are consecutive; anything else was not written by `encode`.
    let consecutive = batch.entries.windows(2).all(|w| w[1].index == w[0].index + 1);
    consecutive.then_some(batch)
}

fn parse<M: Message>(body: &[u8]) -> Option<M> {
    M::parse_from_bytes(body).ok()
}

fn snapshot_of(metadata: SnapshotMetadata) -> Snapshot {
    let mut snapshot = Snapshot::default();
    snapshot.set_metadata(metadata);
    snapshot
}

#[cfg(test)]
mod tests {
    use raft::prelude::Entry;

    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry { index, term, data: data.to_vec().into(), context: b"ctx".to_vec().into(), ..Default::default() }
    }

    fn every_field() -> WriteBatch {
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 7;
        snapshot.mut_metadata().term = 2;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        snapshot.data = b"never in a record".to_vec().into();
        WriteBatch {
            snapshot: Some(snapshot.clone()),
            entries: vec![entry(8, 2, b"a"), entry(9, 3, &[0; 300])],
            hard_state: Some(HardState { term: 3, vote: 2, commit: 8, ..Default::default() }),
            conf_state: Some(ConfState { voters: vec![1, 2], learners: vec![3], ..Default::default() }),
            own_snapshot: Some(snapshot),
            compact_through: Some((u64::MAX, 1 << 40)),
        }
    }

    #[test]
    fn a_record_decodes_to_its_batch_without_snapshot_data() {
        let batch = every_field();
        let mut bytes = b"prefix".to_vec();
        encode(&mut bytes, &batch);
        encode(&mut bytes, &WriteBatch { hard_state: Some(HardState::default()), ..Default::default() });
        let (decoded, used) = next(&bytes[6..]).expect("a record").expect("intact");
        assert_eq!(decoded.entries, batch.entries);
        assert_eq!(
            (&decoded.hard_state, &decoded.conf_state, decoded.compact_through),
            (&batch.hard_state, &batch.conf_state, batch.compact_through)
        );
        for got in [&decoded.snapshot, &decoded.own_snapshot] {
            let got = got.as_ref().expect("snapshot metadata");
            assert_eq!(got.get_metadata(), batch.own_snapshot.as_ref().expect("set").get_metadata());
            assert!(got.data.is_empty(), "snapshot data stays out of records");
        }
        let (second, rest) = next(&bytes[6 + used..]).expect("a second record").expect("intact");
        assert_eq!((second.hard_state, second.entries.len()), (Some(HardState::default()), 0));
        assert!(next(&bytes[6 + used + rest..]).is_none(), "nothing after the last record");
    }

    /// Every prefix of a record is a torn write, and every flipped bit is caught.
    #[test]
    fn torn_and_flipped_records_are_told_apart_from_good_ones() {
        let mut bytes = Vec::new();
        encode(&mut bytes, &every_field());
        for cut in 1..bytes.len() {
            assert_eq!(next(&bytes[..cut]).expect("not empty").err(), Some(Damage::Truncated), "cut at {cut}");
        }
        for at in HEADER_BYTES..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            assert_eq!(next(&flipped).expect("not empty").err(), Some(Damage::Checksum), "bit flipped at {at}");
        }
    }

    #[test]
    fn a_checksummed_payload_that_is_not_ours_is_malformed() {
        for payload in [&[9u8, 0, 0, 0, 0][..], &[ENTRY, 200, 0, 0, 0, 1], &[COMPACT_THROUGH, 3, 0, 0, 0, 1, 2, 3]] {
            let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
            bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            bytes.extend_from_slice(payload);
            assert_eq!(next(&bytes).expect("not empty").err(), Some(Damage::Malformed), "{payload:?}");
        }
        let mut gap = Vec::new();
        encode(&mut gap, &WriteBatch { entries: vec![entry(1, 1, b"a"), entry(3, 1, b"c")], ..Default::default() });
        assert_eq!(next(&gap).expect("not empty").err(), Some(Damage::Malformed), "entries of a batch are consecutive");
    }
}
