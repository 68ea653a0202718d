//! Window aggregator: count, min, max, mean and last value per (device, metric) over tumbling
//! event-time windows.
//!
//! Config (`spec.config`): `windowSeconds` (number > 0, default 10, rounded to the
//! millisecond). Windows are aligned to multiples of their length: a reading at `ts` falls in
//! `[ts - ts % len, ts - ts % len + len)`.
//!
//! Output `summary`: when a stream's reading falls in a later window than the stream's current
//! one, the finished window is emitted as five readings with the same device, timestamp = the
//! window's end, and metrics `<metric>.count`, `<metric>.min`, `<metric>.max`,
//! `<metric>.mean` and `<metric>.last` (the last value received, in arrival order). Windows
//! are emitted in the order they close. A stream's current window is emitted only once the
//! stream's next window starts: there is no wall-clock flush.
//!
//! Readings older than their stream's current window (late) and NaN values are not
//! aggregated; they are counted ([`WindowAggregator::late`], [`WindowAggregator::nan`]) and
//! logged at debug level once per batch.
//!
//! After a `windowSeconds` change, open windows still close at their original end, and a
//! stream's first window after that starts there (it may be shorter than the new length), so
//! that windows never overlap.
#![deny(unsafe_code)]

use edgeplane_sdk::{export_workload, log, Batch, Config, Emitter, Reading, StreamMap, Workload};

pub const SUMMARY: &str = "summary";

#[derive(Debug)]
pub struct WindowAggregator {
    window_ms: u64,
    windows: StreamMap<Window>,
    late: u64,
    nan: u64,
    /// Reused to build the summaries' metric names.
    metric: String,
}

/// A stream's current window, `[start, start + len)`. Kept as start and length rather than
/// end so that the last window before `u64::MAX` works too.
#[derive(Debug, Clone)]
struct Window {
    start: u64,
    len: u64,
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
    last: f64,
}

impl Window {
    fn new(start: u64, len: u64) -> Self {
        Self { start, len, count: 0, min: f64::INFINITY, max: f64::NEG_INFINITY, sum: 0.0, last: 0.0 }
    }

    /// `value` is not NaN, so plain comparisons do (`f64::min` and `max` handle NaN, which
    /// costs a call on wasm32).
    #[inline]
    fn add(&mut self, value: f64) {
        self.count += 1;
        if value < self.min {
            self.min = value;
        }
        if value > self.max {
            self.max = value;
        }
        self.sum += value;
        self.last = value;
    }
}

const DEFAULT_WINDOW_SECONDS: f64 = 10.0;

impl Default for WindowAggregator {
    fn default() -> Self {
        Self { window_ms: (DEFAULT_WINDOW_SECONDS * 1000.0) as u64, windows: StreamMap::new(), late: 0, nan: 0, metric: String::new() }
    }
}

impl WindowAggregator {
    /// Window length in milliseconds.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Late readings so far (older than their stream's current window).
    pub fn late(&self) -> u64 {
        self.late
    }

    /// NaN readings so far.
    pub fn nan(&self) -> u64 {
        self.nan
    }

    fn emit_summary(&mut self, out: &mut Emitter, device: &str, metric: &str, window: &Window) {
        let stats = [
            ("count", window.count as f64),
            ("min", window.min),
            ("max", window.max),
            ("mean", window.sum / window.count as f64),
            ("last", window.last),
        ];
        self.metric.clear();
        self.metric.push_str(metric);
        self.metric.push('.');
        let prefix = self.metric.len();
        for (suffix, value) in stats {
            self.metric.truncate(prefix);
            self.metric.push_str(suffix);
            let timestamp_ms = window.start.saturating_add(window.len);
            out.emit(SUMMARY, Reading { timestamp_ms, value, device, metric: &self.metric });
        }
    }
}

