//! The graph's ends: the input Candela feeds (float rows of the model's
//! width) and the output it serves (the class probabilities).

use onnx_schema as proto;

/// The graph input must be float rows of the model's width (the batch
/// dimension may be symbolic).
pub(super) fn check_input(input: &proto::ValueInfoProto, inputs: usize) -> Result<(), String> {
    let Some(proto::type_proto::Value::TensorType(tensor)) = input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Ok(());
    };
    if !matches!(tensor.elem_type, 1 | 11) {
        return Err(format!(
            "the graph input `{}` has element type {}; Candela feeds float rows (FLOAT or DOUBLE)",
            input.name, tensor.elem_type
        ));
    }
    let dims: Vec<Option<i64>> = tensor
        .shape
        .iter()
        .flat_map(|s| &s.dim)
        .map(|d| match d.value {
            Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
            _ => None,
        })
        .collect();
    match dims[..] {
        [_, Some(width)] if width as usize != inputs => Err(format!(
            "the graph input `{}` takes {width} features per row but model.json lists {inputs}",
            input.name
        )),
        [_, _] | [] => Ok(()),
        _ => Err(format!(
            "the graph input `{}` has {} dimensions; Candela feeds [rows, features]",
            input.name,
            dims.len()
        )),
    }
}

/// The output holding class probabilities: the only one, else the one named
/// like `probabilities` (skl2onnx's label output is left out).
pub(super) fn probability_output(outputs: &[proto::ValueInfoProto]) -> Result<String, String> {
    match outputs {
        [only] => Ok(only.name.clone()),
        many => many.iter().find(|o| o.name.contains("prob")).map(|o| o.name.clone()).ok_or_else(|| {
            let names: Vec<&str> = many.iter().map(|o| o.name.as_str()).collect();
            format!(
                "the graph has outputs {names:?}; Candela serves the probabilities: name that output `probabilities`"
            )
        }),
    }
}
