//! ONNX inference: builds feature rows from readings, runs the Workload's `onnx` Model on them
//! in the edge host (guest ABI v1.1, `edgeplane_sdk::nn`), and emits what the model answers.
//!
//! # Rows
//!
//! A row has one value per `(feature, stat)`, features in the order of `config.features`
//! (metric names of one device), and for each feature the stats in the order of
//! `config.stats`. That is the model's input: `float[rows, features x stats]`.
//!
//! - `window: 1` with `stats: ["last"]` (the default) aligns by timestamp: a device's row is
//!   complete when every feature has a reading with the same timestamp (a vector sent as one
//!   reading per component). Incomplete timestamps older than the device's newest
//!   [`PENDING_TIMESTAMPS`] are dropped and counted.
//! - Otherwise each feature keeps its last `window` readings, and every reading of the first
//!   feature makes a row once all windows are full: `last`, `mean`, `std` (population), `min`
//!   and `max` over each window.
//!
//! A batch's rows go to the model together, at most `maxRowsPerCall` per call, so that one
//! call amortizes the crossing into the host.
//!
//! # Outputs
//!
//! Output `predictions` (`config.predictions`, `null` for none) receives, per row and with the
//! row's device and timestamp, one reading per model output value: a label or a single value
//! as metric `<output name>` (`label`, `variable`, `scores`), a wider row as
//! `<output name>.<column>` (`probabilities.0`, `probabilities.1`). Output `alerts`
//! (`config.alerts`) receives the rows whose score (`config.score`, by default the last
//! probability column, else the first value output) is at or above `config.threshold`, or at
//! or below with `alertBelow: true` (an IsolationForest's score is low for outliers), as one
//! reading with the score. The cloud sink stamps every record with the Model's version.
//!
//! Non-finite values are not used and are counted ([`OnnxInference::skipped`]).
#![deny(unsafe_code)]

use std::collections::{BTreeMap, VecDeque};

use edgeplane_sdk::json::Value;
use edgeplane_sdk::nn::Session;
use edgeplane_sdk::{export_workload, log, Batch, Config, Emitter, Model, Reading, Workload};

/// Timestamps per device that may wait for their missing features (aligned rows).
pub const PENDING_TIMESTAMPS: usize = 16;
/// The largest window a feature may keep.
pub const MAX_WINDOW: usize = 10_000;
/// The most features x stats a row may have.
pub const MAX_ROW: usize = 4096;

/// A statistic over a feature's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    Last,
    Mean,
    Std,
    Min,
    Max,
}

impl Stat {
    fn parse(name: &str) -> Result<Stat, String> {
        match name {
            "last" => Ok(Stat::Last),
            "mean" => Ok(Stat::Mean),
            "std" => Ok(Stat::Std),
            "min" => Ok(Stat::Min),
            "max" => Ok(Stat::Max),
            other => Err(format!("config.stats: unknown stat \"{other}\" (last, mean, std, min, max)")),
        }
    }

