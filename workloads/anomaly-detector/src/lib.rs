//! Anomaly detector: scores each reading with the Workload's `Model` and emits the ones that
//! score at or above a threshold.
//!
//! Per (device, metric) stream it keeps an exponentially weighted moving average of the
//! absolute first difference, the stream's volatility, 0 at the first reading:
//!
//! ```text
//! vol = alpha * |x - prev| + (1 - alpha) * vol
//! ```
//!
//! The features of a reading are its value and the volatility after it.
//!
//! Model format `zscore-logistic/v1`, parameters `mean` (2 numbers), `stddev` (2 numbers, all
//! > 0), `weights` (2 numbers), `bias` (1 number):
//!
//! ```text
//! z_i   = (x_i - mean_i) / stddev_i
//! score = sigmoid(weights_0 * |z_0| + weights_1 * |z_1| + bias_0)
//! ```
//!
//! Config (`spec.config`): `alpha` (EWMA factor in (0, 1], default 0.2), `threshold` (score in
//! [0, 1] from which a reading is an anomaly, default 0.5).
//!
//! Output `alerts`: one reading per anomaly, with the reading's timestamp and device, the score
//! as value and metric `<metric>.anomaly`.
//!
//! A new model or config takes effect from the next batch; the streams' volatility is kept.
//! NaN and infinite values are not scored and do not update the volatility; they are counted
//! ([`AnomalyDetector::skipped`]) and logged at debug level once per batch.
#![deny(unsafe_code)]

use edgeplane_sdk::{export_workload, log, math, Batch, Config, Emitter, Model, Reading, StreamMap, Workload};

pub const ALERTS: &str = "alerts";

/// The model formats this workload understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Scorer {
    /// `zscore-logistic/v1`.
    ZscoreLogistic { mean: [f64; 2], stddev: [f64; 2], weights: [f64; 2], bias: f64 },
}

impl Scorer {
    pub const FORMATS: &'static [&'static str] = &["zscore-logistic/v1"];

    pub fn from_model(model: &Model) -> Result<Self, String> {
        match model.format() {
            "zscore-logistic/v1" => {
                let pair = |name: &str| -> Result<[f64; 2], String> {
                    let values = finite(name, model.param_array(name, 2)?)?;
                    Ok([values[0], values[1]])
                };
                let mean = pair("mean")?;
                let stddev = pair("stddev")?;
                if let Some(bad) = stddev.iter().find(|&&s| s <= 0.0) {
                    return Err(format!("model.parameters.stddev: must all be greater than 0, got {bad}"));
                }
                let weights = pair("weights")?;
                let bias = finite("bias", model.param_array("bias", 1)?)?[0];
                Ok(Self::ZscoreLogistic { mean, stddev, weights, bias })
            }
            other => Err(format!("model.format: unsupported format \"{other}\" (supported: {})", Self::FORMATS.join(", "))),
        }
    }

    /// The anomaly score in [0, 1] of a reading with `value` and the stream's `volatility`.
    #[inline]
    pub fn score(&self, value: f64, volatility: f64) -> f64 {
        sigmoid(self.logit(value, volatility))
    }

    /// The score before the sigmoid.
    #[inline]
    fn logit(&self, value: f64, volatility: f64) -> f64 {
        match self {
            Self::ZscoreLogistic { mean, stddev, weights, bias } => {
                let z0 = (value - mean[0]) / stddev[0];
                let z1 = (volatility - mean[1]) / stddev[1];
                weights[0] * z0.abs() + weights[1] * z1.abs() + bias
            }
        }
    }
}

fn finite<'a>(name: &str, values: &'a [f64]) -> Result<&'a [f64], String> {
    // The JSON parser refuses numbers out of range, but `Config::from_value` takes any value.
    match values.iter().find(|v| !v.is_finite()) {
        Some(bad) => Err(format!("model.parameters.{name}: must be finite, got {bad}")),
        None => Ok(values),
    }
}

/// With the SDK's `exp`, so that scores are the same bits natively and in wasm.
#[inline]
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + math::exp(-x))
}

