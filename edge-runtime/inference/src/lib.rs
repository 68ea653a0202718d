//! ONNX models for edgeplane: what a model takes and gives ([`Signature`]), whether a backend
//! can run it ([`check`]), and running it natively ([`prepare`]).
//!
//! One interface, [`PreparedModel`], with a backend behind it. The built-in backend is tract
//! (pure Rust, the `tract` feature, on by default). The registry checks a model at push with
//! every backend it has and records which can run it; an edge prepares a model once per
//! version and runs it from its wasm threads, never from the async reactor.
//!
//! Everything here treats the model file as hostile: a protobuf that does not decode, a graph
//! that does not type-check, an operator no backend has and a graph whose tensors would need
//! more memory than [`Limits::max_tensor_bytes`] at [`Limits::max_batch`] rows are refused
//! with an error that names the operator or node.

use std::fmt;

use serde::{Deserialize, Serialize};

#[cfg(feature = "tract")]
mod onnx;
#[cfg(feature = "onnxruntime")]
mod ort_backend;
#[cfg(feature = "tract")]
mod tract_backend;

#[cfg(feature = "tract")]
pub use onnx::inspect;

/// The format name of ONNX models in a Model resource's `spec.format`.
pub const FORMAT_ONNX: &str = "onnx";

/// A backend that runs ONNX models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// tract, built into the edge runtime.
    Tract,
    /// ONNX Runtime's C library, where a node has it.
    Onnxruntime,
}

impl BackendKind {
    pub const ALL: [BackendKind; 2] = [BackendKind::Tract, BackendKind::Onnxruntime];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::Onnxruntime => "onnxruntime",
        }
    }

    /// The node capability that says a node has this backend (`inference.onnx.tract`).
    pub fn capability(self) -> String {
        format!("inference.onnx.{}", self.name())
    }

    pub fn from_name(name: &str) -> Option<BackendKind> {
        BackendKind::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The backends this build of the crate has.
    pub fn built_in() -> Vec<BackendKind> {
        let mut backends = Vec::new();
        if cfg!(feature = "tract") {
            backends.push(BackendKind::Tract);
        }
        backends
    }

    /// The backends this process can use now: those built in, and ONNX Runtime once its
    /// library is loaded ([`load_onnxruntime`]).
    pub fn available() -> Vec<BackendKind> {
        let built_in = BackendKind::built_in().into_iter();
        #[cfg(feature = "onnxruntime")]
        return built_in.chain(ort_backend::loaded().then_some(BackendKind::Onnxruntime)).collect();
        #[cfg(not(feature = "onnxruntime"))]
        built_in.collect()
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Element types of tensors, with ONNX's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElemType {
    Float,
    Double,
    Int64,
    Int32,
    Bool,
    String,
    /// Anything else ONNX has (float16, uint8, ...): carried in the signature, refused at run.
    Other,
}

impl ElemType {
    /// From ONNX's `TensorProto.DataType` number.
    pub fn from_onnx(code: i32) -> ElemType {
        match code {
            1 => ElemType::Float,
            11 => ElemType::Double,
            7 => ElemType::Int64,
            6 => ElemType::Int32,
            9 => ElemType::Bool,
            8 => ElemType::String,
            _ => ElemType::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ElemType::Float => "float",
            ElemType::Double => "double",
            ElemType::Int64 => "int64",
            ElemType::Int32 => "int32",
            ElemType::Bool => "bool",
            ElemType::String => "string",
            ElemType::Other => "other",
        }
    }

    /// Whether a guest can hand in or read out such a tensor (as `f32`).
    pub fn is_numeric(self) -> bool {
        matches!(self, ElemType::Float | ElemType::Double | ElemType::Int64 | ElemType::Int32 | ElemType::Bool)
    }
}

/// One dimension of a tensor: a size, or a named or unnamed free dimension (a batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(u64),
    /// `null` for an unnamed free dimension.
    Free(Option<String>),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Free(Some(name)) => f.write_str(name),
            Dim::Free(None) => f.write_str("?"),
        }
    }
}

