//! The data plane's wire types: sensor readings, the binary batch format, and what the cloud
//! sink receives from edge runtimes and serves to `edgectl data`.
//!
//! - Readings travel between producers, edge runtimes and workloads in the **v1 batch
//!   format** ([`encode_batch`], [`decode_batch`]), the same bytes the guest ABI uses
//!   (docs/abi.md), so a binary ingest batch reaches a workload without being re-encoded.
//! - `POST /v1/nodes/{name}/data` ([`upload_path`]) with `Authorization: Bearer <node token>`
//!   and an [`UploadRequest`]: records from a node's outbox. Each record carries its stream's
//!   sequence number; the orchestrators keep the highest one seen per (node, stream) and drop
//!   anything at or below it, so a node may send a record any number of times
//!   (at-least-once delivery, exactly-once storage). Answered with an [`UploadResponse`] once
//!   the records are committed.
//! - `GET /v1/data` ([`DATA`], [`DataQuery`]): stored records, oldest first, from a cursor;
//!   answered with a [`DataPage`].

use serde::{Deserialize, Serialize};

/// Stored records, queried with [`DataQuery`].
pub const DATA: &str = "/v1/data";

/// Path where a node uploads its outbox.
pub fn upload_path(node: &str) -> String {
    format!("/v1/nodes/{node}/data")
}

/// One sensor reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reading {
    /// Milliseconds since the Unix epoch, as the producer stamped it.
    pub ts: u64,
    pub device: String,
    pub metric: String,
    pub value: f64,
}

/// Why bytes are not a v1 batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError(pub String);

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed batch: {}", self.0)
    }
}

impl std::error::Error for BatchError {}

/// Longest device or metric name, in bytes (the format's u16 length would allow more).
pub const MAX_NAME_LEN: usize = 256;

/// Encodes readings in the v1 batch format:
/// `u32 count`, then per reading `u64 ts, f64 value, u16 len + device, u16 len + metric`,
/// all little-endian.
pub fn encode_batch(readings: &[Reading]) -> Vec<u8> {
    let size = 4 + readings.iter().map(|r| 20 + r.device.len() + r.metric.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(readings.len() as u32).to_le_bytes());
    for r in readings {
        out.extend_from_slice(&r.ts.to_le_bytes());
        out.extend_from_slice(&r.value.to_le_bytes());
        for name in [&r.device, &r.metric] {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
    }
    out
}

/// Checks a v1 batch without decoding it and returns its reading count: the fast path of
/// binary ingest, which hands the bytes on as they are. Values must be finite: NaN and
/// infinities have no JSON form, so the cloud could never store them.
pub fn validate_batch(bytes: &[u8]) -> Result<u32, BatchError> {
    // Batches are checked at ingest and again between chained workloads, millions of
    // readings a second: a lean pass first, and the pass that says what is wrong only for a
    // batch the lean one refuses.
    scan_batch(bytes).map_or_else(|| explain_batch(bytes), Ok)
}

/// [`validate_batch`]'s verdict without the reasons: the reading count of a valid batch.
fn scan_batch(bytes: &[u8]) -> Option<u32> {
    let count = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    let mut at = 4usize;
    for _ in 0..count {
        let value = f64::from_le_bytes(bytes.get(at + 8..at + 16)?.try_into().ok()?);
        if !value.is_finite() {
            return None;
        }
        at += 16;
        for _ in ["device", "metric"] {
            let len = usize::from(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
            let name = bytes.get(at + 2..at + 2 + len)?;
            // Names are short and nearly always ASCII, which needs no UTF-8 decoding.
            if len == 0 || len > MAX_NAME_LEN || (!name.is_ascii() && std::str::from_utf8(name).is_err()) {
                return None;
            }
            at += 2 + len;
        }
    }
    (at == bytes.len()).then_some(count)
}

/// [`validate_batch`] reading by reading, saying where and why a batch is refused.
fn explain_batch(bytes: &[u8]) -> Result<u32, BatchError> {
    let mut cursor = Cursor { bytes, at: 0 };
    let count = cursor.u32()?;
    for i in 0..count {
        cursor.skip(8).map_err(|e| BatchError(format!("reading {i}: {}", e.0)))?;
        let value =
            f64::from_le_bytes(cursor.take(8).map_err(|e| BatchError(format!("reading {i}: {}", e.0)))?.try_into().expect("8 bytes"));
        if !value.is_finite() {
            return Err(BatchError(format!("reading {i}: value is {value}; readings must be finite numbers")));
        }
        for what in ["device", "metric"] {
            let name = cursor.name().map_err(|e| BatchError(format!("reading {i} {what}: {}", e.0)))?;
            if name.is_empty() {
                return Err(BatchError(format!("reading {i}: empty {what}")));
            }
        }
    }
    if cursor.at != bytes.len() {
        return Err(BatchError(format!("{} bytes after the last reading", bytes.len() - cursor.at)));
    }
    Ok(count)
}

/// Decodes a v1 batch.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Reading>, BatchError> {
    let count = validate_batch(bytes)?;
    let mut cursor = Cursor { bytes, at: 4 };
    let mut readings = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let ts = u64::from_le_bytes(cursor.take(8)?.try_into().expect("8 bytes"));
        let value = f64::from_le_bytes(cursor.take(8)?.try_into().expect("8 bytes"));
        let device = cursor.name()?.to_owned();
        let metric = cursor.name()?.to_owned();
        readings.push(Reading { ts, device, metric, value });
    }
    Ok(readings)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| BatchError(format!("truncated at byte {}", self.at)))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn skip(&mut self, n: usize) -> Result<(), BatchError> {
        self.take(n).map(drop)
    }

    fn u32(&mut self) -> Result<u32, BatchError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn name(&mut self) -> Result<&'a str, BatchError> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
        if len > MAX_NAME_LEN {
            return Err(BatchError(format!("name of {len} bytes (at most {MAX_NAME_LEN})")));
        }
        std::str::from_utf8(self.take(len)?).map_err(|_| BatchError("name is not UTF-8".into()))
    }
}

