//! The segment files' frames: encoding, decoding, and reading them back past corruption.
//!
//! Frame: `u32 len, u32 crc32(payload), payload`. With a storage key the payload is sealed
//! ([`crate::storage`], nonce, ciphertext, tag) and bit 31 of `len` ([`SEALED`]) says so; the
//! checksum is over the sealed bytes, so resynchronising after damage works the same. Plain
//! payload: `u64 index, u64 seq, u64
//! generation, u64 produced_ms, u32 readings, u8 kind, 4 x (u16 len, UTF-8) stream, namespace,
//! workload, output`, then the data. Bit 7 of `kind` ([`WITH_MODEL`]) says a fifth name, the
//! Model version, follows the four; records without one keep the original layout, which older
//! segments were written in.
//!
//! Reading resynchronises after a bad frame: it looks for the next offset where a frame with
//! a valid checksum, a decodable payload and a higher index starts, so one damaged record
//! does not take the valid ones after it along, and the reader learns how many records the
//! damage covers (the gap in indices).

use std::sync::Arc;

use super::{DataKind, OutRecord, Stored};
use crate::storage::StorageKey;

/// Set in a frame's kind byte when the Model version follows the names.
const WITH_MODEL: u8 = 0x80;
const HEADER: usize = 8;
/// Set in a frame's length when its payload is sealed.
const SEALED: u32 = 1 << 31;
/// What a sealed payload is, bound into its tag.
const AAD: &[u8] = b"edgeplane outbox record v1";

/// How frames are protected at rest: with the node's storage key, every frame from index
/// `from` on is sealed (frames before it may be plain: written before the node had a key);
/// without one, frames are plain and a sealed one cannot be read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sealing {
    pub key: Option<Arc<StorageKey>>,
    pub from: u64,
}