impl Workload for WindowAggregator {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.deny_unknown(&["windowSeconds"])?;
        let seconds = config.f64_or("windowSeconds", DEFAULT_WINDOW_SECONDS)?;
        let ms = (seconds * 1000.0).round();
        if ms < 1.0 {
            return Err(format!("config.windowSeconds: must be at least 0.001 (one millisecond), got {seconds}"));
        }
        // Beyond 2^53 ms (285,000 years) the length would not be exact.
        if ms > 9_007_199_254_740_992.0 {
            return Err("config.windowSeconds: must be at most 9007199254740 (2^53 milliseconds)".to_owned());
        }
        self.window_ms = ms as u64;
        Ok(())
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Emitter) {
        let (late, nan) = (self.late, self.nan);
        let len = self.window_ms;
        for reading in batch.iter() {
            if reading.value.is_nan() {
                self.nan += 1;
                continue;
            }
            let ts = reading.timestamp_ms;
            let aligned = ts - ts % len;
            let position = self.windows.position_or_insert_with(reading.device, reading.metric, || Window::new(aligned, len));
            let window = &mut self.windows.at_mut(position).state;
            if ts < window.start {
                self.late += 1;
                continue;
            }
            if ts - window.start >= window.len {
                // After a length change the aligned start may fall inside the finished window:
                // start at its end instead (no overflow: that end is at most `ts`).
                let start = aligned.max(window.start + window.len);
                let next = Window::new(start, len - (start - aligned));
                let finished = std::mem::replace(window, next);
                self.emit_summary(out, reading.device, reading.metric, &finished);
                self.windows.at_mut(position).state.add(reading.value);
            } else {
                window.add(reading.value);
            }
        }
        if self.late > late || self.nan > nan {
            log::debug(&format!(
                "not aggregated in this batch: {} late and {} NaN readings ({} and {} in all)",
                self.late - late,
                self.nan - nan,
                self.late,
                self.nan
            ));
        }
    }
}

export_workload!(WindowAggregator);

#[cfg(test)]
mod tests {
    use super::*;
    use edgeplane_sdk::{encode_batch, NativeHost};

    fn batch(readings: &[(u64, f64, &str)]) -> Vec<u8> {
        encode_batch(readings.iter().map(|&(timestamp_ms, value, device)| Reading { timestamp_ms, value, device, metric: "temp" })).unwrap()
    }

