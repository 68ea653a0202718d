//! Time-series compressor: delta encoding of timestamps and of quantized values, one binary
//! frame per batch.
//!
//! Config (`spec.config`): `step` (quantization step, number > 0, default 0.01). A value is
//! stored as `q = round(value / step)` (half away from zero), so it decodes to `q * step`,
//! within `step / 2` of the original (plus the rounding of the division and the product, a
//! few units in the last place of the value).
//!
//! Output `compressed`: one frame per batch that has readings to store (integers
//! little-endian):
//!
//! ```text
//! u32 stream_count
//! stream_count x stream, in the order of their first reading in the batch:
//!     u16 device_len, device_len bytes of UTF-8
//!     u16 metric_len, metric_len bytes of UTF-8
//!     f64 step                       the step this stream's values were quantized with
//!     u32 n
//!     n x entry, in arrival order:
//!         varint timestamp delta     timestamp - previous timestamp of the stream, mod 2^64
//!         varint q delta             q - previous q of the stream
//! ```
//!
//! A varint is the zigzag encoding of a signed 64-bit integer (`(d << 1) ^ (d >> 63)`) written
//! as unsigned LEB128 (7 bits per byte, least significant first, high bit set on all bytes but
//! the last; at most 10 bytes). "Previous" carries across batches: the stream's state lives
//! as long as the instance, and a stream's first ever entry is a delta from timestamp 0 and
//! q 0. A decoder therefore needs every frame of an instance, in order; [`Decoder`] is one.
//! Because deltas are of `q` rather than of values, a change of `step` needs no reset.
//!
//! Values that cannot be quantized within `step / 2` (NaN, infinite, or `|value / step| >
//! 2^53`) are not stored; they are counted ([`TsCompressor::skipped`]) and logged at warn
//! level once per batch.
//!
//! If the host refuses a frame (`ep_process` returns -2), later frames no longer decode;
//! restart the instance to start the streams afresh.
#![deny(unsafe_code)]

use std::fmt;

use edgeplane_sdk::{export_workload, log, Batch, Config, Emitter, StreamMap, Workload};

pub const COMPRESSED: &str = "compressed";

/// Largest `|value / step|` stored: beyond it `q * step` is no longer within `step / 2`.
const MAX_QUOTIENT: f64 = 9_007_199_254_740_992.0; // 2^53

const DEFAULT_STEP: f64 = 0.01;

#[derive(Debug)]
pub struct TsCompressor {
    step: f64,
    streams: StreamMap<StreamState>,
    /// Positions in `streams` of the streams with entries in the current batch, in order.
    touched: Vec<usize>,
    frame: Vec<u8>,
    skipped: u64,
}

#[derive(Debug, Default)]
struct StreamState {
    prev_timestamp: u64,
    prev_q: i64,
    /// This batch's encoded entries and their number.
    entries: Vec<u8>,
    n: u32,
}

impl Default for TsCompressor {
    fn default() -> Self {
        Self { step: DEFAULT_STEP, streams: StreamMap::new(), touched: Vec::new(), frame: Vec::new(), skipped: 0 }
    }
}

impl TsCompressor {
    pub fn step(&self) -> f64 {
        self.step
    }

