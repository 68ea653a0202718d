//! Inference through the edge host from a guest call, against ONNX Runtime in Python on the
//! same model, batch and machine, in the same run.
//!
//! `cargo bench -p edgeplane-edge-runtime --bench inference` (scripts/bench.sh runs it, with
//! `EDGEPLANE_PYTHON` naming a Python with onnxruntime). For the MLP and the random forest of
//! tests/models at batch 1 and 256, a wasm guest calls `nn_set_input`, `nn_compute` and
//! `nn_get_output` (both outputs) in a loop, once per backend the node has: tract, and ONNX
//! Runtime when `EDGEPLANE_ONNXRUNTIME_LIB` names its library (`BENCH
//! onnx_<backend>_inferences_per_s_<model>_<batch>`). `BENCH onnx_inferences_per_s_<model>_<batch>`
//! is the backend an edge would choose (ONNX Runtime where it has it), `BENCH
//! onnxruntime_python_per_s_<model>_<batch>` the baseline and `BENCH
//! onnx_vs_onnxruntime_ratio_<model>_<batch>` the ratio of the two.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeplane_edge_runtime::host::{BoundModel, HostConfig, InstanceLimits, WasmHost};
use edgeplane_inference::{BackendKind, Limits};

/// How long each side measures one model and batch.
const MEASURE: Duration = Duration::from_secs(2);

