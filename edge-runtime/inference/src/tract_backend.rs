//! The built-in backend: tract.
//!
//! A model is parsed, type-checked with its free dimensions as symbols, checked for tensors
//! too large at [`Limits::max_batch`] rows, optimized once, and then run for any batch size.
//!
//! One known tract flaw is corrected rather than handed on: for a two-class tree ensemble
//! classifier, tract's label output is class 0 for every row (the label is an argmax over a
//! single raw score column) while its probabilities are right. The label is derived from the
//! probabilities the way ONNX Runtime does (the second class when its probability is the
//! larger). Where the label does not leave the graph directly, it cannot be corrected and the
//! model is refused for tract, so that it goes to a node with ONNX Runtime.

use std::sync::Arc;

use tract_onnx::pb;
use tract_onnx::prelude::{
    Datum, DatumType, Framework, InferenceFact, IntoRunnable, IntoTValue, SymbolValues, TDim, TValue, TVec, Tensor as TractTensor,
    TypedRunnableModel,
};
use tract_onnx::tract_hir::infer::InferenceModelExt as _;

use crate::onnx::{self, BinaryTreeClassifier};
use crate::{BackendKind, Dim, ElemType, Limits, ModelError, PreparedModel, RunError, Signature, Tensor, TensorData};

const BACKEND: BackendKind = BackendKind::Tract;

#[derive(Debug)]
pub(crate) struct TractModel {
    signature: Signature,
    plan: Arc<TypedRunnableModel>,
    /// Labels to derive from probabilities (see the module's documentation).
    relabel: Vec<BinaryTreeClassifier>,
}

impl TractModel {
    pub(crate) fn prepare(bytes: &[u8], limits: Limits) -> Result<TractModel, ModelError> {
        let proto = onnx::decode(bytes)?;
        let graph = proto.graph.as_ref().ok_or(ModelError::NoGraph)?;
        let signature = onnx::signature(graph);
        let framework = tract_onnx::onnx();
        for node in &graph.node {
            if !framework.op_register.0.contains_key(&node.op_type) {
                return Err(ModelError::UnsupportedOperator { backend: BACKEND, operator: qualified(node), node: onnx::node_name(node) });
            }
        }
        for output in &signature.outputs {
            if output.elem_type == ElemType::Other || output.elem_type == ElemType::String {
                return Err(ModelError::Unsupported {
                    backend: BACKEND,
                    reason: format!("output {} is not a numeric tensor (export without ZipMap: `zipmap: False`)", output.name),
                });
            }
        }
        let relabel = onnx::binary_tree_classifiers(graph);
        let binary_classifiers = count_binary_tree_classifiers(graph);
        if binary_classifiers > relabel.len() {
            return Err(ModelError::Unsupported {
                backend: BACKEND,
                reason: "a two-class TreeEnsembleClassifier's label is not a graph output, and tract computes that label wrongly".into(),
            });
        }

        let mut inference = framework.model_for_proto_model(&proto).map_err(|e| type_check(&e))?;
        // tract needs every input's type and rank; free dimensions become symbols, so one
        // optimized plan serves every batch size.
        for (index, spec) in signature.inputs.iter().enumerate() {
            let datum = datum_type(spec.elem_type)
                .ok_or_else(|| ModelError::UnsupportedInput { name: spec.name.clone(), spec: spec.describe() })?;
            let shape = spec.shape.as_ref().ok_or_else(|| ModelError::Unsupported {
                backend: BACKEND,
                reason: format!("input {} does not declare its rank", spec.name),
            })?;
            let dims: Vec<TDim> = shape
                .iter()
                .enumerate()
                .map(|(axis, dim)| match dim {
                    Dim::Fixed(n) => TDim::from(*n as i64),
                    Dim::Free(Some(name)) => TDim::from(inference.symbols.sym(name)),
                    Dim::Free(None) => TDim::from(inference.symbols.sym(&format!("free_{index}_{axis}"))),
                })
                .collect();
            inference.set_input_fact(index, InferenceFact::dt_shape(datum, dims)).map_err(|e| type_check(&e))?;
        }
        let typed = inference.into_typed().map_err(|e| type_check(&e))?;
        check_tensor_sizes(&typed, limits)?;
        let optimized = typed.into_optimized().map_err(|e| type_check(&e))?;
        let plan = optimized.into_runnable().map_err(|e| type_check(&e))?;
        Ok(TractModel { signature, plan, relabel })
    }
}

impl PreparedModel for TractModel {
    fn backend(&self) -> BackendKind {
        BACKEND
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
        self.signature.check_inputs(&inputs)?;
        let mut values: TVec<TValue> = TVec::new();
        for input in &inputs {
            values.push(to_tract(input).map_err(backend_error)?.into_tvalue());
        }
        let outputs = self.plan.run(values).map_err(backend_error)?;
        let mut outputs = outputs
            .iter()
            .zip(&self.signature.outputs)
            .map(|(value, spec)| from_tract(value, &spec.name))
            .collect::<Result<Vec<_>, _>>()?;
        for fix in &self.relabel {
            relabel(&mut outputs, fix)?;
        }
        Ok(outputs)
    }
}

fn qualified(node: &pb::NodeProto) -> String {
    if node.domain.is_empty() {
        node.op_type.clone()
    } else {
        format!("{}:{}", node.domain, node.op_type)
    }
}

fn count_binary_tree_classifiers(graph: &pb::GraphProto) -> usize {
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "TreeEnsembleClassifier")
        .filter(|n| {
            n.attribute
                .iter()
                .any(|a| (a.name == "classlabels_int64s" && a.ints.len() == 2) || (a.name == "classlabels_strings" && a.strings.len() == 2))
        })
        .count()
}