    /// Readings not stored because their value could not be quantized.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

impl Workload for TsCompressor {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.deny_unknown(&["step"])?;
        let step = config.f64_or("step", DEFAULT_STEP)?;
        if !(step > 0.0 && step.is_finite()) {
            return Err(format!("config.step: must be greater than 0, got {step}"));
        }
        self.step = step;
        Ok(())
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Emitter) {
        let step = self.step;
        let skipped = self.skipped;
        for reading in batch.iter() {
            let q = match quantize(reading.value / step) {
                Some(q) => q,
                None => {
                    self.skipped += 1;
                    continue;
                }
            };
            let position = self.streams.position_or_insert_with(reading.device, reading.metric, StreamState::default);
            let state = &mut self.streams.at_mut(position).state;
            if state.n == 0 {
                self.touched.push(position);
            }
            let timestamp_delta = reading.timestamp_ms.wrapping_sub(state.prev_timestamp) as i64;
            write_varint(&mut state.entries, timestamp_delta);
            // Both within ±2^53: no overflow.
            write_varint(&mut state.entries, q - state.prev_q);
            state.prev_timestamp = reading.timestamp_ms;
            state.prev_q = q;
            state.n += 1;
        }
        if self.skipped > skipped {
            log::warn(&format!(
                "not stored in this batch: {} readings whose value is NaN, infinite or too large for step {step} ({} in all)",
                self.skipped - skipped,
                self.skipped
            ));
        }
        if self.touched.is_empty() {
            return;
        }
        self.frame.clear();
        self.frame.extend_from_slice(&(self.touched.len() as u32).to_le_bytes());
        for &position in &self.touched {
            let stream = self.streams.at_mut(position);
            // Device and metric come from a batch, so they fit in a u16.
            for name in [stream.device(), stream.metric()] {
                self.frame.extend_from_slice(&(name.len() as u16).to_le_bytes());
                self.frame.extend_from_slice(name.as_bytes());
            }
            self.frame.extend_from_slice(&step.to_le_bytes());
            let state = &mut stream.state;
            self.frame.extend_from_slice(&state.n.to_le_bytes());
            self.frame.extend_from_slice(&state.entries);
            state.entries.clear();
            state.n = 0;
        }
        self.touched.clear();
        out.emit_bytes(COMPRESSED, &self.frame);
    }
}

export_workload!(TsCompressor);

/// `x.round()` (half away from zero) as an integer, if `|x| <= 2^53`. Truncates and corrects
/// instead of calling `round`, which is a libm call on wasm32 and on baseline x86-64: below
/// 2^53 both the truncation and `x - t` are exact.
#[inline]
fn quantize(x: f64) -> Option<i64> {
    if x.is_nan() || x.abs() > MAX_QUOTIENT {
        return None;
    }
    let t = x as i64;
    let fraction = x - t as f64;
    Some(if fraction >= 0.5 {
        t + 1
    } else if fraction <= -0.5 {
        t - 1
    } else {
        t
    })
}

#[inline]
fn write_varint(out: &mut Vec<u8>, value: i64) {
    let mut rest = ((value << 1) ^ (value >> 63)) as u64;
    while rest >= 0x80 {
        out.push(rest as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Why a frame does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The frame ends early.
    Truncated,
    /// A device or metric is not UTF-8.
    InvalidUtf8,
    /// A varint is longer than 10 bytes or does not fit in 64 bits.
    VarintOverflow,
    /// A stream appears twice in one frame (the compressor never does that).
    DuplicateStream { device: String, metric: String },
    /// Bytes follow the last stream.
    TrailingBytes(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("frame ends early"),
            Self::InvalidUtf8 => f.write_str("device or metric is not UTF-8"),
            Self::VarintOverflow => f.write_str("varint does not fit in 64 bits"),
            Self::DuplicateStream { device, metric } => write!(f, "stream {device}/{metric} appears twice"),
            Self::TrailingBytes(n) => write!(f, "{n} bytes follow the last stream"),
        }
    }
}

impl std::error::Error for FrameError {}

/// One stream of a decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedStream {
    pub device: String,
    pub metric: String,
    pub step: f64,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub timestamp_ms: u64,
    /// The quantized value.
    pub q: i64,
    /// `q * step`.
    pub value: f64,
}

