//! The second backend: ONNX Runtime, Microsoft's reference engine, through its C library
//! loaded at run time ([`load`]). It runs what tract does not (`TreeEnsembleRegressor`,
//! `LabelEncoder`, `Scaler`, `ZipMap`-free tree models of every kind) and is much faster on tree
//! ensembles. One session per model, one intra-op thread (the edge's cores belong to its wasm
//! threads); a session runs one call at a time.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};

use crate::{BackendKind, ElemType, ModelError, PreparedModel, RunError, Signature, Tensor, TensorData};

const BACKEND: BackendKind = BackendKind::Onnxruntime;

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads the library (once per process) and says which version it is, or why it did not load.
pub fn load(library: &Path) -> Result<String, String> {
    let environment = ENVIRONMENT.get_or_init(|| {
        let builder = ort::init_from(library).map_err(|e| format!("{}: {e}", library.display()))?;
        builder.with_name("edgeplane").build().map_err(|e| format!("{}: {e}", library.display()))
    });
    match environment {
        Ok(_) => Ok(ort::info().to_owned()),
        Err(e) => Err(e.clone()),
    }
}

/// Whether the library is loaded.
pub fn loaded() -> bool {
    matches!(ENVIRONMENT.get(), Some(Ok(_)))
}

#[derive(Debug)]
pub(crate) struct OrtModel {
    signature: Signature,
    session: Mutex<Session>,
}

impl OrtModel {
    pub(crate) fn prepare(bytes: &[u8], signature: Signature) -> Result<OrtModel, ModelError> {
        let Some(Ok(environment)) = ENVIRONMENT.get() else {
            return Err(ModelError::Unsupported { backend: BACKEND, reason: "the ONNX Runtime library is not loaded".into() });
        };
        let refused = |e: ort::Error| ModelError::TypeCheck { backend: BACKEND, reason: e.to_string() };
        let session = Session::builder(environment)
            .map_err(refused)?
            .with_intra_threads(1)
            .map_err(|e| refused(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| refused(e.into()))?
            .commit_from_memory(bytes)
            .map_err(refused)?;
        for output in session.outputs() {
            if !matches!(output.dtype(), ValueType::Tensor { .. }) {
                return Err(ModelError::Unsupported {
                    backend: BACKEND,
                    reason: format!("output {} is not a tensor (export without ZipMap: `zipmap: False`)", output.name()),
                });
            }
        }
        Ok(OrtModel { signature, session: Mutex::new(session) })
    }
}

impl PreparedModel for OrtModel {
    fn backend(&self) -> BackendKind {
        BACKEND
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
        self.signature.check_inputs(&inputs)?;
        let mut values: Vec<(std::borrow::Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for (spec, input) in self.signature.inputs.iter().zip(inputs) {
            values.push((spec.name.clone().into(), to_ort(input).map_err(backend_error)?));
        }
        // A poisoned lock: a panic inside ONNX Runtime's call, which left the session as it was.
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(values).map_err(backend_error)?;
        self.signature
            .outputs
            .iter()
            .map(|spec| {
                let value = outputs.get(&spec.name).ok_or_else(|| RunError::Backend(format!("no output {}", spec.name)))?;
                from_ort(value, &spec.name)
            })
            .collect()
    }
}

fn backend_error(error: ort::Error) -> RunError {
    RunError::Backend(error.to_string())
}

fn to_ort(tensor: Tensor) -> ort::Result<SessionInputValue<'static>> {
    let shape: Vec<i64> = tensor.shape.iter().map(|&d| d as i64).collect();
    Ok(match tensor.data {
        TensorData::F32(v) => OrtTensor::from_array((shape, v))?.into_dyn().into(),
        TensorData::F64(v) => OrtTensor::from_array((shape, v))?.into_dyn().into(),
        TensorData::I64(v) => OrtTensor::from_array((shape, v))?.into_dyn().into(),
        TensorData::I32(v) => OrtTensor::from_array((shape, v))?.into_dyn().into(),
        TensorData::Bool(v) => OrtTensor::from_array((shape, v))?.into_dyn().into(),
    })
}

fn from_ort(value: &DynValue, name: &str) -> Result<Tensor, RunError> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(RunError::OutputType { name: name.to_owned(), elem: "a non-tensor" });
    };
    fn take<T: ort::value::PrimitiveTensorElementType + Clone>(value: &DynValue) -> Result<(Vec<usize>, Vec<T>), RunError> {
        let (shape, data) = value.try_extract_tensor::<T>().map_err(backend_error)?;
        Ok((shape.iter().map(|&d| d.max(0) as usize).collect(), data.to_vec()))
    }
    let (shape, data) = match ty {
        TensorElementType::Float32 => take::<f32>(value).map(|(s, d)| (s, TensorData::F32(d)))?,
        TensorElementType::Float64 => take::<f64>(value).map(|(s, d)| (s, TensorData::F64(d)))?,
        TensorElementType::Int64 => take::<i64>(value).map(|(s, d)| (s, TensorData::I64(d)))?,
        TensorElementType::Int32 => take::<i32>(value).map(|(s, d)| (s, TensorData::I32(d)))?,
        TensorElementType::Bool => take::<bool>(value).map(|(s, d)| (s, TensorData::Bool(d)))?,
        TensorElementType::String => return Err(RunError::OutputType { name: name.to_owned(), elem: ElemType::String.name() }),
        _ => return Err(RunError::OutputType { name: name.to_owned(), elem: "an unsupported element type" }),
    };
    Ok(Tensor { shape, data })
}
