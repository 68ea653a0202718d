//! The four workloads, as built wasm modules running in the host, against plain Rust
//! implementations of the same logic written here from their specifications (not the
//! workloads' own code), on known inputs. Needs `scripts/build-workloads.sh`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edgeplane_edge_runtime::host::{CompiledModule, HostConfig, Instance, InstanceLimits, WasmHost};
use edgeplane_edge_runtime::pool::{InstanceSpec, RestartPolicy, WasmPool};

#[derive(Debug, Clone, PartialEq)]
struct Reading {
    ts: u64,
    value: f64,
    device: String,
    metric: String,
}

fn r(ts: u64, value: f64, device: &str, metric: &str) -> Reading {
    Reading { ts, value, device: device.into(), metric: metric.into() }
}

/// The ABI v1 batch format, written out here independently of the SDK.
fn encode(readings: &[Reading]) -> Vec<u8> {
    let mut out = (readings.len() as u32).to_le_bytes().to_vec();
    for r in readings {
        out.extend(r.ts.to_le_bytes());
        out.extend(r.value.to_le_bytes());
        for s in [&r.device, &r.metric] {
            out.extend((s.len() as u16).to_le_bytes());
            out.extend(s.as_bytes());
        }
    }
    out
}

fn decode(bytes: &[u8]) -> Vec<Reading> {
    let mut at = 0;
    let mut take = |n: usize| {
        let slice = &bytes[at..at + n];
        at += n;
        slice
    };
    let count = u32::from_le_bytes(take(4).try_into().expect("4 bytes"));
    (0..count)
        .map(|_| {
            let ts = u64::from_le_bytes(take(8).try_into().expect("8 bytes"));
            let value = f64::from_le_bytes(take(8).try_into().expect("8 bytes"));
            let mut text = || {
                let len = u16::from_le_bytes(take(2).try_into().expect("2 bytes")) as usize;
                String::from_utf8(take(len).to_vec()).expect("utf-8")
            };
            let device = text();
            let metric = text();
            Reading { ts, value, device, metric }
        })
        .collect()
}

fn host() -> Arc<WasmHost> {
    Arc::new(WasmHost::new(HostConfig { max_instances: 16, ..HostConfig::default() }).expect("host"))
}

/// The built module `target/workloads/<name>.wasm`, loaded.
fn load(host: &WasmHost, name: &str) -> CompiledModule {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/workloads").join(format!("{name}.wasm"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-workloads.sh", path.display()));
    host.load(&bytes).expect("the workload loads")
}

fn start(host: &WasmHost, name: &str, outputs: &[&str], config: &str) -> Instance {
    let module = load(host, name);
    let limits = InstanceLimits {
        memory_bytes: 16 << 20,
        batch_deadline: Duration::from_secs(2),
        outputs: outputs.iter().map(|o| (*o).to_owned()).collect(),
        log_name: name.into(),
    };
    host.instantiate(&module, limits, config.as_bytes(), None).unwrap_or_else(|e| panic!("{name} does not start: {e}"))
}

