//! The committed scikit-learn models (tests/models, made by scripts/models/train_test_models.py)
//! through the tract backend, compared with ONNX Runtime's answers in Python.
//!
//! The reference runs `scripts/models/onnx_reference.py` with the Python in `EDGEPLANE_PYTHON`
//! (a venv with onnxruntime; `scripts/test.sh` makes one).

use std::path::{Path, PathBuf};

use edgeplane_inference::{check, prepare, BackendKind, Limits, ModelError, Tensor, TensorData};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model(name: &str) -> Vec<u8> {
    std::fs::read(repo().join(format!("tests/models/{name}.onnx"))).expect("the committed model")
}

fn rows(name: &str) -> (usize, Vec<f32>) {
    let doc: Value =
        serde_json::from_slice(&std::fs::read(repo().join(format!("tests/models/{name}.rows.json"))).expect("rows")).expect("json");
    let rows = doc["rows"].as_array().expect("rows");
    let values: Vec<f32> =
        rows.iter().flat_map(|r| r.as_array().expect("a row").iter().map(|v| v.as_f64().expect("a number") as f32)).collect();
    (rows.len(), values)
}

/// ONNX Runtime's outputs for the model on its rows: name -> (shape, values as f64).
fn reference(name: &str) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    let python =
        std::env::var("EDGEPLANE_PYTHON").expect("EDGEPLANE_PYTHON must name a Python with onnxruntime (scripts/test.sh sets it up)");
    let out = std::process::Command::new(python)
        .arg(repo().join("scripts/models/onnx_reference.py"))
        .arg(repo().join(format!("tests/models/{name}.onnx")))
        .arg(repo().join(format!("tests/models/{name}.rows.json")))
        .output()
        .expect("run the reference");
    assert!(out.status.success(), "onnx_reference.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("the reference's JSON");
    doc["outputs"]
        .as_object()
        .expect("outputs")
        .iter()
        .map(|(name, o)| {
            let shape = o["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim") as usize).collect();
            let data = o["data"].as_array().expect("data").iter().map(|v| v.as_f64().expect("number")).collect();
            (name.clone(), shape, data)
        })
        .collect()
}

fn run_with(backend: BackendKind, name: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let prepared = prepare(backend, &model(name), Limits::default()).unwrap_or_else(|e| panic!("{backend} prepares {name}: {e}"));
    let (n, values) = rows(name);
    let features = values.len() / n;
    let outputs = prepared.run(vec![Tensor { shape: vec![n, features], data: TensorData::F32(values) }]).expect("runs");
    prepared.signature().outputs.iter().zip(outputs).map(|(spec, t)| (spec.name.clone(), t.shape, t.data.to_f32())).collect()
}

fn compare(backend: BackendKind, name: &str) {
    let ours = run_with(backend, name);
    let theirs = reference(name);
    assert_eq!(ours.len(), theirs.len(), "{name}: output count");
    for ((our_name, our_shape, our), (their_name, their_shape, their)) in ours.iter().zip(&theirs) {
        assert_eq!(our_name, their_name, "{name}: output order");
        assert_eq!(our_shape, their_shape, "{name}: shape of {our_name}");
        for (i, (a, b)) in our.iter().zip(their).enumerate() {
            let exact = our_name == "label";
            let ok = if exact { f64::from(*a) == *b } else { (f64::from(*a) - b).abs() <= 1e-5 };
            assert!(ok, "{name}: {our_name}[{i}] is {a} with {backend}, {b} with onnxruntime in Python");
        }
    }
}

#[test]
fn tract_matches_onnxruntime_on_scikit_learn_and_pytorch_models() {
    for name in ["logreg", "mlp", "forest", "regressor", "cnn"] {
        compare(BackendKind::Tract, name);
    }
}

#[test]
fn what_tract_cannot_run_is_refused_naming_the_operator() {
    let report = check(&model("iforest"), Limits::default()).expect("a valid model");
    let (_, verdict) = report.verdicts.iter().find(|(b, _)| *b == BackendKind::Tract).expect("tract's verdict");
    match verdict {
        Err(ModelError::UnsupportedOperator { operator, node, .. }) => {
            assert!(operator.contains("TreeEnsembleRegressor") || operator.contains("LabelEncoder"), "{operator} at {node}");
        }
        other => panic!("tract should refuse an IsolationForest by its operator, got {other:?}"),
    }
}