fn type_check(error: &tract_onnx::prelude::TractError) -> ModelError {
    ModelError::TypeCheck { backend: BACKEND, reason: format!("{error:#}") }
}

fn backend_error(error: tract_onnx::prelude::TractError) -> RunError {
    RunError::Backend(format!("{error:#}"))
}

/// Refuses a graph with a tensor larger than the limit when every free dimension is
/// `max_batch`, naming the node that makes it.
fn check_tensor_sizes(model: &tract_onnx::prelude::TypedModel, limits: Limits) -> Result<(), ModelError> {
    let mut values = SymbolValues::default();
    for symbol in model.symbols.all_symbols() {
        values.set(&symbol, limits.max_batch as i64);
    }
    for node in model.nodes() {
        for output in &node.outputs {
            let mut elements: u64 = 1;
            for dim in output.fact.shape.iter() {
                // A size that still depends on data (not on the batch) is bounded when it runs.
                let Ok(n) = dim.eval(&values).to_i64() else { continue };
                elements = elements.saturating_mul(n.max(0) as u64);
            }
            let bytes = elements.saturating_mul(output.fact.datum_type.size_of() as u64);
            if bytes > limits.max_tensor_bytes {
                return Err(ModelError::TooLarge {
                    node: node.name.clone(),
                    bytes,
                    batch: limits.max_batch,
                    limit: limits.max_tensor_bytes,
                });
            }
        }
    }
    Ok(())
}

fn to_tract(tensor: &Tensor) -> tract_onnx::prelude::TractResult<TractTensor> {
    fn build<T: Datum + Copy>(shape: &[usize], data: &[T]) -> tract_onnx::prelude::TractResult<TractTensor> {
        TractTensor::from_shape(shape, data)
    }
    match &tensor.data {
        TensorData::F32(v) => build(&tensor.shape, v),
        TensorData::F64(v) => build(&tensor.shape, v),
        TensorData::I64(v) => build(&tensor.shape, v),
        TensorData::I32(v) => build(&tensor.shape, v),
        TensorData::Bool(v) => build(&tensor.shape, v),
    }
}

fn from_tract(value: &TValue, name: &str) -> Result<Tensor, RunError> {
    let tensor: &TractTensor = value;
    let plain = tensor.try_as_plain_ram().map_err(backend_error)?;
    let data = match tensor.datum_type() {
        DatumType::F32 => TensorData::F32(plain.as_slice::<f32>().map_err(backend_error)?.to_vec()),
        DatumType::F64 => TensorData::F64(plain.as_slice::<f64>().map_err(backend_error)?.to_vec()),
        DatumType::I64 => TensorData::I64(plain.as_slice::<i64>().map_err(backend_error)?.to_vec()),
        DatumType::I32 => TensorData::I32(plain.as_slice::<i32>().map_err(backend_error)?.to_vec()),
        DatumType::Bool => TensorData::Bool(plain.as_slice::<bool>().map_err(backend_error)?.to_vec()),
        // Other integers (tract may narrow a label to u32 or keep it a dimension): as int64.
        other if other.is_integer() || other == DatumType::TDim => {
            let wide = tensor.cast_to_dt(DatumType::I64).map_err(backend_error)?;
            let plain = wide.try_as_plain_ram().map_err(backend_error)?;
            TensorData::I64(plain.as_slice::<i64>().map_err(backend_error)?.to_vec())
        }
        other => return Err(RunError::OutputType { name: name.to_owned(), elem: datum_name(other) }),
    };
    Ok(Tensor { shape: tensor.shape().to_vec(), data })
}

fn datum_type(elem: ElemType) -> Option<DatumType> {
    Some(match elem {
        ElemType::Float => DatumType::F32,
        ElemType::Double => DatumType::F64,
        ElemType::Int64 => DatumType::I64,
        ElemType::Int32 => DatumType::I32,
        ElemType::Bool => DatumType::Bool,
        ElemType::String | ElemType::Other => return None,
    })
}

fn datum_name(datum: DatumType) -> &'static str {
    match datum {
        DatumType::String => "string",
        DatumType::F16 => "float16",
        DatumType::U8 | DatumType::I8 => "8-bit integer",
        _ => "an unsupported element type",
    }
}

/// Replaces the label of a two-class tree classifier with the class whose probability is the
/// larger (ties go to the first class, as in ONNX Runtime).
fn relabel(outputs: &mut [Tensor], fix: &BinaryTreeClassifier) -> Result<(), RunError> {
    let probabilities = match outputs.get(fix.probabilities_output).map(|t| &t.data) {
        Some(TensorData::F32(p)) => p.clone(),
        _ => return Err(RunError::Backend("the tree classifier's probabilities are not a float tensor".into())),
    };
    let Some(label) = outputs.get_mut(fix.label_output) else {
        return Err(RunError::Backend("the tree classifier's label output is missing".into()));
    };
    let rows = label.shape.first().copied().unwrap_or(0);
    if probabilities.len() != rows * 2 {
        return Err(RunError::Backend(format!("{} probabilities for {rows} rows of a two-class classifier", probabilities.len())));
    }
    let labels = probabilities.chunks_exact(2).map(|p| if p[1] > p[0] { fix.class_labels[1] } else { fix.class_labels[0] });
    label.data = match &label.data {
        TensorData::I64(_) => TensorData::I64(labels.collect()),
        TensorData::I32(_) => TensorData::I32(labels.map(|l| l as i32).collect()),
        _ => return Err(RunError::Backend("the tree classifier's label is not an integer tensor".into())),
    };
    Ok(())
}