/// The SDK's `ep_process_validated` (ABI 1.2), which skips checking the batch, emits exactly
/// what its `ep_process` emits, batch after batch, in every workload.
#[test]
fn every_workload_answers_a_validated_batch_as_it_answers_one_it_checks() {
    let host = host();
    let model = r#""model":{"name":"vibration","version":"1.0.0","format":"zscore-logistic/v1",
        "parameters":{"mean":[20.0,0.4],"stddev":[2.0,0.15],"weights":[1.8,2.4],"bias":[-6.0]}}"#;
    let detector = format!(r#"{{"config":{{"threshold":0.5}},{model}}}"#);
    let workloads: [(&str, &[&str], &str); 4] = [
        ("threshold-filter", &["out-of-range"], r#"{"config":{"min":17.0,"max":23.5}}"#),
        ("window-aggregator", &["summary"], r#"{"config":{"windowSeconds":1}}"#),
        ("anomaly-detector", &["alerts"], &detector),
        ("ts-compressor", &["compressed"], r#"{"config":{"step":0.05}}"#),
    ];
    // Validated batches hold finite values only (`validate_batch`).
    let data: Vec<Reading> = sensor_data(3000).into_iter().filter(|r| r.value.is_finite()).collect();
    for (name, outputs, config) in workloads {
        assert!(load(&host, name).takes_validated_batches(), "{name} exports no ep_process_validated");
        let mut checking = start(&host, name, outputs, config);
        let mut trusting = start(&host, name, outputs, config);
        let mut emitted = 0;
        for (n, chunk) in data.chunks(200).enumerate() {
            let batch = encode(chunk);
            let checked = checking.process(&batch).expect("processes");
            let validated = trusting.process_validated(&batch).expect("processes");
            let sizes = |emitted: &[(usize, Vec<u8>)]| emitted.iter().map(|(output, data)| (*output, data.len())).collect::<Vec<_>>();
            assert!(
                checked == validated,
                "{name}: batch {n} emitted differently: (output, bytes) {:?} through ep_process, {:?} through ep_process_validated",
                sizes(&checked),
                sizes(&validated)
            );
            emitted += checked.len();
        }
        assert!(emitted > 0, "{name} emitted nothing: the comparison would mean nothing");
    }
}

/// Runs a batch and returns the readings emitted per output name.
fn run(instance: &mut Instance, outputs: &[&str], batch: &[Reading]) -> BTreeMap<String, Vec<Reading>> {
    let mut out: BTreeMap<String, Vec<Reading>> = BTreeMap::new();
    for (index, bytes) in instance.process(&encode(batch)).expect("processes") {
        out.entry(outputs[index].to_owned()).or_default().extend(decode(&bytes));
    }
    out
}

/// Deterministic sensor data: several devices, drift, noise, spikes and a NaN.
fn sensor_data(n: usize) -> Vec<Reading> {
    let mut seed = 7u64;
    let mut noise = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5
    };
    (0..n)
        .map(|i| {
            let device = format!("press-{}", i % 5);
            let ts = 1_000_000 + (i as u64 / 5) * 700;
            let mut value = 20.0 + (i as f64 / 50.0).sin() * 4.0 + noise() * 3.0;
            if i % 97 == 13 {
                value += 40.0;
            }
            if i == 250 {
                value = f64::NAN;
            }
            r(ts, value, &device, if i % 2 == 0 { "temperature" } else { "vibration" })
        })
        .collect()
}

#[test]
fn threshold_filter_forwards_exactly_the_readings_outside_the_range() {
    let host = host();
    let outputs = ["out-of-range", "in-range"];
    let mut filter = start(&host, "threshold-filter", &outputs, r#"{"config":{"min":17.0,"max":23.5,"forwardInRange":true}}"#);
    let data = sensor_data(1000);
    let mut got: BTreeMap<String, Vec<Reading>> = BTreeMap::new();
    for chunk in data.chunks(128) {
        for (k, v) in run(&mut filter, &outputs, chunk) {
            got.entry(k).or_default().extend(v);
        }
    }
    let outside: Vec<&Reading> = data.iter().filter(|r| r.value.is_nan() || r.value < 17.0 || r.value > 23.5).collect();
    let inside: Vec<&Reading> = data.iter().filter(|r| r.value >= 17.0 && r.value <= 23.5).collect();
    assert!(outside.len() > 50 && inside.len() > 50, "the data should exercise both sides");
    let same = |a: &Reading, b: &Reading| {
        a.ts == b.ts && a.device == b.device && a.metric == b.metric && (a.value == b.value || (a.value.is_nan() && b.value.is_nan()))
    };
    let out = &got["out-of-range"];
    assert_eq!(out.len(), outside.len(), "out-of-range count");
    assert!(out.iter().zip(&outside).all(|(a, b)| same(a, b)), "out-of-range readings differ");
    assert_eq!(got["in-range"].len(), inside.len(), "in-range count");
}

#[test]
fn window_aggregator_summarises_each_device_and_window() {
    let host = host();
    let outputs = ["summary"];
    let mut aggregator = start(&host, "window-aggregator", &outputs, r#"{"config":{"windowSeconds":10}}"#);
    // Finite values only: a NaN's effect on min/max is a matter of convention.
    let data: Vec<Reading> = sensor_data(3000).into_iter().filter(|r| r.value.is_finite()).collect();
    let mut got = Vec::new();
    for chunk in data.chunks(200) {
        got.extend(run(&mut aggregator, &outputs, chunk).remove("summary").unwrap_or_default());
    }

    // Reference: tumbling windows aligned to multiples of 10 s, emitted when a later reading of
    // the same stream arrives.
    struct Window {
        start: u64,
        count: u64,
        min: f64,
        max: f64,
        sum: f64,
        last: f64,
    }
    let mut open: BTreeMap<(String, String), Window> = BTreeMap::new();
    let mut expected = Vec::new();
    for reading in &data {
        let start = reading.ts - reading.ts % 10_000;
        let key = (reading.device.clone(), reading.metric.clone());
        if let Some(w) = open.get(&key).filter(|w| w.start < start) {
            let end = w.start + 10_000;
            for (suffix, value) in
                [("count", w.count as f64), ("min", w.min), ("max", w.max), ("mean", w.sum / w.count as f64), ("last", w.last)]
            {
                expected.push(r(end, value, &key.0, &format!("{}.{suffix}", key.1)));
            }
            open.remove(&key);
        }
        let w = open.entry(key).or_insert(Window { start, count: 0, min: f64::INFINITY, max: f64::NEG_INFINITY, sum: 0.0, last: 0.0 });
        w.count += 1;
        w.min = w.min.min(reading.value);
        w.max = w.max.max(reading.value);
        w.sum += reading.value;
        w.last = reading.value;
    }
    assert!(expected.len() > 100, "the data should close many windows");
    let sorted = |mut v: Vec<Reading>| {
        v.sort_by(|a, b| (a.ts, &a.device, &a.metric).cmp(&(b.ts, &b.device, &b.metric)));
        v
    };
    let (got, expected) = (sorted(got), sorted(expected));
    assert_eq!(got.len(), expected.len(), "number of summary readings");
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            g.ts == e.ts && g.device == e.device && g.metric == e.metric && (g.value - e.value).abs() <= 1e-9 * e.value.abs().max(1.0),
            "got {g:?}, expected {e:?}"
        );
    }
}

const MODEL_V1: &str = r#""model":{"name":"vib","version":"1.0.0","format":"zscore-logistic/v1",
    "parameters":{"mean":[20.0,0.5],"stddev":[2.0,0.5],"weights":[1.5,0.5],"bias":[-6.0]}}"#;
/// A far more sensitive model: most readings become anomalies.
const MODEL_V2: &str = r#""model":{"name":"vib","version":"2.0.0","format":"zscore-logistic/v1",
    "parameters":{"mean":[20.0,0.5],"stddev":[0.5,0.1],"weights":[2.0,1.0],"bias":[-1.0]}}"#;

