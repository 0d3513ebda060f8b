//! The graph's ends: the inputs Candela feeds (one matrix of every feature,
//! or an input per feature) and the output it serves (the class probabilities).

use super::{ClassLabels, attribute};
use onnx_schema as proto;

/// The class labels a classifier op (or ZipMap) names: `classlabels_strings`,
/// else its integer labels written as numbers; `None` when it names none.
pub(super) fn class_labels(node: &proto::NodeProto) -> Option<ClassLabels> {
    let strings = attribute(node, "classlabels_strings").map(|a| &a.strings).filter(|s| !s.is_empty());
    if let Some(strings) = strings {
        let names = strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect();
        return Some(ClassLabels { names, strings: true });
    }
    ["classlabels_int64s", "classlabels_ints"]
        .iter()
        .find_map(|name| attribute(node, name).map(|a| &a.ints).filter(|i| !i.is_empty()))
        .map(|ints| ClassLabels { names: ints.iter().map(i64::to_string).collect(), strings: false })
}

/// What a graph input carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Fed {
    /// Numbers: `width` features (one matrix of every feature, or one column).
    Numbers { width: usize },
    /// One string feature (a category).
    Text,
}

/// The graph's inputs as Candela feeds them, and the features' names:
/// one float matrix of every feature (named by model.json's `features`, else
/// `f0`, `f1`, …), or (a graph converted from a DataFrame) one `[rows, 1]`
/// input per feature, numbers or strings, named by the graph (model.json's
/// `features`, when listed, must name them alike).
pub(super) fn fed(inputs: &[&proto::ValueInfoProto], features: &[String]) -> Result<(Vec<Fed>, Vec<String>), String> {
    let fed = match_inputs(inputs, features)?;
    let names = match (&fed[..], features.is_empty()) {
        (_, false) => features.to_vec(),
        ([Fed::Numbers { width }], true) => (0..*width).map(|i| format!("f{i}")).collect(),
        (_, true) => inputs.iter().map(|i| i.name.clone()).collect(),
    };
    Ok((fed, names))
}

fn match_inputs(inputs: &[&proto::ValueInfoProto], features: &[String]) -> Result<Vec<Fed>, String> {
    match inputs {
        [] => Err("the graph takes no input".into()),
        [input] => match shape(input)? {
            (Element::Text, _) => Err(format!(
                "the graph's one input `{}` is strings; Candela feeds strings as named [rows, 1] inputs, one per feature",
                input.name
            )),
            (Element::Number, Some(width)) if features.is_empty() => Ok(vec![Fed::Numbers { width }]),
            (Element::Number, None) if features.is_empty() => Err(format!(
                "the graph input `{}` does not declare its width: list the model's `features` in model.json",
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
            if !features.is_empty() && names != features {
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
