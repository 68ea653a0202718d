//! Wasm host benchmarks: instantiation, and each workload's kernel in wasm against the very
//! same Rust code compiled natively (the SDK's `NativeHost`), in the same run.
//!
//! `cargo bench -p edgeplane-edge-runtime --bench wasm` (scripts/bench.sh runs it). Needs the
//! modules from `scripts/build-workloads.sh`. Prints `BENCH <name> <value> <unit>` lines.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeplane_anomaly_detector::AnomalyDetector;
use edgeplane_edge_runtime::host::{HostConfig, InstanceLimits, WasmHost};
use edgeplane_sdk::{encode_batch, Batch, NativeHost, Reading, Workload};
use edgeplane_threshold_filter::ThresholdFilter;
use edgeplane_ts_compressor::TsCompressor;
use edgeplane_window_aggregator::WindowAggregator;

const READINGS_PER_BATCH: usize = 1024;
const BATCHES: usize = 256;
/// Each workload runs this long per side and round; rounds alternate native and wasm so that
/// a noisy neighbour hurts both alike.
const ROUND: Duration = Duration::from_millis(400);
const ROUNDS: usize = 5;

fn main() {
    let host = Arc::new(WasmHost::new(HostConfig { max_instances: 64, ..HostConfig::default() }).expect("wasm host"));
    instantiation(&host);
    let batches = sensor_batches();
    let model = r#""model":{"name":"vibration","version":"1.0.0","format":"zscore-logistic/v1",
        "parameters":{"mean":[20.0,0.4],"stddev":[2.0,0.15],"weights":[1.8,2.4],"bias":[-6.0]}}"#;
    compare::<ThresholdFilter>(&host, "threshold-filter", r#"{"config":{"min":15.0,"max":25.0}}"#, &["out-of-range"], &batches);
    compare::<WindowAggregator>(&host, "window-aggregator", r#"{"config":{"windowSeconds":10}}"#, &["summary"], &batches);
    compare::<AnomalyDetector>(&host, "anomaly-detector", &format!(r#"{{"config":{{"threshold":0.5}},{model}}}"#), &["alerts"], &batches);
    compare::<TsCompressor>(&host, "ts-compressor", r#"{"config":{"step":0.01}}"#, &["compressed"], &batches);
}

fn module_bytes(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/workloads").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-workloads.sh first", path.display()))
}

fn limits(outputs: &[&str]) -> InstanceLimits {
    InstanceLimits {
        memory_bytes: 64 << 20,
        batch_deadline: Duration::from_secs(1),
        outputs: outputs.iter().map(|o| (*o).to_owned()).collect(),
        log_name: "bench".into(),
    }
}

/// Pooled instantiation from an `InstancePre` (what wasmtime publishes as ~5 us), and the
/// full start of an instance (plus the ABI version check and `ep_configure`).
fn instantiation(host: &WasmHost) {
    let module = host.load(&module_bytes("threshold-filter")).expect("loads");
    let config = br#"{"config":{"min":15.0,"max":25.0}}"#;
    // Warm the pool's slots first.
    for _ in 0..200 {
        drop(host.instantiate(&module, limits(&["out-of-range"]), config, None).expect("starts"));
    }
    let mut bare = Vec::with_capacity(5_000);
    let mut full = Vec::with_capacity(5_000);
    for _ in 0..5_000 {
        let started = Instant::now();
        let instance = host.instantiate_bare(&module, limits(&["out-of-range"])).expect("instantiates");
        bare.push(started.elapsed());
        drop(instance);
        let started = Instant::now();
        let instance = host.instantiate(&module, limits(&["out-of-range"]), config, None).expect("starts");
        full.push(started.elapsed());
        drop(instance);
    }
    println!("BENCH wasm_instantiate_us_p50 {:.2} us", percentile(&mut bare, 50.0));
    println!("BENCH wasm_instantiate_us_p99 {:.2} us", percentile(&mut bare, 99.0));
    println!("BENCH wasm_instance_start_us_p50 {:.2} us", percentile(&mut full, 50.0));
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p / 100.0).round() as usize;
    samples[index].as_secs_f64() * 1e6
}

/// Readings/s through the workload natively and in wasm; the ratio is wasm / native.
///
/// Both sides take batches as the edge runtime hands them over: validated at ingest, so the
/// module gets them through `ep_process_validated` and the native code as parsed `Batch`es.
/// What the edge still does per batch and native code does not, copying the batch into the
/// guest's memory and the emitted readings out, counts against wasm.
fn compare<W: Workload>(host: &WasmHost, name: &str, config: &str, outputs: &[&str], batches: &[Vec<u8>]) {
    let parsed: Vec<Batch<'_>> = batches.iter().map(|b| Batch::parse(b).expect("a v1 batch")).collect();
    let mut native = NativeHost::<W>::new();
    native.configure(config).expect("native configure");
    let mut native_process = |batch: &Batch<'_>| {
        let mut emitted = Vec::new();
        let code = native.process_parsed(batch, |output, data| {
            emitted.push((output.to_owned(), data.to_vec()));
            0
        });
        code.map(|()| emitted).expect("native")
    };
    let module = host.load(&module_bytes(name)).expect("loads");
    let mut instance = host.instantiate(&module, limits(outputs), config.as_bytes(), None).expect("starts");
    // Both sides must compute the same thing, or the comparison means nothing.
    let mut emitted_native = 0usize;
    let mut emitted_wasm = 0usize;
    for (bytes, batch) in batches.iter().zip(&parsed).take(16) {
        emitted_native += native_process(batch).iter().map(|(_, d)| d.len()).sum::<usize>();
        emitted_wasm += instance.process_validated(bytes).expect("wasm").iter().map(|(_, d)| d.len()).sum::<usize>();
    }
    assert_eq!(emitted_native, emitted_wasm, "{name}: native and wasm emitted different amounts");

    let (mut native_rate, mut wasm_rate) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        native_rate.push(rate(|i| drop(native_process(&parsed[i % parsed.len()])), READINGS_PER_BATCH));
        wasm_rate.push(rate(|i| drop(instance.process_validated(&batches[i % batches.len()]).expect("wasm")), READINGS_PER_BATCH));
    }
    // The best round of each: the least disturbed by the rest of the machine.
    let native_best = native_rate.iter().copied().fold(0.0, f64::max);
    let wasm_best = wasm_rate.iter().copied().fold(0.0, f64::max);
    let key = name.replace('-', "_");
    println!("BENCH native_readings_per_s_{key} {native_best:.0} readings/s");
    println!("BENCH wasm_readings_per_s_{key} {wasm_best:.0} readings/s");
    println!("BENCH wasm_vs_native_ratio_{key} {:.3} ratio", wasm_best / native_best);
}