/// The detector's specification, written out: EWMA volatility, z-scores, logistic score.
fn reference_scores(data: &[Reading], mean: [f64; 2], stddev: [f64; 2], weights: [f64; 2], bias: f64, threshold: f64) -> Vec<Reading> {
    let alpha = 0.2;
    let mut state: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    let mut alerts = Vec::new();
    for reading in data.iter().filter(|r| r.value.is_finite()) {
        let key = (reading.device.clone(), reading.metric.clone());
        let vol = match state.get(&key) {
            None => 0.0,
            Some(&(prev, vol)) => alpha * (reading.value - prev).abs() + (1.0 - alpha) * vol,
        };
        state.insert(key, (reading.value, vol));
        let z = [(reading.value - mean[0]) / stddev[0], (vol - mean[1]) / stddev[1]];
        let score = 1.0 / (1.0 + (-(weights[0] * z[0].abs() + weights[1] * z[1].abs() + bias)).exp());
        if score >= threshold {
            alerts.push(r(reading.ts, score, &reading.device, &format!("{}.anomaly", reading.metric)));
        }
    }
    alerts
}

#[test]
fn anomaly_detector_scores_like_the_model_says_and_switches_models_live() {
    let host = host();
    let outputs = ["alerts"];
    let mut detector = start(&host, "anomaly-detector", &outputs, &format!(r#"{{"config":{{"threshold":0.5}},{MODEL_V1}}}"#));
    let data = sensor_data(2000);
    let (first, second) = data.split_at(1000);
    let mut got = Vec::new();
    for chunk in first.chunks(100) {
        got.extend(run(&mut detector, &outputs, chunk).remove("alerts").unwrap_or_default());
    }
    let expected = reference_scores(first, [20.0, 0.5], [2.0, 0.5], [1.5, 0.5], -6.0, 0.5);
    assert!(!expected.is_empty() && expected.len() < 200, "v1 should flag the spikes only, flags {}", expected.len());
    assert_eq!(got.len(), expected.len(), "alert count under model 1.0.0");
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            g.ts == e.ts && g.device == e.device && g.metric == e.metric && (g.value - e.value).abs() < 1e-12,
            "got {g:?}, expected {e:?}"
        );
    }

    // A new model version, delivered to the running instance: the next batch uses it, and the
    // volatility state carries over (the reference runs over all the data to match).
    detector.configure(format!(r#"{{"config":{{"threshold":0.5}},{MODEL_V2}}}"#).as_bytes(), None).expect("reconfigures");
    let got_v2 = run(&mut detector, &outputs, &second[..100]).remove("alerts").unwrap_or_default();
    let all_v2 = reference_scores(&data[..1100], [20.0, 0.5], [0.5, 0.1], [2.0, 1.0], -1.0, 0.5);
    let expected_v2: Vec<Reading> = all_v2.into_iter().filter(|a| a.ts >= second[0].ts && a.ts <= second[99].ts).collect();
    assert!(expected_v2.len() > 50, "v2 should flag most readings, flags {}", expected_v2.len());
    assert_eq!(got_v2.len(), expected_v2.len(), "alert count under model 2.0.0 on the very next batch");

    // A model the detector cannot use is refused, and the instance keeps the one it had.
    let bad = r#"{"model":{"name":"vib","version":"3.0.0","format":"mlp/v9","parameters":{}}}"#;
    assert!(detector.configure(bad.as_bytes(), None).is_err(), "an unknown model format must be refused");
    let still_v2 = run(&mut detector, &outputs, &second[100..200]).remove("alerts").unwrap_or_default();
    assert!(still_v2.len() > 50, "after a refused model the instance still scores with 2.0.0");
}

#[test]
fn ts_compressor_round_trips_within_half_a_step_and_shrinks_the_data() {
    let host = host();
    let outputs = ["compressed"];
    let step = 0.05;
    let mut compressor = start(&host, "ts-compressor", &outputs, &format!(r#"{{"config":{{"step":{step}}}}}"#));
    let data: Vec<Reading> = sensor_data(4000).into_iter().filter(|r| r.value.is_finite()).collect();
    let mut frames = Vec::new();
    for chunk in data.chunks(500) {
        for (_, bytes) in compressor.process(&encode(chunk)).expect("processes") {
            frames.push(bytes);
        }
    }
    // An independent decoder of the documented frame format (docs/abi.md).
    let mut previous: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let mut decoded: BTreeMap<(String, String), Vec<(u64, f64)>> = BTreeMap::new();
    for frame in &frames {
        let mut at = 0usize;
        let mut take = |n: usize| {
            let s = &frame[at..at + n];
            at += n;
            s.to_vec()
        };
        let streams = u32::from_le_bytes(take(4).try_into().expect("4"));
        for _ in 0..streams {
            let mut text = || {
                let len = u16::from_le_bytes(take(2).try_into().expect("2")) as usize;
                String::from_utf8(take(len)).expect("utf-8")
            };
            let key = (text(), text());
            let frame_step = f64::from_le_bytes(take(8).try_into().expect("8"));
            assert_eq!(frame_step, step);
            let n = u32::from_le_bytes(take(4).try_into().expect("4"));
            let mut varint = || {
                let (mut value, mut shift) = (0u64, 0);
                loop {
                    let byte = take(1)[0];
                    value |= u64::from(byte & 0x7f) << shift;
                    shift += 7;
                    if byte & 0x80 == 0 {
                        break;
                    }
                }
                ((value >> 1) as i64) ^ -((value & 1) as i64)
            };
            let (mut ts, mut q) = previous.get(&key).copied().unwrap_or((0, 0));
            for _ in 0..n {
                ts += varint();
                q += varint();
                decoded.entry(key.clone()).or_default().push((ts as u64, q as f64 * step));
            }
            previous.insert(key, (ts, q));
        }
        assert_eq!(at, frame.len(), "trailing bytes in a frame");
    }
    let mut originals: BTreeMap<(String, String), Vec<(u64, f64)>> = BTreeMap::new();
    for reading in &data {
        originals.entry((reading.device.clone(), reading.metric.clone())).or_default().push((reading.ts, reading.value));
    }
    assert_eq!(decoded.keys().collect::<Vec<_>>(), originals.keys().collect::<Vec<_>>(), "streams");
    for (key, points) in &originals {
        let back = &decoded[key];
        assert_eq!(back.len(), points.len(), "{key:?}: point count");
        for ((t0, v0), (t1, v1)) in points.iter().zip(back) {
            assert_eq!(t0, t1, "{key:?}: timestamps are exact");
            assert!((v0 - v1).abs() <= step / 2.0 + 1e-9, "{key:?} at {t0}: {v0} came back as {v1}");
        }
    }
    let raw: usize = data.chunks(500).map(|c| encode(c).len()).sum();
    let compressed: usize = frames.iter().map(Vec::len).sum();
    assert!(compressed * 4 < raw, "compression should save at least 4x here: {raw} -> {compressed} bytes");
}

#[tokio::test]
async fn a_model_update_reaches_a_pooled_instance_without_a_restart() {
    let host = host();
    let pool = WasmPool::new(host.clone(), 1).expect("pool");
    let module = Arc::new(load(&host, "anomaly-detector"));
    let handle = pool.start(InstanceSpec {
        name: "factory/vibration-anomalies-0".into(),
        module,
        limits: InstanceLimits {
            memory_bytes: 16 << 20,
            batch_deadline: Duration::from_secs(1),
            outputs: vec!["alerts".into()],
            log_name: "t".into(),
        },
        config_doc: format!(r#"{{"config":{{}},{MODEL_V1}}}"#).into_bytes(),
        model_version: Some("1.0.0".into()),
        model: None,
        restart: RestartPolicy { first_backoff: Duration::from_millis(10), max_restarts: 3 },
        queue_capacity: 8,
    });
    let quiet: Vec<Reading> = (0..50).map(|i| r(1_000 + i, 20.0 + (i % 3) as f64 * 0.1, "press-1", "vibration")).collect();
    let alerts = |emitted: Vec<(usize, Vec<u8>)>| emitted.into_iter().map(|(_, b)| decode(&b).len()).sum::<usize>();
    let first = handle.process_wait(encode(&quiet)).await.expect("v1 batch");
    assert_eq!((alerts(first.emitted), first.model_version.as_deref()), (0, Some("1.0.0")), "v1 finds nothing in quiet data");
    handle.configure(format!(r#"{{"config":{{}},{MODEL_V2}}}"#).into_bytes(), Some("2.0.0".into()), None);
    let later: Vec<Reading> = quiet.iter().map(|x| Reading { ts: x.ts + 100, ..x.clone() }).collect();
    let second = handle.process_wait(encode(&later)).await.expect("v2 batch");
    assert_eq!(second.model_version.as_deref(), Some("2.0.0"), "the outputs name the model that made them");
    assert!(alerts(second.emitted) > 0, "v2 is sensitive enough to flag quiet data");
    let status = handle.status();
    assert_eq!((status.reconfigurations, status.restarts, status.batches_ok), (1, 0, 2), "{status:?}");
}
