//! The v1 batch format (docs/abi.md): reading it without copying, and writing it.
//!
//! ```text
//! u32 count
//! count x reading:
//!     u64 timestamp_ms
//!     f64 value
//!     u16 device_len, device_len bytes of UTF-8
//!     u16 metric_len, metric_len bytes of UTF-8
//! ```
//!
//! All integers are little-endian.

use std::fmt;

use crate::bytes;

/// Bytes of a reading without its two strings.
const FIXED_LEN: usize = 8 + 8 + 2 + 2;

/// One sensor reading, borrowing its strings from a batch (or from anywhere else).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading<'a> {
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub value: f64,
    pub device: &'a str,
    pub metric: &'a str,
}

/// Why a buffer is not a v1 batch, or why a reading cannot be written as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// The buffer is shorter than the 4-byte count.
    MissingCount,
    /// The buffer ends inside reading `index` (counting from 0).
    Truncated { index: u32 },
    /// A string of reading `index` is not UTF-8.
    InvalidUtf8 { index: u32, field: &'static str },
    /// Bytes follow the last of the `count` readings.
    TrailingBytes { count: u32, extra: usize },
    /// A device or metric longer than 65,535 bytes cannot be written.
    TooLong { field: &'static str, len: usize },
    /// A batch holds at most `u32::MAX` readings.
    TooMany,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingCount => f.write_str("batch is shorter than its 4-byte reading count"),
            Self::Truncated { index } => write!(f, "batch ends inside reading {index}"),
            Self::InvalidUtf8 { index, field } => write!(f, "reading {index}: {field} is not UTF-8"),
            Self::TrailingBytes { count, extra } => {
                write!(f, "{extra} bytes follow the {count} readings the batch announces")
            }
            Self::TooLong { field, len } => write!(f, "{field} is {len} bytes long; the batch format allows 65535"),
            Self::TooMany => f.write_str("a batch holds at most 4294967295 readings"),
        }
    }
}

impl std::error::Error for BatchError {}

/// A validated v1 batch: a view over its bytes that yields [`Reading`]s without copying.
///
/// [`Batch::parse`] checks the whole buffer once (lengths, UTF-8, no trailing bytes), so that
/// a malformed batch is refused before the workload sees any of it and iterating is cheap.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    count: u32,
    /// The readings, after the count.
    body: &'a [u8],
}

impl<'a> Batch<'a> {
    /// A batch the host validated before handing it over (`ep_process_validated`, ABI 1.2):
    /// only the count is read. Iterating stays within `bytes` whatever they hold, since each
    /// reading is split off after length checks and iteration ends at one that does not fit;
    /// only the names' UTF-8 rests on the host's word (see `validated_str`).
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn validated_by_host(bytes: &'a [u8]) -> Result<Self, BatchError> {
        match bytes::array(bytes, 0) {
            Some(count) => Ok(Self { count: u32::from_le_bytes(count), body: &bytes[4..] }),
            None => Err(BatchError::MissingCount),
        }
    }

    pub fn parse(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let count = match bytes::array(bytes, 0) {
            Some(count) => u32::from_le_bytes(count),
            None => return Err(BatchError::MissingCount),
        };
        let body = &bytes[4..];
        let mut rest = body;
        for index in 0..count {
            let (raw, after) = decode(rest).ok_or(BatchError::Truncated { index })?;
            if !is_utf8(raw.device) {
                return Err(BatchError::InvalidUtf8 { index, field: "device" });
            }
            if !is_utf8(raw.metric) {
                return Err(BatchError::InvalidUtf8 { index, field: "metric" });
            }
            rest = after;
        }
        if !rest.is_empty() {
            return Err(BatchError::TrailingBytes { count, extra: rest.len() });
        }
        Ok(Self { count, body })
    }

    /// Number of readings.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> Iter<'a> {
        Iter { rest: self.body, remaining: self.count }
    }
}

impl<'a> IntoIterator for &Batch<'a> {
    type Item = Reading<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The readings of a [`Batch`], in order.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    /// The readings not yet returned.
    rest: &'a [u8],
    remaining: u32,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Reading<'a>;