/// Decodes the frames of one compressor instance, in order, keeping each stream's previous
/// timestamp and q between frames.
#[derive(Debug, Default)]
pub struct Decoder {
    /// (previous timestamp, previous q) per stream.
    streams: StreamMap<(u64, i64)>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes the next frame. On error the decoder's state is unchanged.
    pub fn decode_frame(&mut self, frame: &[u8]) -> Result<Vec<DecodedStream>, FrameError> {
        let mut r = Reader { bytes: frame, pos: 0 };
        let count = u32::from_le_bytes(r.array()?);
        let mut decoded: Vec<DecodedStream> = Vec::new();
        for _ in 0..count {
            let device = r.string()?;
            let metric = r.string()?;
            if decoded.iter().any(|s| s.device == device && s.metric == metric) {
                return Err(FrameError::DuplicateStream { device, metric });
            }
            let step = f64::from_le_bytes(r.array()?);
            let n = u32::from_le_bytes(r.array()?);
            let (mut timestamp, mut q) = self.streams.get(&device, &metric).map_or((0, 0), |s| s.state);
            // Each entry takes at least 2 bytes: do not let `n` reserve more than the frame holds.
            let mut points = Vec::with_capacity((n as usize).min(frame.len() / 2));
            for _ in 0..n {
                timestamp = timestamp.wrapping_add(r.varint()? as u64);
                q = q.wrapping_add(r.varint()?);
                points.push(Point { timestamp_ms: timestamp, q, value: q as f64 * step });
            }
            decoded.push(DecodedStream { device, metric, step, points });
        }
        if r.pos != frame.len() {
            return Err(FrameError::TrailingBytes(frame.len() - r.pos));
        }
        for stream in &decoded {
            if let Some(last) = stream.points.last() {
                self.streams.get_or_insert_with(&stream.device, &stream.metric, || (0, 0)).state = (last.timestamp_ms, last.q);
            }
        }
        Ok(decoded)
    }
}

