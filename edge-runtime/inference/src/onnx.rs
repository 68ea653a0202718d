//! Reading an ONNX file: its signature and operators, without running anything.

use prost::Message as _;
use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension;
use tract_onnx::pb::type_proto;

use crate::{Dim, ElemType, ModelError, ModelInfo, Signature, TensorSpec};

/// Decodes the protobuf, refusing what is not a model.
pub(crate) fn decode(bytes: &[u8]) -> Result<pb::ModelProto, ModelError> {
    let model = pb::ModelProto::decode(bytes).map_err(|e| ModelError::Corrupt(format!("the protobuf does not decode: {e}")))?;
    match &model.graph {
        None => Err(ModelError::NoGraph),
        Some(graph) if graph.node.is_empty() && graph.output.is_empty() => Err(ModelError::NoGraph),
        Some(_) => Ok(model),
    }
}

/// Reads a model's signature and the operators it uses.
pub fn inspect(bytes: &[u8]) -> Result<ModelInfo, ModelError> {
    let model = decode(bytes)?;
    let graph = model.graph.as_ref().ok_or(ModelError::NoGraph)?;
    Ok(ModelInfo { signature: signature(graph), operators: operators(graph) })
}

pub(crate) fn signature(graph: &pb::GraphProto) -> Signature {
    // Older exporters list initializers among the inputs too; those are not the caller's.
    let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())).map(tensor_spec).collect();
    let outputs = graph.output.iter().map(tensor_spec).collect();
    Signature { inputs, outputs }
}

fn tensor_spec(value: &pb::ValueInfoProto) -> TensorSpec {
    let tensor = value.r#type.as_ref().and_then(|t| t.value.as_ref()).map(|type_proto::Value::TensorType(t)| t);
    let Some(tensor) = tensor else {
        // A sequence or a map (ZipMap's output): not a tensor at all.
        return TensorSpec { name: value.name.clone(), elem_type: ElemType::Other, shape: None };
    };
    let shape = tensor.shape.as_ref().map(|shape| {
        shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(dimension::Value::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as u64),
                Some(dimension::Value::DimParam(name)) if !name.is_empty() => Dim::Free(Some(name.clone())),
                _ => Dim::Free(None),
            })
            .collect()
    });
    TensorSpec { name: value.name.clone(), elem_type: ElemType::from_onnx(tensor.elem_type), shape }
}

fn operators(graph: &pb::GraphProto) -> Vec<String> {
    let mut ops: Vec<String> = graph.node.iter().map(|n| format!("{}:{}", n.domain, n.op_type)).collect();
    ops.sort();
    ops.dedup();
    ops
}

/// A node's name for error messages: its own, else its first output's.
pub(crate) fn node_name(node: &pb::NodeProto) -> String {
    if !node.name.is_empty() {
        node.name.clone()
    } else {
        node.output.first().cloned().unwrap_or_default()
    }
}

/// A two-class tree ensemble classifier whose label and probabilities are both outputs of the
/// graph: `(label output index, probabilities output index, the two class labels)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BinaryTreeClassifier {
    pub label_output: usize,
    pub probabilities_output: usize,
    pub class_labels: [i64; 2],
}

pub(crate) fn binary_tree_classifiers(graph: &pb::GraphProto) -> Vec<BinaryTreeClassifier> {
    let output_index = |name: &str| graph.output.iter().position(|o| o.name == name);
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "TreeEnsembleClassifier" && n.output.len() == 2)
        .filter_map(|n| {
            let labels = n.attribute.iter().find(|a| a.name == "classlabels_int64s")?;
            let class_labels: [i64; 2] = labels.ints.as_slice().try_into().ok()?;
            Some(BinaryTreeClassifier {
                label_output: output_index(&n.output[0])?,
                probabilities_output: output_index(&n.output[1])?,
                class_labels,
            })
        })
        .collect()
}