/// A guest that binds model `bench` and runs it `n` times per batch on the rows it is given:
/// batch = `u32 n, u32 rows, u32 features, f32 values...`.
const GUEST: &str = r#"(module
  (import "edgeplane" "nn_bind" (func $bind (param i32 i32) (result i32)))
  (import "edgeplane" "nn_set_input" (func $set (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "edgeplane" "nn_compute" (func $compute (param i32) (result i32)))
  (import "edgeplane" "nn_get_output" (func $get (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 8)
  (data (i32.const 16) "bench")
  (func (export "ep_abi_version") (result i32) i32.const 1)
  (func (export "ep_alloc") (param i32) (result i32) i32.const 4096)
  (func (export "ep_process") (param $ptr i32) (param $len i32) (result i32)
    (local $h i32) (local $n i32)
    (local.set $h (call $bind (i32.const 16) (i32.const 5)))
    (if (i32.lt_s (local.get $h) (i32.const 0)) (then (return (i32.const -10))))
    (local.set $n (i32.load (local.get $ptr)))
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $n)))
        (if (call $set (local.get $h) (i32.const 0) (i32.add (local.get $ptr) (i32.const 4)) (i32.const 2)
                       (i32.add (local.get $ptr) (i32.const 12)) (i32.sub (local.get $len) (i32.const 12)))
          (then (return (i32.const -11))))
        (if (call $compute (local.get $h)) (then (return (i32.const -12))))
        (if (i32.lt_s (call $get (local.get $h) (i32.const 0) (i32.const 256) (i32.const 8) (i32.const 131072) (i32.const 131072))
                      (i32.const 0))
          (then (return (i32.const -13))))
        (if (i32.lt_s (call $get (local.get $h) (i32.const 1) (i32.const 256) (i32.const 8) (i32.const 131072) (i32.const 131072))
                      (i32.const 0))
          (then (return (i32.const -14))))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $again)))
    i32.const 0))"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rows(model: &str) -> (usize, Vec<f32>) {
    let path = repo().join(format!("tests/models/{model}.rows.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // The rows file is `{"model": ..., "features": n, "rows": [[...], ...]}`.
    let doc: serde_json::Value = serde_json::from_str(&text).expect("rows JSON");
    let features = doc["features"].as_u64().expect("features") as usize;
    let values = doc["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|r| r.as_array().expect("a row").iter().map(|v| v.as_f64().expect("a number") as f32))
        .collect();
    (features, values)
}

fn main() {
    let python = std::env::var("EDGEPLANE_PYTHON").ok();
    if python.is_none() {
        eprintln!("EDGEPLANE_PYTHON is not set: no onnxruntime baseline (scripts/bench.sh sets it)");
    }
    if let Ok(library) = std::env::var("EDGEPLANE_ONNXRUNTIME_LIB") {
        edgeplane_inference::load_onnxruntime(Path::new(&library)).expect("ONNX Runtime's library loads");
    }
    let backends = BackendKind::available();
    // What the edge's model cache picks (agent/models.rs).
    let chosen = if backends.contains(&BackendKind::Onnxruntime) { BackendKind::Onnxruntime } else { BackendKind::Tract };
    let host = WasmHost::new(HostConfig { max_instances: 4, ..HostConfig::default() }).expect("wasm host");
    let module = host.load(&wat::parse_str(GUEST).expect("the guest")).expect("loads");
    for model in ["mlp", "forest"] {
        let file = repo().join(format!("tests/models/{model}.onnx"));
        let bytes = std::fs::read(&file).expect("model file");
        let (features, values) = rows(model);
        for batch in [1usize, 256] {
            let mut ours = 0.0;
            for &backend in &backends {
                let rate = guest_calls_per_s(&host, &module, backend, &bytes, batch, features, &values);
                println!("BENCH onnx_{backend}_inferences_per_s_{model}_{batch} {rate:.1} calls/s");
                if backend == chosen {
                    ours = rate;
                }
            }
            println!("BENCH onnx_inferences_per_s_{model}_{batch} {ours:.1} calls/s");
            let Some(python) = &python else { continue };
            let out = std::process::Command::new(python)
                .arg(repo().join("scripts/models/onnx_bench.py"))
                .arg(&file)
                .arg(repo().join(format!("tests/models/{model}.rows.json")))
                .arg(batch.to_string())
                .arg(MEASURE.as_secs_f64().to_string())
                .output()
                .expect("run onnx_bench.py");
            assert!(out.status.success(), "onnx_bench.py: {}", String::from_utf8_lossy(&out.stderr));
            let theirs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("calls/s");
            println!("BENCH onnxruntime_python_per_s_{model}_{batch} {theirs:.1} calls/s");
            println!("BENCH onnx_vs_onnxruntime_ratio_{model}_{batch} {:.3} x", ours / theirs);
        }
    }
}

/// Calls per second of a guest running the model with `backend` on `batch` rows.
fn guest_calls_per_s(
    host: &WasmHost,
    module: &edgeplane_edge_runtime::host::CompiledModule,
    backend: BackendKind,
    bytes: &[u8],
    batch: usize,
    features: usize,
    values: &[f32],
) -> f64 {
    let prepared = edgeplane_inference::prepare(backend, bytes, Limits::default()).unwrap_or_else(|e| panic!("{backend}: {e}"));
    let bound = Arc::new(BoundModel { name: "bench".into(), version: "1".into(), prepared, max_batch: Limits::default().max_batch });
    let limits =
        InstanceLimits { memory_bytes: 16 << 20, batch_deadline: Duration::from_secs(10), outputs: Vec::new(), log_name: "bench".into() };
    let mut instance = host.instantiate(module, limits, b"{}", Some(bound)).expect("starts");
    let data: Vec<f32> = values.iter().copied().cycle().take(batch * features).collect();
    let input = |n: u32| {
        let mut b = Vec::with_capacity(12 + data.len() * 4);
        for v in [n, batch as u32, features as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in &data {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    };
    // Calls per guest batch: enough that the batch crossing is noise.
    let per_batch = if batch == 1 { 200 } else { 5 };
    let work = input(per_batch);
    instance.process(&input(3)).expect("warm-up");
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < MEASURE {
        instance.process(&work).unwrap_or_else(|e| panic!("{backend} at {batch}: {e}"));
        calls += u64::from(per_batch);
    }
    calls as f64 / start.elapsed().as_secs_f64()
}