    /// The statistic of a non-empty window (oldest first).
    pub fn of(self, window: &VecDeque<f64>) -> f64 {
        let n = window.len() as f64;
        match self {
            Stat::Last => window.back().copied().unwrap_or(0.0),
            Stat::Mean => window.iter().sum::<f64>() / n,
            Stat::Std => {
                let mean = window.iter().sum::<f64>() / n;
                (window.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt()
            }
            Stat::Min => window.iter().copied().fold(f64::INFINITY, f64::min),
            Stat::Max => window.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// One output of the model, as the registry described it.
#[derive(Debug, Clone, PartialEq)]
struct ModelOutput {
    name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub model: String,
    pub features: Vec<String>,
    pub stats: Vec<Stat>,
    pub window: usize,
    pub predictions: Option<String>,
    pub alerts: Option<String>,
    pub threshold: Option<f64>,
    pub alert_below: bool,
    /// `<output>` or `<output>.<column>`; `None` picks the default once outputs are seen.
    pub score: Option<String>,
    pub max_rows: usize,
    outputs: Vec<ModelOutput>,
}

impl Settings {
    /// Checks the configuration against the Model's signature.
    pub fn from_config(config: &Config) -> Result<Settings, String> {
        config.deny_unknown(&[
            "features",
            "stats",
            "window",
            "predictions",
            "alerts",
            "threshold",
            "alertBelow",
            "score",
            "maxRowsPerCall",
        ])?;
        let model = config.model().ok_or_else(|| "model: this workload needs a Model (spec.modelRef) of format onnx".to_owned())?;
        if model.format() != "onnx" {
            return Err(format!("model.format: expected onnx, got \"{}\"", model.format()));
        }
        let features = strings(config.get("features"), "features")?.ok_or_else(|| "config.features: required".to_owned())?;
        if features.is_empty() {
            return Err("config.features: name at least one metric".into());
        }
        let stats = match strings(config.get("stats"), "stats")? {
            None => vec![Stat::Last],
            Some(names) if names.is_empty() => return Err("config.stats: name at least one stat".into()),
            Some(names) => names.iter().map(|n| Stat::parse(n)).collect::<Result<Vec<_>, _>>()?,
        };
        let window = config.f64_or("window", 1.0)?;
        if !((1.0..=MAX_WINDOW as f64).contains(&window) && window.fract() == 0.0) {
            return Err(format!("config.window: expected a whole number from 1 to {MAX_WINDOW}, got {window}"));
        }
        let row = features.len() * stats.len();
        if row > MAX_ROW {
            return Err(format!("config: {row} values per row; at most {MAX_ROW}"));
        }
        let max_rows = config.f64_or("maxRowsPerCall", 256.0)?;
        if !((1.0..=4096.0).contains(&max_rows) && max_rows.fract() == 0.0) {
            return Err(format!("config.maxRowsPerCall: expected a whole number from 1 to 4096, got {max_rows}"));
        }
        let threshold = config.f64_opt("threshold")?;
        let alerts = optional_name(config, "alerts", if threshold.is_some() { Some("alerts") } else { None })?;
        if alerts.is_some() && threshold.is_none() {
            return Err("config.threshold: required with alerts".into());
        }
        let (inputs, outputs) = signature(model)?;
        check_input(model, &inputs, row)?;
        let settings = Settings {
            model: model.name().to_owned(),
            features,
            stats,
            window: window as usize,
            predictions: optional_name(config, "predictions", Some("predictions"))?,
            alerts,
            threshold,
            alert_below: config.bool_or("alertBelow", false)?,
            score: config.str_opt("score")?.map(str::to_owned),
            max_rows: max_rows as usize,
            outputs,
        };
        Ok(settings)
    }

    /// Values per row.
    pub fn row_len(&self) -> usize {
        self.features.len() * self.stats.len()
    }

    fn aligned(&self) -> bool {
        self.window == 1 && self.stats == [Stat::Last]
    }
}

fn strings(value: Option<&Value>, key: &str) -> Result<Option<Vec<String>>, String> {
    match value {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| v.as_str().map(str::to_owned).ok_or_else(|| format!("config.{key}[{i}]: expected a string, got {}", v.kind())))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(format!("config.{key}: expected an array of strings, got {}", other.kind())),
    }
}

/// An output name from the config: absent means `default`, `null` none.
fn optional_name(config: &Config, key: &str, default: Option<&str>) -> Result<Option<String>, String> {
    if config.keys().any(|k| k == key) && config.get(key).is_none() {
        return Ok(None);
    }
    Ok(config.str_opt(key)?.or(default).map(str::to_owned))
}

/// A model input's name and shape (each dimension a size or a free dimension's name).
type InputSpec = (String, Vec<String>);

/// The Model's inputs and outputs, from the registry's description.
fn signature(model: &Model) -> Result<(Vec<InputSpec>, Vec<ModelOutput>), String> {
    let artifact = model.artifact().ok_or_else(|| "model.artifact: missing (push the model with edgectl model push)".to_owned())?;
    let list = |key: &str| -> Result<&[Value], String> {
        artifact.get(key).and_then(Value::as_array).ok_or_else(|| format!("model.artifact.{key}: expected an array"))
    };
    let mut inputs = Vec::new();
    for input in list("inputs")? {
        let name = input.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
        let shape = match input.get("shape").and_then(Value::as_array) {
            Some(dims) => dims.iter().map(|d| d.as_str().unwrap_or("?").to_owned()).collect(),
            None => Vec::new(),
        };
        inputs.push((name, shape));
    }
    let outputs =
        list("outputs")?.iter().map(|o| ModelOutput { name: o.get("name").and_then(Value::as_str).unwrap_or("").to_owned() }).collect();
    Ok((inputs, outputs))
}

fn check_input(model: &Model, inputs: &[InputSpec], row: usize) -> Result<(), String> {
    if inputs.len() != 1 {
        return Err(format!("model {}: takes {} inputs; this workload feeds models with one", model.name(), inputs.len()));
    }
    let (name, shape) = &inputs[0];
    if shape.len() != 2 {
        return Err(format!("model {}: input {name} has rank {}; this workload feeds [rows, values]", model.name(), shape.len()));
    }
    match shape[1].parse::<usize>() {
        Ok(n) if n != row => Err(format!(
            "model {} takes {n} values per row (input {name} [{}, {}]); this configuration makes {row} (features x stats)",
            model.name(),
            shape[0],
            shape[1]
        )),
        _ => Ok(()),
    }
}

/// A device's recent readings of each feature.
#[derive(Debug, Default)]
struct Device {
    windows: Vec<VecDeque<f64>>,
    /// Aligned rows waiting for features: timestamp -> one slot per feature.
    pending: BTreeMap<u64, Vec<Option<f64>>>,
}

/// A row made from a batch, waiting for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct RowKey {
    pub device: String,
    pub timestamp_ms: u64,
}

#[derive(Debug, Default)]
pub struct OnnxInference {
    settings: Option<Settings>,
    session: Option<Session>,
    devices: BTreeMap<String, Device>,
    keys: Vec<RowKey>,
    values: Vec<f32>,
    output: Vec<f32>,
    skipped: u64,
    incomplete: u64,
}

impl OnnxInference {
    /// Non-finite readings left out so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Aligned rows dropped because a feature never arrived.
    pub fn incomplete(&self) -> u64 {
        self.incomplete
    }

    /// Takes a checked configuration without binding a model (native tests of the rows).
    pub fn with_settings(settings: Settings) -> OnnxInference {
        OnnxInference { settings: Some(settings), ..OnnxInference::default() }
    }

    /// The rows completed so far, and their values (row-major).
    pub fn take_rows(&mut self) -> (Vec<RowKey>, Vec<f32>) {
        (std::mem::take(&mut self.keys), std::mem::take(&mut self.values))
    }

    /// Adds one reading; the rows it completes wait for [`OnnxInference::take_rows`] or the
    /// end of the batch.
    pub fn add_reading(&mut self, r: &Reading<'_>) {
        let settings = match &self.settings {
            Some(s) => s,
            None => return,
        };
        let feature = match settings.features.iter().position(|f| f == r.metric) {
            Some(i) => i,
            None => return,
        };
        if !r.value.is_finite() {
            self.skipped += 1;
            return;
        }
        let n = settings.features.len();
        let device = self
            .devices
            .entry(r.device.to_owned())
            .or_insert_with(|| Device { windows: (0..n).map(|_| VecDeque::new()).collect(), pending: BTreeMap::new() });
        if settings.aligned() {
            let slots = device.pending.entry(r.timestamp_ms).or_insert_with(|| vec![None; n]);
            slots[feature] = Some(r.value);
            if slots.iter().all(Option::is_some) {
                let row: Vec<f64> = slots.iter().map(|v| v.unwrap_or(0.0)).collect();
                device.pending.remove(&r.timestamp_ms);
                self.keys.push(RowKey { device: r.device.to_owned(), timestamp_ms: r.timestamp_ms });
                self.values.extend(row.iter().map(|&v| v as f32));
            }
            while device.pending.len() > PENDING_TIMESTAMPS {
                let oldest = *device.pending.keys().next().expect("not empty");
                device.pending.remove(&oldest);
                self.incomplete += 1;
            }
            return;
        }
        let window = &mut device.windows[feature];
        window.push_back(r.value);
        if window.len() > settings.window {
            window.pop_front();
        }
        if feature == 0 && device.windows.iter().all(|w| w.len() == settings.window) {
            self.keys.push(RowKey { device: r.device.to_owned(), timestamp_ms: r.timestamp_ms });
            for w in &device.windows {
                for stat in &settings.stats {
                    self.values.push(stat.of(w) as f32);
                }
            }
        }
    }

    /// Runs the model on the rows and emits the answers.
    fn infer(&mut self, out: &mut Emitter) -> Result<(), String> {
        let (keys, values) = self.take_rows();
        if keys.is_empty() {
            return Ok(());
        }
        let settings = self.settings.as_ref().ok_or("not configured")?;
        let session = self.session.as_mut().ok_or("no model bound")?;
        let row = settings.row_len();
        for (chunk_keys, chunk) in keys.chunks(settings.max_rows).zip(values.chunks(settings.max_rows * row)) {
            session.set_input(0, &[chunk_keys.len() as u32, row as u32], chunk).map_err(|e| format!("model input: {e}"))?;
            session.compute().map_err(|e| format!("model {}: {e}", settings.model))?;
            // Per output: (metric names, values per row, the values).
            let mut answers: Vec<(Vec<String>, Vec<f32>)> = Vec::with_capacity(settings.outputs.len());
            for (index, output) in settings.outputs.iter().enumerate() {
                let shape = session.output(index as u32, &mut self.output).map_err(|e| format!("model output {}: {e}", output.name))?;
                let columns = if shape.len() >= 2 { shape[1..].iter().product::<u32>() as usize } else { 1 };
                if shape.first().map(|&n| n as usize) != Some(chunk_keys.len()) || self.output.len() != chunk_keys.len() * columns {
                    return Err(format!("model output {}: shape {shape:?} for {} rows", output.name, chunk_keys.len()));
                }
                let names =
                    if columns == 1 { vec![output.name.clone()] } else { (0..columns).map(|c| format!("{}.{c}", output.name)).collect() };
                answers.push((names, self.output.clone()));
            }
            let score = score_column(settings, &answers);
            for (i, key) in chunk_keys.iter().enumerate() {
                for (names, values) in &answers {
                    let columns = names.len();
                    for (c, name) in names.iter().enumerate() {
                        let value = f64::from(values[i * columns + c]);
                        if let Some(predictions) = &settings.predictions {
                            out.emit(predictions, Reading { timestamp_ms: key.timestamp_ms, value, device: &key.device, metric: name });
                        }
                    }
                }
                if let (Some(alerts), Some(threshold), Some((output, column, name))) = (&settings.alerts, settings.threshold, &score) {
                    let (names, values) = &answers[*output];
                    let value = f64::from(values[i * names.len() + column]);
                    let alarming = if settings.alert_below { value <= threshold } else { value >= threshold };
                    if alarming {
                        out.emit(alerts, Reading { timestamp_ms: key.timestamp_ms, value, device: &key.device, metric: name });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Which value is the score: `(output index, column, metric name)`.
fn score_column(settings: &Settings, answers: &[(Vec<String>, Vec<f32>)]) -> Option<(usize, usize, String)> {
    match &settings.score {
        Some(wanted) => {
            answers.iter().enumerate().find_map(|(o, (names, _))| names.iter().position(|n| n == wanted).map(|c| (o, c, wanted.clone())))
        }
        None => {
            let wide = answers.iter().position(|(names, _)| names.len() > 1);
            let chosen = wide.or_else(|| settings.outputs.iter().position(|o| o.name != "label")).unwrap_or(0);
            let names = &answers.get(chosen)?.0;
            Some((chosen, names.len() - 1, names[names.len() - 1].clone()))
        }
    }
}

impl Workload for OnnxInference {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        let settings = Settings::from_config(config)?;
        let session = Session::bind(&settings.model).map_err(|e| format!("model {}: {e}", settings.model))?;
        if let Some(score) = &settings.score {
            let known = settings.outputs.iter().any(|o| score == &o.name || score.starts_with(&format!("{}.", o.name)));
            if !known {
                return Err(format!("config.score: {score} is not an output of model {}", settings.model));
            }
        }
        // Windows are per feature: a new feature list starts them over.
        if self.settings.as_ref().map(|s| (&s.features, s.window, &s.stats)) != Some((&settings.features, settings.window, &settings.stats))
        {
            self.devices.clear();
        }
        self.settings = Some(settings);
        self.session = Some(session);
        Ok(())
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Emitter) {
        for r in batch.iter() {
            self.add_reading(&r);
        }
        if let Err(e) = self.infer(out) {
            log::error(&format!("inference: {e}"));
        }
    }
}

export_workload!(OnnxInference);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(config: &str, inputs: &str) -> Config {
        let doc = format!(
            r#"{{"config": {config}, "model": {{"name": "m", "version": "1.0.0", "format": "onnx",
                "artifact": {{"digest": "sha256:00", "sizeBytes": 1, "backends": ["tract"],
                  "inputs": [{{"name": "input", "elemType": "float", "shape": {inputs}}}],
                  "outputs": [{{"name": "label", "elemType": "int64", "shape": ["?"]}},
                              {{"name": "probabilities", "elemType": "float", "shape": ["?", "2"]}}]}}}}}}"#
        );
        Config::parse(&doc).expect("a valid document")
    }

    fn reading<'a>(device: &'a str, metric: &'a str, timestamp_ms: u64, value: f64) -> Reading<'a> {
        Reading { timestamp_ms, value, device, metric }
    }

    #[test]
    fn aligned_rows_are_complete_vectors_in_feature_order() {
        let settings = Settings::from_config(&config(r#"{"features": ["a", "b", "c"]}"#, r#"["?", "3"]"#)).expect("valid");
        let mut w = OnnxInference::with_settings(settings);
        // Components arrive in any order, two timestamps interleaved; other metrics ignored.
        for r in [
            reading("d", "c", 2, 30.0),
            reading("d", "a", 1, 1.0),
            reading("d", "noise", 1, 9.0),
            reading("d", "b", 1, 2.0),
            reading("d", "a", 2, 10.0),
            reading("e", "a", 1, 7.0),
            reading("d", "c", 1, 3.0),
            reading("d", "b", 2, f64::NAN),
            reading("d", "b", 2, 20.0),
        ] {
            w.add_reading(&r);
        }
        let (keys, values) = w.take_rows();
        let keys: Vec<(&str, u64)> = keys.iter().map(|k| (k.device.as_str(), k.timestamp_ms)).collect();
        assert_eq!(keys, [("d", 1), ("d", 2)]);
        assert_eq!(values, [1.0, 2.0, 3.0, 10.0, 20.0, 30.0]);
        assert_eq!(w.skipped(), 1);
    }

    #[test]
    fn incomplete_timestamps_are_dropped_and_counted() {
        let settings = Settings::from_config(&config(r#"{"features": ["a", "b"]}"#, r#"["?", "2"]"#)).expect("valid");
        let mut w = OnnxInference::with_settings(settings);
        for t in 0..(PENDING_TIMESTAMPS as u64 + 5) {
            w.add_reading(&reading("d", "a", t, 1.0));
        }
        assert_eq!(w.incomplete(), 5);
        assert!(w.take_rows().0.is_empty());
    }

    #[test]
    fn windowed_rows_carry_each_stat_of_each_feature() {
        let settings =
            Settings::from_config(&config(r#"{"features": ["x", "y"], "window": 3, "stats": ["mean", "std", "max"]}"#, r#"["?", "6"]"#))
                .expect("valid");
        let mut w = OnnxInference::with_settings(settings);
        for (t, (x, y)) in [(1.0, 5.0), (2.0, 5.0), (3.0, 5.0), (6.0, 8.0)].iter().enumerate() {
            w.add_reading(&reading("d", "y", t as u64, *y));
            w.add_reading(&reading("d", "x", t as u64, *x));
        }
        let (keys, values) = w.take_rows();
        // Rows once both windows hold 3: at t = 2 and t = 3.
        assert_eq!(keys.len(), 2);
        let std123 = (2.0f64 / 3.0).sqrt() as f32;
        assert_eq!(&values[..6], &[2.0, std123, 3.0, 5.0, 0.0, 5.0]);
        // x = [2, 3, 6]: mean 11/3, population variance 26/9; y = [5, 5, 8]: mean 6, variance 2.
        assert_eq!(&values[6..], &[11.0 / 3.0, (26.0f64 / 9.0).sqrt() as f32, 6.0, 6.0, 2.0f32.sqrt(), 8.0]);
    }

    #[test]
    fn a_model_whose_input_does_not_fit_the_features_is_refused() {
        let refused = Settings::from_config(&config(r#"{"features": ["a", "b"]}"#, r#"["?", "30"]"#)).expect_err("2 vs 30");
        assert_eq!(refused, "model m takes 30 values per row (input input [?, 30]); this configuration makes 2 (features x stats)");
        let wrong_format = Config::parse(r#"{"config": {"features": ["a"]}, "model": {"format": "zscore-logistic/v1"}}"#).expect("valid");
        assert!(Settings::from_config(&wrong_format).expect_err("not onnx").contains("expected onnx"));
        let unknown = Settings::from_config(&config(r#"{"features": ["a"], "stats": ["median"]}"#, r#"["?", "1"]"#)).expect_err("median");
        assert!(unknown.contains("unknown stat \"median\""), "{unknown}");
    }
}