/// Identifies one output of one replica: `{namespace}/{assignment}/{output}`, the unit of
/// ordering and deduplication of what nodes send up. On the wire it is that string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub namespace: String,
    /// The Assignment's name (its replica of the Workload).
    pub assignment: String,
    pub output: String,
}

impl StreamId {
    pub fn new(namespace: impl Into<String>, assignment: impl Into<String>, output: impl Into<String>) -> StreamId {
        StreamId { namespace: namespace.into(), assignment: assignment.into(), output: output.into() }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.assignment, self.output)
    }
}

impl std::str::FromStr for StreamId {
    type Err = String;

    /// Splits at the first and the last `/`: namespaces and outputs hold none, and the
    /// names' own rules are checked where records come in.
    fn from_str(s: &str) -> Result<StreamId, String> {
        let shape = || format!("{s:?} is not {{namespace}}/{{assignment}}/{{output}}");
        let (namespace, rest) = s.split_once('/').ok_or_else(shape)?;
        let (assignment, output) = rest.rsplit_once('/').ok_or_else(shape)?;
        if namespace.is_empty() || assignment.is_empty() || output.is_empty() {
            return Err(shape());
        }
        Ok(StreamId::new(namespace, assignment, output))
    }
}

impl Serialize for StreamId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<StreamId, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One output batch of one workload replica, as it leaves a node's outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpRecord {
    /// The unit of ordering and deduplication (with the node, and the node's incarnation,
    /// that sent it).
    pub stream: StreamId,
    /// 1, 2, 3, ... per (node, stream), in the order the node produced the records, from the
    /// node's registration with a fresh data directory. A gap means the node dropped records
    /// under its outbox policy, or found them corrupt, and counted them.
    pub seq: u64,
    pub namespace: String,
    pub workload: String,
    pub output: String,
    /// The Assignment generation that produced the record.
    pub generation: u64,
    /// The version of the Model the workload ran with, if it has one: which model made a
    /// detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// When the node produced it (node clock, ms since the Unix epoch).
    pub produced_ms: u64,
    /// The output's readings when it is a v1 batch ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readings: Vec<Reading>,
    /// ... or, for other formats (the compressor's frames), the bytes, base64 (standard
    /// alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opaque: Option<String>,
}

