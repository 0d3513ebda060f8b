//! The graph's ends: the inputs Candela feeds (one matrix of every feature,
//! or an input per feature) and the output it serves (the class probabilities).

use onnx_schema as proto;

/// What a graph input carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Fed {
    /// Numbers: `width` features (one matrix of every feature, or one column).
    Numbers { width: usize },
    /// One string feature (a category).
    Text,
}

/// The graph's inputs as Candela feeds them, for model.json's `features`:
/// one float matrix of every feature, or (a graph converted from a
/// DataFrame) one `[rows, 1]` input per feature, numbers or strings, named
/// and ordered as `features` names them.
pub(super) fn fed(inputs: &[&proto::ValueInfoProto], features: &[String]) -> Result<Vec<Fed>, String> {
    match inputs {
        [] => Err("the graph takes no input".into()),
        [input] => match shape(input)? {
            (Element::Text, _) => Err(format!(
                "the graph's one input `{}` is strings; Candela feeds strings as named [rows, 1] inputs, one per feature",
                input.name
            )),
            (Element::Number, Some(width)) if width != features.len() => Err(format!(
                "the graph input `{}` takes {width} features per row but model.json lists {}",
                input.name,
                features.len()
            )),
            (Element::Number, _) => Ok(vec![Fed::Numbers { width: features.len() }]),
        },
        many => {
            let names: Vec<&str> = many.iter().map(|i| i.name.as_str()).collect();
            if names != features {
                return Err(format!(
                    "the graph takes an input per feature (a DataFrame's columns) named {names:?}; model.json's \
                     `features` must list these names in this order (it lists {features:?})"
                ));
            }
            many.iter()
                .map(|input| match shape(input)? {
                    (_, Some(width)) if width != 1 => Err(format!(
                        "the graph input `{}` takes {width} values per row; an input per feature takes [rows, 1]",
                        input.name
                    )),
                    (Element::Number, _) => Ok(Fed::Numbers { width: 1 }),
                    (Element::Text, _) => Ok(Fed::Text),
                })
                .collect()
        }
    }
}

/// What an input's elements are.
enum Element {
    Number,
    Text,
}

/// An input's element kind and its width (`None`: not declared), checking
/// that it is rows of numbers (FLOAT, DOUBLE, INT64, INT32) or strings.
fn shape(input: &proto::ValueInfoProto) -> Result<(Element, Option<usize>), String> {
    let Some(proto::type_proto::Value::TensorType(tensor)) = input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Ok((Element::Number, None));
    };
    let element = match tensor.elem_type {
        1 | 6 | 7 | 11 => Element::Number,
        8 => Element::Text,
        other => {
            return Err(format!(
                "the graph input `{}` has element type {other}; Candela feeds numbers (FLOAT, DOUBLE, INT64, INT32) or strings",
                input.name
            ));
        }
    };
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
        [_, width] => Ok((element, width.map(|w| usize::try_from(w).unwrap_or(usize::MAX)))),
        [] | [_] => Ok((element, None)),
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