/// Appends one record's frame to `buf`, sealed when there is a key.
pub(super) fn encode(buf: &mut Vec<u8>, index: u64, seq: u64, r: &OutRecord, sealing: &Sealing) {
    let Some(key) = &sealing.key else { return encode_plain(buf, index, seq, r) };
    let mut plain = Vec::with_capacity(r.data.len() + 128);
    encode_plain(&mut plain, index, seq, r);
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    key.seal_into(buf, &plain[HEADER..], AAD);
    let payload_len = (buf.len() - start - HEADER) as u32;
    let crc = crc32fast::hash(&buf[start + HEADER..]);
    buf[start..start + 4].copy_from_slice(&(payload_len | SEALED).to_le_bytes());
    buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

fn encode_plain(buf: &mut Vec<u8>, index: u64, seq: u64, r: &OutRecord) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    for n in [index, seq, r.generation, r.produced_ms] {
        buf.extend_from_slice(&n.to_le_bytes());
    }
    buf.extend_from_slice(&r.readings.to_le_bytes());
    let kind = match r.kind {
        DataKind::Readings => 0,
        DataKind::Opaque => 1,
    };
    buf.push(if r.model.is_some() { kind | WITH_MODEL } else { kind });
    let stream = r.stream.to_string();
    // Names come from validated resources: DNS names, and versions of at most 128 bytes.
    for s in [stream.as_str(), &r.namespace, &r.workload, &r.output].into_iter().chain(r.model.as_deref()) {
        buf.extend_from_slice(&(s.len() as u16).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
    buf.extend_from_slice(&r.data);
    let payload_len = (buf.len() - start - HEADER) as u32;
    let crc = crc32fast::hash(&buf[start + HEADER..]);
    buf[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// Why a payload is not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

pub(super) fn decode(payload: &[u8]) -> Result<Stored, DecodeError> {
    let mut at = 0;
    let mut take = |n: usize| -> Result<&[u8], DecodeError> {
        let bytes = payload.get(at..at + n).ok_or_else(|| DecodeError("truncated record".to_owned()))?;
        at += n;
        Ok(bytes)
    };
    let mut u64s = [0u64; 4];
    for n in &mut u64s {
        *n = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
    }
    let readings = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
    let kind_byte = take(1)?[0];
    let kind = match kind_byte & !WITH_MODEL {
        0 => DataKind::Readings,
        1 => DataKind::Opaque,
        k => return Err(DecodeError(format!("unknown record kind {k}"))),
    };
    let mut name = || -> Result<String, DecodeError> {
        let len = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
        String::from_utf8(take(len)?.to_vec()).map_err(|_| DecodeError("a name is not UTF-8".to_owned()))
    };
    let (stream, namespace, workload, output) = (name()?, name()?, name()?, name()?);
    let model = if kind_byte & WITH_MODEL != 0 { Some(name()?) } else { None };
    let stream = stream.parse().map_err(DecodeError)?;
    let data = payload[at..].to_vec();
    let [index, seq, generation, produced_ms] = u64s;
    Ok(Stored {
        index,
        seq,
        record: OutRecord { stream, namespace, workload, output, generation, model, produced_ms, readings, kind, data },
    })
}

/// One readable frame of a segment.
#[derive(Debug)]
pub(super) struct Frame {
    /// Where the frame starts and ends in the file.
    pub start: usize,
    pub end: usize,
    pub record: Stored,
}

/// The payload of a well-formed frame at `at` (checksum right), whether it is sealed, and
/// where the next frame starts.
fn frame_at(buf: &[u8], at: usize) -> Option<(&[u8], bool, usize)> {
    let header = buf.get(at..at.checked_add(HEADER)?)?;
    let len_field = u32::from_le_bytes(header[..4].try_into().ok()?);
    let len = (len_field & !SEALED) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let payload = buf.get(at + HEADER..(at + HEADER).checked_add(len)?)?;
    (crc32fast::hash(payload) == crc).then_some((payload, len_field & SEALED != 0, at + HEADER + len))
}

/// The readable frames of a segment whose first record has index `first`, in order, skipping
/// damage. Iteration ends at the file's end or at damage with nothing readable after it.
pub(super) struct Frames<'a> {
    buf: &'a [u8],
    sealing: &'a Sealing,
    at: usize,
    /// The index the next frame should have.
    expected: u64,
    /// Records known lost to damage so far: the gaps in indices between readable frames.
    pub skipped: u64,
    /// Well-formed sealed frames met without a key: the outbox was written with one.
    pub sealed_without_key: bool,
}

impl<'a> Frames<'a> {
    pub fn new(buf: &'a [u8], first: u64, sealing: &'a Sealing) -> Frames<'a> {
        Frames { buf, sealing, at: 0, expected: first, skipped: 0, sealed_without_key: false }
    }

    /// A frame that reads: intact, sealed where it must be, and past the last one read. A
    /// plain frame from the key's `from` on is refused: only damage or forgery puts it there.
    fn readable(&mut self, at: usize) -> Option<(Stored, usize)> {
        let (payload, sealed, next) = frame_at(self.buf, at)?;
        let record = match (sealed, &self.sealing.key) {
            (true, Some(key)) => decode(&key.open(payload, AAD)?).ok()?,
            (true, None) => {
                self.sealed_without_key = true;
                return None;
            }
            (false, key) => decode(payload).ok().filter(|r| key.is_none() || r.index < self.sealing.from)?,
        };
        (record.index >= self.expected).then_some((record, next))
    }
}

impl Iterator for Frames<'_> {
    type Item = Frame;

    fn next(&mut self) -> Option<Frame> {
        if self.at >= self.buf.len() {
            return None;
        }
        let found = self.readable(self.at).map(|r| (self.at, r)).or_else(|| {
            // Damage: find the next frame that reads, if any.
            (self.at + 1..self.buf.len()).find_map(|at| self.readable(at).map(|r| (at, r)))
        });
        let (start, (record, end)) = found?;
        self.skipped += record.index - self.expected;
        self.expected = record.index + 1;
        self.at = end;
        Some(Frame { start, end, record })
    }
}