#[derive(Debug, Clone, PartialEq)]
struct Settings {
    scorer: Scorer,
    alpha: f64,
    threshold: f64,
    /// Readings whose logit is below this cannot score `threshold`, so they skip `exp`, most
    /// of the work otherwise (see `logit_cutoff`).
    cutoff: f64,
}

/// The sigmoid is increasing, so `score >= threshold` needs `logit >= ln(t / (1 - t))`. The
/// margin keeps the shortcut exact despite rounding in `exp` and in the cutoff itself: for
/// `t` within [1e-6, 1 - 1e-6] the sigmoid rises by over 1e-13 across it, orders of
/// magnitude more than those errors. Closer to 0 or 1 every reading is scored.
fn logit_cutoff(threshold: f64) -> f64 {
    if (1e-6..=1.0 - 1e-6).contains(&threshold) {
        (threshold / (1.0 - threshold)).ln() - 1e-6
    } else {
        f64::NEG_INFINITY
    }
}

#[derive(Debug, Default)]
pub struct AnomalyDetector {
    /// `None` until configured with a model.
    settings: Option<Settings>,
    streams: StreamMap<Volatility>,
    skipped: u64,
    /// Reused to build the alerts' metric names.
    metric: String,
}

#[derive(Debug, Clone, Copy)]
struct Volatility {
    prev: f64,
    vol: f64,
}

const DEFAULT_ALPHA: f64 = 0.2;
const DEFAULT_THRESHOLD: f64 = 0.5;

impl AnomalyDetector {
    /// Readings not scored because their value was NaN or infinite.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The model in use, once configured.
    pub fn scorer(&self) -> Option<&Scorer> {
        self.settings.as_ref().map(|s| &s.scorer)
    }

    /// The volatility of a stream after its last reading.
    pub fn volatility(&self, device: &str, metric: &str) -> Option<f64> {
        self.streams.get(device, metric).map(|s| s.state.vol)
    }
}

impl Workload for AnomalyDetector {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.deny_unknown(&["alpha", "threshold"])?;
        let alpha = config.f64_or("alpha", DEFAULT_ALPHA)?;
        if !(alpha > 0.0 && alpha <= 1.0) {
            return Err(format!("config.alpha: must be greater than 0 and at most 1, got {alpha}"));
        }
        let threshold = config.f64_or("threshold", DEFAULT_THRESHOLD)?;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(format!("config.threshold: must be between 0 and 1, got {threshold}"));
        }
        let model = config.model().ok_or("model: required (format zscore-logistic/v1)")?;
        let scorer = Scorer::from_model(model)?;
        self.settings = Some(Settings { scorer, alpha, threshold, cutoff: logit_cutoff(threshold) });
        Ok(())
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Emitter) {
        // The SDK configures before the first batch and refuses batches if that fails.
        let settings = match &self.settings {
            Some(settings) => settings,
            None => return,
        };
        let skipped = self.skipped;
        for reading in batch.iter() {
            let x = reading.value;
            if !x.is_finite() {
                self.skipped += 1;
                continue;
            }
            let stream = self.streams.get_or_insert_with(reading.device, reading.metric, || Volatility { prev: x, vol: 0.0 });
            let state = &mut stream.state;
            state.vol = settings.alpha * (x - state.prev).abs() + (1.0 - settings.alpha) * state.vol;
            state.prev = x;
            let logit = settings.scorer.logit(x, state.vol);
            if logit < settings.cutoff {
                continue;
            }
            let score = sigmoid(logit);
            if score >= settings.threshold {
                self.metric.clear();
                self.metric.push_str(reading.metric);
                self.metric.push_str(".anomaly");
                out.emit(
                    ALERTS,
                    Reading { timestamp_ms: reading.timestamp_ms, value: score, device: reading.device, metric: &self.metric },
                );
            }
        }
        if self.skipped > skipped {
            log::debug(&format!("not scored in this batch: {} NaN or infinite readings ({} in all)", self.skipped - skipped, self.skipped));
        }
    }
}

export_workload!(AnomalyDetector);

#[cfg(test)]
mod tests {
    use super::*;
    use edgeplane_sdk::{encode_batch, NativeHost};