impl UpRecord {
    /// What the record counts for in retention: its readings, or 1 for an opaque record.
    pub fn weight(&self) -> u64 {
        (self.readings.len() as u64).max(1)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadRequest {
    pub records: Vec<UpRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadResponse {
    /// Records stored now.
    pub accepted: u64,
    /// Records at or below their stream's highest stored sequence number: already stored.
    pub duplicates: u64,
    /// Records produced by an older generation of their Assignment than the current one
    /// (the replica was placed anew elsewhere), or sent by an earlier incarnation of the
    /// node: fenced, not stored.
    #[serde(default)]
    pub stale: u64,
    /// Records of new streams beyond the number of streams the sink keeps per node: refused,
    /// not stored. The node counts them as rejected.
    #[serde(default)]
    pub refused: u64,
}

/// A record as the cloud sink keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRecord {
    /// Position in the sink: strictly increasing in the order records were stored.
    pub cursor: u64,
    pub node: String,
    #[serde(flatten)]
    pub record: UpRecord,
}

/// Filters of `GET /v1/data`; every one is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Only records with a cursor above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// At most this many records (default 100, at most 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataPage {
    pub records: Vec<StoredRecord>,
    /// Pass as `after` to continue: the last cursor returned, or `after` if none was.
    pub next: u64,
    /// The oldest cursor still retained (older records were evicted by retention).
    pub first_retained: u64,
    /// Records evicted by retention so far.
    pub evicted: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(ts: u64, device: &str) -> Reading {
        Reading { ts, device: device.into(), metric: "temperature".into(), value: ts as f64 / 3.0 }
    }

    #[test]
    fn batches_round_trip() {
        let readings = vec![reading(1, "press-1"), reading(2, "press-22"), reading(u64::MAX, "ü")];
        let bytes = encode_batch(&readings);
        assert_eq!(validate_batch(&bytes), Ok(3));
        assert_eq!(decode_batch(&bytes).expect("decodes"), readings);
        assert_eq!(decode_batch(&encode_batch(&[])).expect("decodes"), vec![]);
    }

    #[test]
    fn malformed_batches_say_where() {
        let bytes = encode_batch(&[reading(1, "a"), reading(2, "b")]);
        let err = validate_batch(&bytes[..bytes.len() - 1]).expect_err("refused");
        assert!(err.0.contains("reading 1"), "{err}");
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(validate_batch(&extra).expect_err("refused").0, "1 bytes after the last reading");
        let mut lying = bytes;
        lying[0] = 200;
        assert!(validate_batch(&lying).expect_err("refused").0.contains("reading 2"));
        assert!(validate_batch(&[1, 0]).is_err());
        let empty_device = encode_batch(&[reading(1, "")]);
        assert!(validate_batch(&empty_device).expect_err("refused").0.contains("empty device"));
    }

    /// The lean pass accepts exactly what the explaining pass accepts, with the same count:
    /// every batch here is a valid one with one byte changed, cut or added somewhere.
    #[test]
    fn the_lean_check_and_the_explaining_one_agree() {
        let valid = encode_batch(&[reading(1, "press-1"), reading(2, "ü"), Reading { value: -0.0, ..reading(3, "x") }]);
        let mut batches = vec![valid.clone(), encode_batch(&[]), vec![], vec![0, 0, 0]];
        for at in 0..valid.len() {
            batches.push(valid[..at].to_vec());
            for byte in [0x00, 0x01, 0x7f, 0x80, 0xc3, 0xff] {
                let mut changed = valid.clone();
                changed[at] = byte;
                batches.push(changed);
            }
            let mut longer = valid.clone();
            longer.insert(at, 0);
            batches.push(longer);
        }
        let long_name = "n".repeat(MAX_NAME_LEN + 1);
        batches.push(encode_batch(&[reading(1, &long_name)]));
        batches.push(encode_batch(&[reading(1, &long_name[1..])]));
        for batch in &batches {
            assert_eq!(scan_batch(batch), explain_batch(batch).ok(), "batch {batch:?}");
        }
        assert!(batches.iter().filter(|b| scan_batch(b).is_none()).count() > 100, "the mutations refuse many batches");
    }

    #[test]
    fn values_must_be_finite() {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let batch = encode_batch(&[reading(1, "a"), Reading { value, ..reading(2, "b") }]);
            let err = validate_batch(&batch).expect_err("refused");
            assert!(err.0.starts_with("reading 1: value is") && err.0.contains("finite"), "{err}");
        }
        assert_eq!(validate_batch(&encode_batch(&[Reading { value: f64::MAX, ..reading(1, "a") }])), Ok(1));
    }

    #[test]
    fn stream_ids_read_and_write_as_one_string() {
        let id: StreamId = "factory/line-a-filter-0/alerts".parse().expect("parses");
        assert_eq!(id, StreamId::new("factory", "line-a-filter-0", "alerts"));
        assert_eq!(serde_json::to_string(&id).expect("json"), r#""factory/line-a-filter-0/alerts""#);
        assert_eq!(serde_json::from_str::<StreamId>(r#""a/b.c/d""#).expect("json"), StreamId::new("a", "b.c", "d"));
        for bad in ["", "a", "a/b", "/b/c", "a//c", "a/b/"] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad:?}");
        }
    }
}