/// A named input or output of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TensorSpec {
    pub name: String,
    pub elem_type: ElemType,
    /// `None` when the model does not say (any rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<Dim>>,
}

impl TensorSpec {
    /// `float[?, 30]`
    pub fn describe(&self) -> String {
        match &self.shape {
            Some(dims) => format!("{}[{}]", self.elem_type.name(), dims.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
            None => format!("{}[...]", self.elem_type.name()),
        }
    }

    /// Whether a tensor of this shape fits the spec (free dimensions take any size).
    pub fn accepts_shape(&self, shape: &[usize]) -> bool {
        match &self.shape {
            None => true,
            Some(dims) => {
                dims.len() == shape.len()
                    && dims.iter().zip(shape).all(|(d, &n)| match d {
                        Dim::Fixed(m) => *m == n as u64,
                        Dim::Free(_) => true,
                    })
            }
        }
    }
}

/// What a model takes and gives, in the order the graph declares them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    /// Whether `inputs` are one tensor per input, in order, each of a shape its input takes:
    /// what every backend checks before it runs.
    pub fn check_inputs(&self, inputs: &[Tensor]) -> Result<(), RunError> {
        if inputs.len() != self.inputs.len() {
            return Err(RunError::InputCount { expected: self.inputs.len(), actual: inputs.len() });
        }
        match self.inputs.iter().zip(inputs).find(|(spec, input)| !spec.accepts_shape(&input.shape)) {
            Some((spec, input)) => Err(RunError::InputShape { name: spec.name.clone(), spec: spec.describe(), shape: input.shape.clone() }),
            None => Ok(()),
        }
    }
}

/// What [`inspect`] learns of a model without running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub signature: Signature,
    /// Operators the graph uses, as `domain:op` (`ai.onnx.ml:TreeEnsembleClassifier`), sorted,
    /// without duplicates; the default domain is written as empty (`:Gemm`).
    pub operators: Vec<String>,
}

/// Bounds a backend enforces when preparing a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most rows a guest may hand in at once: free dimensions are checked at this size.
    pub max_batch: usize,
    /// The largest tensor the graph may produce at [`Limits::max_batch`] rows.
    pub max_tensor_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_batch: 4096, max_tensor_bytes: 256 << 20 }
    }
}

/// Why a model cannot be run. Permanent for that model and backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("not an ONNX model: {0}")]
    Corrupt(String),
    #[error("the model has no graph")]
    NoGraph,
    #[error("{backend} does not implement operator {operator} (node {node:?})")]
    UnsupportedOperator { backend: BackendKind, operator: String, node: String },
    #[error("{backend} cannot run the model: {reason}")]
    Unsupported { backend: BackendKind, reason: String },
    #[error("the graph does not type-check in {backend}: {reason}")]
    TypeCheck { backend: BackendKind, reason: String },
    #[error("node {node:?} would produce a tensor of {bytes} bytes at {batch} rows (the limit is {limit})")]
    TooLarge { node: String, bytes: u64, batch: usize, limit: u64 },
    #[error("input {name} is {spec}; only numeric inputs are supported")]
    UnsupportedInput { name: String, spec: String },
}

/// Why one run failed. The model stays usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("the model takes {expected} inputs, got {actual}")]
    InputCount { expected: usize, actual: usize },
    #[error("input {name} is {spec}, got shape {shape:?}")]
    InputShape { name: String, spec: String, shape: Vec<usize> },
    #[error("{0}")]
    Backend(String),
    #[error("output {name} is of type {elem}, which cannot be read as numbers")]
    OutputType { name: String, elem: &'static str },
}