    fn host(config: &str) -> NativeHost<WindowAggregator> {
        let mut host = NativeHost::new();
        host.configure(&format!(r#"{{"config": {config}}}"#)).unwrap();
        host
    }

    /// (timestamp, device, metric, value) of the summary output.
    fn summary(out: &[(String, Vec<u8>)]) -> Vec<(u64, String, String, f64)> {
        assert!(out.len() <= 1);
        out.iter()
            .flat_map(|(name, data)| {
                assert_eq!(name, SUMMARY);
                Batch::parse(data)
                    .unwrap()
                    .iter()
                    .map(|r| (r.timestamp_ms, r.device.to_owned(), r.metric.to_owned(), r.value))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn expected(end: u64, device: &str, stats: [f64; 5]) -> Vec<(u64, String, String, f64)> {
        ["count", "min", "max", "mean", "last"].iter().zip(stats).map(|(s, v)| (end, device.to_owned(), format!("temp.{s}"), v)).collect()
    }

    #[test]
    fn emits_a_window_when_the_next_one_starts() {
        let mut h = host(r#"{"windowSeconds": 10}"#);
        let out = h.process(&batch(&[(10_000, 3.0, "a"), (12_000, 1.0, "a"), (19_999, 2.0, "a")])).unwrap();
        assert!(out.is_empty());
        let out = h.process(&batch(&[(20_000, 7.0, "a")])).unwrap();
        assert_eq!(summary(&out), expected(20_000, "a", [3.0, 1.0, 3.0, 2.0, 2.0]));
        // Skipped windows emit nothing; the open one closes at its end.
        let out = h.process(&batch(&[(55_555, 0.0, "a")])).unwrap();
        assert_eq!(summary(&out), expected(30_000, "a", [1.0, 7.0, 7.0, 7.0, 7.0]));
    }

    #[test]
    fn streams_are_independent_and_close_in_order() {
        let mut h = host("{}");
        let out = h
            .process(&batch(&[(1_000, 1.0, "a"), (2_000, 10.0, "b"), (11_000, 2.0, "b"), (12_000, 3.0, "a"), (13_000, 4.0, "a")]))
            .unwrap();
        let mut want = expected(10_000, "b", [1.0, 10.0, 10.0, 10.0, 10.0]);
        want.extend(expected(10_000, "a", [1.0, 1.0, 1.0, 1.0, 1.0]));
        assert_eq!(summary(&out), want);
        // Same device, different metric: a different stream.
        let other = encode_batch([Reading { timestamp_ms: 25_000, value: 1.0, device: "a", metric: "rpm" }]).unwrap();
        assert!(h.process(&other).unwrap().is_empty());
    }

    #[test]
    fn late_and_nan_readings_are_counted_not_aggregated() {
        let mut h = host(r#"{"windowSeconds": 1}"#);
        h.process(&batch(&[(5_000, 1.0, "a"), (4_999, 100.0, "a"), (5_500, f64::NAN, "a"), (5_600, 2.0, "a")])).unwrap();
        assert_eq!((h.workload().late(), h.workload().nan()), (1, 1));
        let out = h.process(&batch(&[(6_000, 0.0, "a")])).unwrap();
        assert_eq!(summary(&out), expected(6_000, "a", [2.0, 1.0, 2.0, 1.5, 2.0]));
        // Earlier readings of the current window are not late.
        h.process(&batch(&[(6_999, 0.0, "a"), (6_000, 0.0, "a")])).unwrap();
        assert_eq!(h.workload().late(), 1);
    }

    #[test]
    fn fractional_and_tiny_windows() {
        let mut h = host(r#"{"windowSeconds": 0.25}"#);
        assert_eq!(h.workload().window_ms(), 250);
        let out = h.process(&batch(&[(260, 1.0, "a"), (499, 2.0, "a"), (500, 3.0, "a")])).unwrap();
        assert_eq!(summary(&out), expected(500, "a", [2.0, 1.0, 2.0, 1.5, 2.0]));
        let mut h = host(r#"{"windowSeconds": 0.001}"#);
        let out = h.process(&batch(&[(0, 1.0, "a"), (1, 2.0, "a"), (u64::MAX, 3.0, "a"), (u64::MAX, 4.0, "a")])).unwrap();
        let got = summary(&out);
        assert_eq!(got.len(), 10);
        assert_eq!((got[0].0, got[5].0), (1, 2));
    }

    #[test]
    fn extreme_timestamps() {
        let mut h = host("{}");
        let out = h.process(&batch(&[(u64::MAX - 1, 1.0, "a"), (u64::MAX, 2.0, "a"), (0, 0.0, "a")])).unwrap();
        assert!(out.is_empty());
        assert_eq!(h.workload().late(), 1);
        // The last window of the timestamp range ends, saturated, at u64::MAX.
        let mut h = host(r#"{"windowSeconds": 1}"#);
        let out = h.process(&batch(&[(u64::MAX - 1, 1.0, "a"), (u64::MAX, 2.0, "a")])).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn length_change_keeps_windows_apart() {
        let mut h = host(r#"{"windowSeconds": 10}"#);
        h.process(&batch(&[(1_000, 1.0, "a")])).unwrap();
        h.configure(r#"{"config": {"windowSeconds": 4}}"#).unwrap();
        // 9 s is still in the open [0, 10 s) window; 11 s starts [10 s, 12 s), not [8 s, 12 s).
        let out = h.process(&batch(&[(9_000, 2.0, "a"), (11_000, 5.0, "a"), (12_500, 6.0, "a")])).unwrap();
        let mut want = expected(10_000, "a", [2.0, 1.0, 2.0, 1.5, 2.0]);
        want.extend(expected(12_000, "a", [1.0, 5.0, 5.0, 5.0, 5.0]));
        assert_eq!(summary(&out), want);
    }

    #[test]
    fn refuses_bad_configuration() {
        let mut h = host("{}");
        for (config, message) in [
            (r#"{"windowSeconds": 0}"#, "config.windowSeconds: must be at least 0.001 (one millisecond), got 0"),
            (r#"{"windowSeconds": -5}"#, "config.windowSeconds: must be at least 0.001 (one millisecond), got -5"),
            (r#"{"windowSeconds": 0.0004}"#, "config.windowSeconds: must be at least 0.001 (one millisecond), got 0.0004"),
            (r#"{"windowSeconds": 1e300}"#, "config.windowSeconds: must be at most 9007199254740 (2^53 milliseconds)"),
            (r#"{"windowSeconds": "10"}"#, "config.windowSeconds: expected a number, got a string"),
            (r#"{"window": 10}"#, "config.window: unknown key (known keys: windowSeconds)"),
        ] {
            assert_eq!(h.configure(&format!(r#"{{"config": {config}}}"#)).unwrap_err(), message);
        }
        assert_eq!(h.workload().window_ms(), 10_000);
    }

    #[test]
    fn runs_unconfigured_with_the_defaults() {
        let mut h: NativeHost<WindowAggregator> = NativeHost::new();
        let out = h.process(&batch(&[(1, 1.0, "a"), (10_001, 1.0, "a")])).unwrap();
        assert_eq!(summary(&out).len(), 5);
    }
}