/// Readings per second while calling `process` with 0, 1, 2, ... (one batch of
/// `readings_per_batch` each) for one round.
fn rate(mut process: impl FnMut(usize), readings_per_batch: usize) -> f64 {
    let started = Instant::now();
    let mut readings = 0usize;
    let mut i = 0;
    while started.elapsed() < ROUND {
        process(i);
        readings += readings_per_batch;
        i += 1;
    }
    readings as f64 / started.elapsed().as_secs_f64()
}

/// Temperature readings from 16 machines at 100 Hz: a slow drift, noise, and now and then a
/// spike, from a fixed seed. Time moves on from batch to batch, so windows close.
fn sensor_batches() -> Vec<Vec<u8>> {
    let devices: Vec<String> = (0..16).map(|i| format!("press-{i}")).collect();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut t = 1_763_800_000_000u64;
    (0..BATCHES)
        .map(|_| {
            let readings: Vec<Reading<'_>> = (0..READINGS_PER_BATCH)
                .map(|i| {
                    let device = i % devices.len();
                    if device == 0 {
                        t += 10;
                    }
                    let drift = (t as f64 / 60_000.0).sin() * 3.0;
                    let spike = if next() < 0.01 { 15.0 } else { 0.0 };
                    let value = 20.0 + drift + (next() - 0.5) * 2.0 + spike;
                    Reading { timestamp_ms: t, value, device: &devices[device], metric: "temperature" }
                })
                .collect();
            encode_batch(readings.iter().copied()).expect("batch encodes")
        })
        .collect()
}