    const MODEL: &str = r#"{"name": "press", "version": "1.0.0", "format": "zscore-logistic/v1",
        "parameters": {"mean": [20, 0.5], "stddev": [2, 0.25], "weights": [1.5, 1.0], "bias": [-6]}}"#;

    fn document(config: &str, model: &str) -> String {
        format!(r#"{{"config": {config}, "model": {model}}}"#)
    }

    fn host(config: &str) -> NativeHost<AnomalyDetector> {
        let mut host = NativeHost::new();
        host.configure(&document(config, MODEL)).unwrap();
        host
    }

    fn batch(readings: &[(u64, f64, &str)]) -> Vec<u8> {
        encode_batch(readings.iter().map(|&(timestamp_ms, value, device)| Reading { timestamp_ms, value, device, metric: "temp" })).unwrap()
    }

    fn alerts(out: &[(String, Vec<u8>)]) -> Vec<(u64, String, String, f64)> {
        out.iter()
            .flat_map(|(name, data)| {
                assert_eq!(name, ALERTS);
                Batch::parse(data)
                    .unwrap()
                    .iter()
                    .map(|r| (r.timestamp_ms, r.device.to_owned(), r.metric.to_owned(), r.value))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The model, written out independently of `Scorer::score`.
    fn reference_score(x: f64, vol: f64) -> f64 {
        let s = 1.5 * ((x - 20.0) / 2.0).abs() + 1.0 * ((vol - 0.5) / 0.25).abs() - 6.0;
        1.0 / (1.0 + (-s).exp())
    }

    #[test]
    fn scores_match_the_model_and_volatility_is_an_ewma() {
        // threshold 0 emits every reading, so every score can be checked.
        let mut h = host(r#"{"alpha": 0.5, "threshold": 0}"#);
        let values = [20.0, 21.0, 19.0, 30.0, 30.0];
        let readings: Vec<_> = values.iter().enumerate().map(|(i, &v)| (i as u64, v, "a")).collect();
        let got = alerts(&h.process(&batch(&readings)).unwrap());
        let mut vol = 0.0;
        let mut prev = values[0];
        for (i, &x) in values.iter().enumerate() {
            vol = 0.5 * f64::abs(x - prev) + 0.5 * vol;
            prev = x;
            let (ts, device, metric, score) = &got[i];
            assert_eq!((*ts, device.as_str(), metric.as_str()), (i as u64, "a", "temp.anomaly"));
            assert!((score - reference_score(x, vol)).abs() < 1e-12, "reading {i}: {score}");
        }
        assert_eq!(h.workload().volatility("a", "temp"), Some(vol));
    }

    #[test]
    fn the_cutoff_changes_no_decision() {
        // Scores spread over the whole range, and thresholds at the edges of the shortcut.
        let mut readings = Vec::new();
        let mut x = 20.0f64;
        for i in 0..20_000u64 {
            x += ((i * 7919 % 1000) as f64 / 1000.0 - 0.5) * 4.0;
            readings.push((i, x, "a"));
        }
        let data = batch(&readings);
        for threshold in [0.0, 1e-7, 1e-6, 0.01, 0.3, 0.5, 0.7, 0.99, 1.0 - 1e-6, 1.0 - 1e-7, 1.0] {
            let mut h = host(&format!(r#"{{"threshold": {threshold}}}"#));
            let got: Vec<u64> = alerts(&h.process(&data).unwrap()).iter().map(|a| a.0).collect();
            let (mut vol, mut prev) = (0.0, readings[0].1);
            let mut want = Vec::new();
            for &(ts, x, _) in &readings {
                vol = 0.2 * f64::abs(x - prev) + 0.8 * vol;
                prev = x;
                if h.workload().scorer().unwrap().score(x, vol) >= threshold {
                    want.push(ts);
                }
            }
            assert_eq!(got, want, "threshold {threshold}");
        }
    }

    #[test]
    fn emits_only_anomalies() {
        let mut h = host("{}");
        // Calm around the mean, then a jump: the jump and its aftermath score high.
        let out = h.process(&batch(&[(1, 20.0, "a"), (2, 20.2, "a"), (3, 19.9, "a"), (4, 35.0, "a"), (5, 20.0, "b")])).unwrap();
        let got = alerts(&out);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0, got[0].1.as_str()), (4, "a"));
        assert!(got[0].3 >= 0.5);
    }

    #[test]
    fn streams_keep_their_own_volatility() {
        let mut h = host("{}");
        h.process(&batch(&[(1, 20.0, "a"), (2, 30.0, "a"), (3, 20.0, "b")])).unwrap();
        assert_eq!(h.workload().volatility("a", "temp"), Some(0.2 * 10.0));
        assert_eq!(h.workload().volatility("b", "temp"), Some(0.0));
    }

    #[test]
    fn model_update_keeps_state_and_applies_to_the_next_batch() {
        let mut h = host(r#"{"threshold": 0.99}"#);
        h.process(&batch(&[(1, 20.0, "a"), (2, 25.0, "a")])).unwrap();
        let vol = h.workload().volatility("a", "temp").unwrap();
        let eager = MODEL.replace("[-6]", "[6]");
        h.configure(&document(r#"{"threshold": 0.99}"#, &eager)).unwrap();
        assert_eq!(h.workload().volatility("a", "temp"), Some(vol));
        let got = alerts(&h.process(&batch(&[(3, 25.0, "a")])).unwrap());
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn skips_non_finite_values() {
        let mut h = host(r#"{"threshold": 0}"#);
        let out = h.process(&batch(&[(1, f64::NAN, "a"), (2, f64::INFINITY, "a"), (3, 20.0, "a")])).unwrap();
        assert_eq!(alerts(&out).len(), 1);
        assert_eq!(h.workload().skipped(), 2);
        assert_eq!(h.workload().volatility("a", "temp"), Some(0.0));
    }

    #[test]
    fn refuses_bad_configuration_and_keeps_the_old_one() {
        let mut h = host("{}");
        let params = |p: &str| format!(r#"{{"format": "zscore-logistic/v1", "parameters": {p}}}"#);
        let cases = [
            document("{}", "null"),
            document("{}", r#"{"format": "mlp/v1"}"#),
            document("{}", &params(r#"{"stddev": [1, 1], "weights": [1, 1], "bias": 0}"#)),
            document("{}", &params(r#"{"mean": [0, 0, 0], "stddev": [1, 1], "weights": [1, 1], "bias": 0}"#)),
            document("{}", &params(r#"{"mean": [0, 0], "stddev": [1, 0], "weights": [1, 1], "bias": 0}"#)),
            document("{}", &params(r#"{"mean": [0, 0], "stddev": [1, 1], "weights": "x", "bias": 0}"#)),
            document("{}", &params(r#"{"mean": [0, 0], "stddev": [1, 1], "weights": [1, 1], "bias": [0, 1]}"#)),
            document(r#"{"alpha": 0}"#, MODEL),
            document(r#"{"alpha": 1.5}"#, MODEL),
            document(r#"{"threshold": 2}"#, MODEL),
            document(r#"{"threshold": true}"#, MODEL),
            document(r#"{"alfa": 0.3}"#, MODEL),
        ];
        let messages = [
            "model: required (format zscore-logistic/v1)",
            "model.format: unsupported format \"mlp/v1\" (supported: zscore-logistic/v1)",
            "model.parameters.mean: required",
            "model.parameters.mean: expected 2 numbers, got 3",
            "model.parameters.stddev: must all be greater than 0, got 0",
            "model.parameters.weights: expected an array of numbers, got a string",
            "model.parameters.bias: expected 1 number, got 2",
            "config.alpha: must be greater than 0 and at most 1, got 0",
            "config.alpha: must be greater than 0 and at most 1, got 1.5",
            "config.threshold: must be between 0 and 1, got 2",
            "config.threshold: expected a number, got a boolean",
            "config.alfa: unknown key (known keys: alpha, threshold)",
        ];
        for (doc, message) in cases.iter().zip(messages) {
            assert_eq!(h.configure(doc).unwrap_err(), message);
        }
        let Scorer::ZscoreLogistic { bias, .. } = h.workload().scorer().unwrap();
        assert_eq!(*bias, -6.0);
    }

    #[test]
    fn needs_a_model_before_the_first_batch() {
        let mut h: NativeHost<AnomalyDetector> = NativeHost::new();
        assert_eq!(h.process(&batch(&[(1, 1.0, "a")])), Err(edgeplane_sdk::code::NOT_CONFIGURED));
    }
}