#[test]
fn corrupt_bytes_are_not_a_model() {
    let mut bytes = model("mlp");
    bytes.truncate(bytes.len() / 2);
    assert!(matches!(check(&bytes, Limits::default()), Err(ModelError::Corrupt(_))), "a truncated file");
    assert!(matches!(check(b"\x08\x07hello", Limits::default()), Err(ModelError::Corrupt(_) | ModelError::NoGraph)));
}

#[test]
fn signatures_are_read_from_the_file() {
    let report = check(&model("logreg"), Limits::default()).expect("valid");
    let input = &report.info.signature.inputs[0];
    assert_eq!(input.name, "input");
    assert_eq!(input.describe(), "float[?, 30]");
    let outputs: Vec<String> = report.info.signature.outputs.iter().map(|o| format!("{} {}", o.name, o.describe())).collect();
    assert_eq!(outputs, ["label int64[?]", "probabilities float[?, 2]"]);
    // (ONNX Runtime too once another test in this process has loaded it.)
    assert!(report.backends().contains(&BackendKind::Tract), "{:?}", report.verdicts);
}

#[test]
fn a_graph_needing_gigabytes_is_refused_naming_the_node() {
    let refused = prepare(BackendKind::Tract, &model("hostile-huge"), Limits::default()).expect_err("gigabytes at 4096 rows");
    match refused {
        ModelError::TooLarge { node, bytes, .. } => {
            assert!(node.contains("gigabytes"), "the node that makes it: {node}");
            assert!(bytes > 1 << 30, "{bytes}");
        }
        other => panic!("expected TooLarge, got {other}"),
    }
}

#[test]
fn an_operator_no_backend_has_is_named() {
    let report = check(&model("hostile-unknown-op"), Limits::default()).expect("valid ONNX");
    assert!(report.backends().is_empty());
    assert_eq!(report.verdicts[0].0, BackendKind::Tract);
    let message = report.verdicts[0].1.as_ref().expect_err("refused").to_string();
    assert_eq!(message, "tract does not implement operator com.example:Magic (node \"magic_node\")");
}

/// ONNX Runtime's C library, from the wheel in the venv of `EDGEPLANE_PYTHON` unless
/// `EDGEPLANE_ONNXRUNTIME_LIB` names it.
#[cfg(feature = "onnxruntime")]
fn load_onnxruntime() {
    let library = std::env::var("EDGEPLANE_ONNXRUNTIME_LIB")
        .expect("EDGEPLANE_ONNXRUNTIME_LIB must name libonnxruntime.so (scripts/test.sh sets it from the onnxruntime wheel)");
    edgeplane_inference::load_onnxruntime(Path::new(&library)).expect("the library loads");
}

#[cfg(feature = "onnxruntime")]
#[test]
fn onnxruntime_in_the_edge_matches_onnxruntime_in_python_on_every_model() {
    load_onnxruntime();
    for name in ["logreg", "mlp", "forest", "regressor", "iforest", "cnn"] {
        compare(BackendKind::Onnxruntime, name);
    }
    // The registry's verdicts: both backends where tract can, ONNX Runtime alone for the
    // IsolationForest, and neither for an operator nobody has.
    assert_eq!(check(&model("mlp"), Limits::default()).expect("valid").backends(), [BackendKind::Tract, BackendKind::Onnxruntime]);
    assert_eq!(check(&model("iforest"), Limits::default()).expect("valid").backends(), [BackendKind::Onnxruntime]);
    let unknown = check(&model("hostile-unknown-op"), Limits::default()).expect("valid");
    assert!(unknown.backends().is_empty(), "{:?}", unknown.verdicts);
    let why = unknown.verdicts[1].1.as_ref().expect_err("refused").to_string();
    assert!(why.contains("Magic"), "ONNX Runtime's refusal names the operator: {why}");
}

#[test]
fn a_model_too_large_for_tract_is_refused_for_every_backend() {
    // ONNX Runtime does not bound a graph's tensors before it runs: tract's verdict stands.
    assert!(matches!(check(&model("hostile-huge"), Limits::default()), Err(ModelError::TooLarge { .. })));
}