/// Decodes the next frame of an instance with `decoder` (see [`Decoder::decode_frame`]).
pub fn decode_frame(decoder: &mut Decoder, frame: &[u8]) -> Result<Vec<DecodedStream>, FrameError> {
    decoder.decode_frame(frame)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], FrameError> {
        let end = self.pos.checked_add(n).ok_or(FrameError::Truncated)?;
        let bytes = self.bytes.get(self.pos..end).ok_or(FrameError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn string(&mut self) -> Result<String, FrameError> {
        let len = u16::from_le_bytes(self.array()?) as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| FrameError::InvalidUtf8)
    }

    fn varint(&mut self) -> Result<i64, FrameError> {
        let mut zigzag = 0u64;
        for i in 0..10 {
            let byte = self.take(1)?[0];
            // The tenth byte holds bit 63 only.
            if i == 9 && byte > 1 {
                return Err(FrameError::VarintOverflow);
            }
            zigzag |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64));
            }
        }
        Err(FrameError::VarintOverflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeplane_sdk::{encode_batch, NativeHost, Reading};

    fn host(config: &str) -> NativeHost<TsCompressor> {
        let mut host = NativeHost::new();
        host.configure(&format!(r#"{{"config": {config}}}"#)).unwrap();
        host
    }

    fn frame(out: Vec<(String, Vec<u8>)>) -> Vec<u8> {
        assert_eq!(out.len(), 1);
        let (name, data) = out.into_iter().next().unwrap();
        assert_eq!(name, COMPRESSED);
        data
    }

    /// A deterministic pseudo-random sequence (xorshift), to avoid a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn quantize_rounds_half_away_from_zero() {
        let mut rng = Rng(42);
        let mut cases = vec![0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, 0.49999999999999994, -0.49999999999999994];
        cases.extend([4503599627370495.5, -4503599627370495.5, 9007199254740991.0, MAX_QUOTIENT, -MAX_QUOTIENT]);
        cases.extend((0..10_000).map(|_| (rng.unit() - 0.5) * 2f64.powi((rng.next() % 54) as i32)));
        for x in cases {
            assert_eq!(quantize(x), Some(x.round() as i64), "{x}");
        }
        for x in [f64::NAN, f64::INFINITY, -f64::INFINITY, MAX_QUOTIENT * 2.0, -1e300] {
            assert_eq!(quantize(x), None, "{x}");
        }
    }

    #[test]
    fn varints() {
        for value in [0, 1, -1, 63, -64, 64, -65, 1 << 40, i64::MAX, i64::MIN] {
            let mut bytes = Vec::new();
            write_varint(&mut bytes, value);
            let mut r = Reader { bytes: &bytes, pos: 0 };
            assert_eq!(r.varint(), Ok(value));
            assert_eq!(r.pos, bytes.len());
        }
        let mut small = Vec::new();
        write_varint(&mut small, -1);
        write_varint(&mut small, 63);
        assert_eq!(small, [1, 126]);
        let mut max = Vec::new();
        write_varint(&mut max, i64::MIN);
        assert_eq!(max.len(), 10);
        let mut r = Reader { bytes: &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], pos: 0 };
        assert_eq!(r.varint(), Err(FrameError::VarintOverflow));
        let mut r = Reader { bytes: &[0x80; 11], pos: 0 };
        assert_eq!(r.varint(), Err(FrameError::VarintOverflow));
        let mut r = Reader { bytes: &[0x80], pos: 0 };
        assert_eq!(r.varint(), Err(FrameError::Truncated));
    }

    #[test]
    fn frame_layout_matches_the_documentation() {
        let mut h = host(r#"{"step": 0.5}"#);
        let batch = encode_batch([
            Reading { timestamp_ms: 1000, value: 2.0, device: "d", metric: "m" },
            Reading { timestamp_ms: 999, value: 1.5, device: "d", metric: "m" },
        ])
        .unwrap();
        let mut want = vec![1, 0, 0, 0, 1, 0, b'd', 1, 0, b'm'];
        want.extend_from_slice(&0.5f64.to_le_bytes());
        want.extend_from_slice(&[2, 0, 0, 0]);
        // ts +1000 -> zigzag 2000 = 0xd0 0x0f; q 4 -> 8; ts -1 -> 1; q -1 -> 1.
        want.extend_from_slice(&[0xd0, 0x0f, 8, 1, 1]);
        assert_eq!(frame(h.process(&batch).unwrap()), want);
    }

    #[test]
    fn round_trips_within_half_a_step_across_batches() {
        let step = 0.01;
        let mut h = host(&format!(r#"{{"step": {step}}}"#));
        let mut decoder = Decoder::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let devices = ["press-1", "press-2", "pump-é"];
        let metrics = ["temperature", "rpm"];
        let mut timestamps = [[1_700_000_000_000u64; 2]; 3];
        let mut values = [[20.0f64; 2]; 3];
        for _ in 0..20 {
            let mut expected: Vec<(usize, usize, u64, f64)> = Vec::new();
            for _ in 0..rng.next() % 200 + 1 {
                let (d, m) = (rng.next() as usize % 3, rng.next() as usize % 2);
                // Mostly forward in time, sometimes backwards; random walks with jumps.
                timestamps[d][m] = timestamps[d][m].wrapping_add(rng.next() % 2000).wrapping_sub(100);
                values[d][m] += (rng.unit() - 0.5) * if rng.next() % 10 == 0 { 1e6 } else { 1.0 };
                expected.push((d, m, timestamps[d][m], values[d][m]));
            }
            let readings: Vec<Reading<'_>> = expected
                .iter()
                .map(|&(d, m, timestamp_ms, value)| Reading { timestamp_ms, value, device: devices[d], metric: metrics[m] })
                .collect();
            let data = frame(h.process(&encode_batch(readings.iter().copied()).unwrap()).unwrap());
            let decoded = decode_frame(&mut decoder, &data).unwrap();
            // Regroup the expectation per stream in first-seen order, as the frame is.
            let mut points = 0;
            for stream in &decoded {
                assert_eq!(stream.step, step);
                let want: Vec<&Reading<'_>> = readings.iter().filter(|r| r.device == stream.device && r.metric == stream.metric).collect();
                assert_eq!(stream.points.len(), want.len());
                for (got, want) in stream.points.iter().zip(want) {
                    assert_eq!(got.timestamp_ms, want.timestamp_ms);
                    let rounding = want.value.abs() * 4.0 * f64::EPSILON;
                    assert!((got.value - want.value).abs() <= step / 2.0 + rounding, "{got:?} vs {want:?}");
                }
                points += stream.points.len();
            }
            assert_eq!(points, readings.len());
            let first_seen: Vec<(&str, &str)> = decoded.iter().map(|s| (s.device.as_str(), s.metric.as_str())).collect();
            let mut order: Vec<(&str, &str)> = Vec::new();
            for r in &readings {
                if !order.contains(&(r.device, r.metric)) {
                    order.push((r.device, r.metric));
                }
            }
            assert_eq!(first_seen, order);
        }
    }

    #[test]
    fn step_change_needs_no_reset() {
        let mut h = host(r#"{"step": 0.1}"#);
        let mut decoder = Decoder::new();
        let batch = |value: f64| encode_batch([Reading { timestamp_ms: 5, value, device: "d", metric: "m" }]).unwrap();
        decoder.decode_frame(&frame(h.process(&batch(12.34)).unwrap())).unwrap();
        h.configure(r#"{"config": {"step": 0.001}}"#).unwrap();
        let decoded = decoder.decode_frame(&frame(h.process(&batch(12.34)).unwrap())).unwrap();
        assert_eq!(decoded[0].step, 0.001);
        assert!((decoded[0].points[0].value - 12.34).abs() <= 0.0005 * (1.0 + 1e-9));
    }

    #[test]
    fn skips_values_it_cannot_store() {
        let mut h = host(r#"{"step": 1}"#);
        let batch = encode_batch([f64::NAN, f64::INFINITY, -1e300, 9_007_199_254_740_992.0, -3.0].iter().map(|&value| Reading {
            timestamp_ms: 1,
            value,
            device: "d",
            metric: "m",
        }))
        .unwrap();
        let decoded = Decoder::new().decode_frame(&frame(h.process(&batch).unwrap())).unwrap();
        let values: Vec<f64> = decoded[0].points.iter().map(|p| p.value).collect();
        assert_eq!(values, [9_007_199_254_740_992.0, -3.0]);
        assert_eq!(h.workload().skipped(), 3);
        // Nothing to store, nothing emitted.
        let nan = encode_batch([Reading { timestamp_ms: 1, value: f64::NAN, device: "d", metric: "m" }]).unwrap();
        assert!(h.process(&nan).unwrap().is_empty());
        assert!(h.process(&encode_batch([]).unwrap()).unwrap().is_empty());
    }

    #[test]
    fn decoder_refuses_malformed_frames_atomically() {
        let mut h = host("{}");
        let batch = encode_batch([
            Reading { timestamp_ms: 10, value: 1.0, device: "d", metric: "m" },
            Reading { timestamp_ms: 20, value: 2.0, device: "e", metric: "m" },
        ])
        .unwrap();
        let good = frame(h.process(&batch).unwrap());
        let mut decoder = Decoder::new();
        for end in 0..good.len() {
            assert_eq!(decoder.decode_frame(&good[..end]), Err(FrameError::Truncated), "prefix {end}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(decoder.decode_frame(&trailing), Err(FrameError::TrailingBytes(1)));
        // None of the failures moved the decoder: the frame still decodes from scratch.
        let decoded = decoder.decode_frame(&good).unwrap();
        assert_eq!(decoded[1].points[0], Point { timestamp_ms: 20, q: 200, value: 2.0 });
        let mut twice = good[4..].to_vec();
        let one = twice.len() / 2;
        let mut duplicated = vec![2, 0, 0, 0];
        duplicated.extend_from_slice(&twice[..one]);
        duplicated.extend_from_slice(&twice[..one]);
        assert!(matches!(Decoder::new().decode_frame(&duplicated), Err(FrameError::DuplicateStream { .. })));
        twice[2] = 0xff;
        let mut bad_utf8 = vec![2, 0, 0, 0];
        bad_utf8.extend_from_slice(&twice);
        assert_eq!(Decoder::new().decode_frame(&bad_utf8), Err(FrameError::InvalidUtf8));
    }

    #[test]
    fn refuses_bad_configuration() {
        let mut h = host("{}");
        for (config, message) in [
            (r#"{"step": 0}"#, "config.step: must be greater than 0, got 0"),
            (r#"{"step": -1}"#, "config.step: must be greater than 0, got -1"),
            (r#"{"step": [1]}"#, "config.step: expected a number, got an array"),
            (r#"{"quantum": 1}"#, "config.quantum: unknown key (known keys: step)"),
        ] {
            assert_eq!(h.configure(&format!(r#"{{"config": {config}}}"#)).unwrap_err(), message);
        }
        assert_eq!(h.workload().step(), DEFAULT_STEP);
    }
}