/// Tensor data, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as `f32`, what the guest ABI hands out (class labels and counts are small
    /// integers, exact in `f32` up to 2^24).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            TensorData::F32(v) => v.clone(),
            TensorData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| f32::from(u8::from(x))).collect(),
        }
    }

    /// `f32` values converted to `elem`, the type a model input declares.
    pub fn from_f32(values: Vec<f32>, elem: ElemType) -> Option<TensorData> {
        Some(match elem {
            ElemType::Float => TensorData::F32(values),
            ElemType::Double => TensorData::F64(values.into_iter().map(f64::from).collect()),
            ElemType::Int64 => TensorData::I64(values.into_iter().map(|x| x as i64).collect()),
            ElemType::Int32 => TensorData::I32(values.into_iter().map(|x| x as i32).collect()),
            ElemType::Bool => TensorData::Bool(values.into_iter().map(|x| x != 0.0).collect()),
            ElemType::String | ElemType::Other => return None,
        })
    }
}

/// A tensor: a shape and its row-major data.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// A model prepared by one backend, ready to run many times from any thread.
pub trait PreparedModel: Send + Sync + fmt::Debug {
    fn backend(&self) -> BackendKind;
    fn signature(&self) -> &Signature;
    /// Runs the model on one tensor per input (in signature order) and returns one tensor per
    /// output (in signature order).
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError>;
}

/// Loads ONNX Runtime's C library (`libonnxruntime.so.*`) for this process, once; returns its
/// build information. Afterwards [`BackendKind::available`] lists it.
pub fn load_onnxruntime(library: &std::path::Path) -> Result<String, String> {
    #[cfg(feature = "onnxruntime")]
    return ort_backend::load(library);
    #[cfg(not(feature = "onnxruntime"))]
    Err(format!("{}: this build does not include the onnxruntime backend", library.display()))
}

/// Prepares a model with a backend this build has.
pub fn prepare(backend: BackendKind, bytes: &[u8], limits: Limits) -> Result<std::sync::Arc<dyn PreparedModel>, ModelError> {
    match backend {
        #[cfg(feature = "tract")]
        BackendKind::Tract => Ok(std::sync::Arc::new(tract_backend::TractModel::prepare(bytes, limits)?)),
        #[cfg(all(feature = "onnxruntime", feature = "tract"))]
        BackendKind::Onnxruntime => {
            let _ = limits;
            let signature = inspect(bytes)?.signature;
            Ok(std::sync::Arc::new(ort_backend::OrtModel::prepare(bytes, signature)?))
        }
        #[allow(unreachable_patterns)]
        other => {
            let _ = (bytes, limits);
            Err(ModelError::Unsupported { backend: other, reason: "this build does not include it".into() })
        }
    }
}

/// What [`check`] found: the signature, and for each backend this build has, whether it can
/// run the model.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub info: ModelInfo,
    pub verdicts: Vec<(BackendKind, Result<(), ModelError>)>,
}

impl CheckReport {
    /// The backends that can run the model.
    pub fn backends(&self) -> Vec<BackendKind> {
        self.verdicts.iter().filter(|(_, v)| v.is_ok()).map(|(b, _)| *b).collect()
    }
}

/// Reads a model's signature and prepares it with every backend this build has. Fails only if
/// the bytes are not a usable ONNX model at all; which backends can run it is in the report.
#[cfg(feature = "tract")]
pub fn check(bytes: &[u8], limits: Limits) -> Result<CheckReport, ModelError> {
    let info = inspect(bytes)?;
    for input in &info.signature.inputs {
        if !input.elem_type.is_numeric() {
            return Err(ModelError::UnsupportedInput { name: input.name.clone(), spec: input.describe() });
        }
    }
    let verdicts: Vec<_> =
        BackendKind::available().into_iter().map(|backend| (backend, prepare(backend, bytes, limits).map(|_| ()))).collect();
    // Only tract bounds the graph's tensors before running it: a model it finds too large is
    // too large for every backend.
    if let Some((_, Err(too_large @ ModelError::TooLarge { .. }))) =
        verdicts.iter().find(|(_, v)| matches!(v, Err(ModelError::TooLarge { .. })))
    {
        return Err(too_large.clone());
    }
    Ok(CheckReport { info, verdicts })
}