    #[inline]
    fn next(&mut self) -> Option<Reading<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let (raw, rest) = decode(self.rest)?;
        self.remaining -= 1;
        self.rest = rest;
        Some(Reading {
            timestamp_ms: raw.timestamp_ms,
            value: raw.value,
            device: validated_str(raw.device),
            metric: validated_str(raw.metric),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// A string of a batch that [`Batch::parse`] validated.
///
/// This is the SDK's only `unsafe` outside the ABI glue: validating every string a second time
/// would cost as much as a simple workload's own work per reading.
#[allow(unsafe_code)]
#[inline(always)]
fn validated_str(bytes: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(bytes).is_ok());
    // SAFETY: only `Iter::next` calls this, on the device and metric that `decode` splits off
    // the body of a `Batch`, reading by reading from its start. A `Batch` exists only through
    // `Batch::parse`, which did the same on the same immutable bytes and checked that each of
    // these strings is UTF-8, or, in a wasm guest, through `Batch::validated_by_host`, on
    // bytes the host checked the same way (`validate_batch`) before it called
    // `ep_process_validated`. The host that would break that promise could as well write
    // anything into the guest's memory; either way nothing outside the sandbox is reached.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// `std::str::from_utf8(bytes).is_ok()`, quicker for the short ASCII strings batches are made
/// of: a call to the general validator costs more than the rest of parsing a reading.
#[inline(always)]
fn is_utf8(bytes: &[u8]) -> bool {
    bytes::is_ascii(bytes) || std::str::from_utf8(bytes).is_ok()
}

/// A reading's parts, strings not yet checked.
struct Raw<'a> {
    timestamp_ms: u64,
    value: f64,
    device: &'a [u8],
    metric: &'a [u8],
}

/// Splits the first reading off `rest`; `None` if `rest` ends inside it. Written as a cursor
/// that only ever compares the remaining length with a small number: three compares per
/// reading, and every load after them provably in bounds.
#[inline(always)]
fn decode(rest: &[u8]) -> Option<(Raw<'_>, &[u8])> {
    if rest.len() < 18 {
        return None;
    }
    let (head, rest) = rest.split_at(18);
    let timestamp_ms = u64::from_le_bytes(bytes::array(head, 0)?);
    let value = f64::from_le_bytes(bytes::array(head, 8)?);
    let device_len = u16::from_le_bytes(bytes::array(head, 16)?) as usize;
    if rest.len() < device_len + 2 {
        return None;
    }
    let (device, rest) = rest.split_at(device_len);
    let metric_len = u16::from_le_bytes(bytes::array(rest, 0)?) as usize;
    let rest = &rest[2..];
    if rest.len() < metric_len {
        return None;
    }
    let (metric, rest) = rest.split_at(metric_len);
    Some((Raw { timestamp_ms, value, device, metric }, rest))
}

/// Writes readings in the v1 batch format. The bytes are a complete batch after every push.
#[derive(Debug, Clone)]
pub struct BatchWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for BatchWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchWriter {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// A writer whose buffer holds `bytes` bytes before it grows.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes.max(4));
        buf.extend_from_slice(&[0; 4]);
        Self { buf, count: 0 }
    }

    /// Appends a reading; on error nothing is written.
    pub fn push(&mut self, reading: &Reading<'_>) -> Result<(), BatchError> {
        let count = self.count.checked_add(1).ok_or(BatchError::TooMany)?;
        let device_len = str_len(reading.device, "device")?;
        let metric_len = str_len(reading.metric, "metric")?;
        self.buf.reserve(FIXED_LEN + reading.device.len() + reading.metric.len());
        self.buf.extend_from_slice(&reading.timestamp_ms.to_le_bytes());
        self.buf.extend_from_slice(&reading.value.to_le_bytes());
        self.buf.extend_from_slice(&device_len.to_le_bytes());
        bytes::extend(&mut self.buf, reading.device.as_bytes());
        self.buf.extend_from_slice(&metric_len.to_le_bytes());
        bytes::extend(&mut self.buf, reading.metric.as_bytes());
        self.count = count;
        self.buf[..4].copy_from_slice(&count.to_le_bytes());
        Ok(())
    }

    /// Number of readings written.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Starts a new, empty batch, keeping the buffer's capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; 4]);
        self.count = 0;
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

fn str_len(s: &str, field: &'static str) -> Result<u16, BatchError> {
    u16::try_from(s.len()).map_err(|_| BatchError::TooLong { field, len: s.len() })
}

/// Encodes readings as one v1 batch.
pub fn encode_batch<'a, I>(readings: I) -> Result<Vec<u8>, BatchError>
where
    I: IntoIterator<Item = Reading<'a>>,
{
    let mut writer = BatchWriter::new();
    for reading in readings {
        writer.push(&reading)?;
    }
    Ok(writer.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(ts: u64, value: f64, device: &'static str, metric: &'static str) -> Reading<'static> {
        Reading { timestamp_ms: ts, value, device, metric }
    }

    #[test]
    fn round_trips() {
        let readings =
            vec![reading(1, 1.5, "press-7", "temperature"), reading(u64::MAX, -0.0, "", ""), reading(3, f64::INFINITY, "capteur-é", "ü")];
        let bytes = encode_batch(readings.iter().copied()).unwrap();
        let batch = Batch::parse(&bytes).unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.iter().len(), 3);
        assert_eq!(batch.iter().collect::<Vec<_>>(), readings);
    }

    #[test]
    fn layout_matches_the_abi_document() {
        let bytes = encode_batch([reading(0x0102, 2.0, "ab", "c")]).unwrap();
        let mut expected = vec![1, 0, 0, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(&2.0f64.to_le_bytes());
        expected.extend_from_slice(&[2, 0, b'a', b'b', 1, 0, b'c']);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn empty_batch() {
        let batch = Batch::parse(&[0, 0, 0, 0]).unwrap();
        assert!(batch.is_empty());
        assert_eq!(batch.iter().next(), None);
        assert_eq!(BatchWriter::new().as_bytes(), &[0, 0, 0, 0]);
    }

    #[test]
    fn refuses_malformed_batches() {
        let good = encode_batch([reading(1, 1.0, "d", "m"), reading(2, 2.0, "dev", "metric")]).unwrap();
        assert_eq!(Batch::parse(&[]).unwrap_err(), BatchError::MissingCount);
        assert_eq!(Batch::parse(&good[..3]).unwrap_err(), BatchError::MissingCount);
        // Every proper prefix that holds the count ends inside a reading.
        for end in 4..good.len() {
            let err = Batch::parse(&good[..end]).unwrap_err();
            assert!(matches!(err, BatchError::Truncated { .. }), "prefix {end}: {err}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(Batch::parse(&trailing).unwrap_err(), BatchError::TrailingBytes { count: 2, extra: 1 });
        let mut more = good.clone();
        more[0] = 3;
        assert_eq!(Batch::parse(&more).unwrap_err(), BatchError::Truncated { index: 2 });
        let mut fewer = good.clone();
        fewer[0] = 1;
        assert!(matches!(Batch::parse(&fewer).unwrap_err(), BatchError::TrailingBytes { count: 1, .. }));
        // A huge count with no readings fails fast on the first one.
        assert_eq!(Batch::parse(&[0xff; 4]).unwrap_err(), BatchError::Truncated { index: 0 });
    }

    #[test]
    fn refuses_invalid_utf8() {
        let mut bytes = encode_batch([reading(1, 1.0, "d", "m"), reading(2, 2.0, "dd", "mm")]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        assert_eq!(Batch::parse(&bytes).unwrap_err(), BatchError::InvalidUtf8 { index: 1, field: "metric" });
        let device = 4 + FIXED_LEN - 2;
        bytes[device] = 0xc3; // a lead byte without its continuation
        assert_eq!(Batch::parse(&bytes).unwrap_err(), BatchError::InvalidUtf8 { index: 0, field: "device" });
    }

    #[test]
    fn writer_refuses_strings_over_u16() {
        let long = "x".repeat(65_536);
        let mut writer = BatchWriter::new();
        writer.push(&reading(1, 1.0, "ok", "ok")).unwrap();
        let err = writer.push(&Reading { timestamp_ms: 2, value: 2.0, device: "d", metric: &long }).unwrap_err();
        assert_eq!(err, BatchError::TooLong { field: "metric", len: 65_536 });
        // Nothing of the refused reading was written.
        assert_eq!(writer.len(), 1);
        assert_eq!(Batch::parse(writer.as_bytes()).unwrap().len(), 1);
        let max = "y".repeat(65_535);
        writer.push(&Reading { timestamp_ms: 3, value: 3.0, device: &max, metric: "m" }).unwrap();
        let bytes = writer.finish();
        assert_eq!(Batch::parse(&bytes).unwrap().iter().nth(1).unwrap().device.len(), 65_535);
    }

    #[test]
    fn clear_keeps_a_valid_empty_batch() {
        let mut writer = BatchWriter::new();
        writer.push(&reading(1, 1.0, "d", "m")).unwrap();
        writer.clear();
        assert!(writer.is_empty());
        assert!(Batch::parse(writer.as_bytes()).unwrap().is_empty());
    }
}
