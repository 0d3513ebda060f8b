//! The Open Inference Protocol's tensors: the one input tensor decoded into
//! rows for the core (typed contents or raw little-endian bytes; a tensor
//! per feature: `named`), the
//! outputs a request asks for (Triton's classification extension included;
//! a regressor answers `prediction` only, its FP32 values), and the answer
//! encoded back, typed or raw.

use super::raw::{has_contents, length_prefixed, little_endian, raw_values};
use super::{CLASSIFICATION, CONTRIBUTIONS, INPUT, PREDICTION, PROBABILITIES, named};
use crate::core::error::{ServeError, echo};
use crate::core::explaining::Explanation;
use crate::core::scores::Scores;
use crate::core::scoring::{Fields, Rows};
use crate::model::LoadedModel;
use crate::model::manifest::Task;
use crate::model::scorer::predicted_class;
use candela::inference as oip;
use oip::infer_parameter::ParameterChoice;
use oip::model_infer_request::InferInputTensor;
use oip::model_infer_response::InferOutputTensor;

/// The request's input tensors as rows for the core: the one `features`
/// matrix, or (a model taking an input per feature) one tensor per feature
/// (public for the fuzz targets in `fuzz/`).
pub fn decode_input(
    model: &LoadedModel,
    request: &oip::ModelInferRequest,
    max_rows: usize,
) -> Result<Rows, ServeError> {
    let matrix = matches!(&request.inputs[..], [input] if input.name == INPUT);
    if model.scorer.inputs_by_name() && !matrix {
        return named::decode(model, request, max_rows);
    }
    let features = model.scorer.inputs();
    let signature = format!("model `{}` takes one input `{INPUT}`, FP32 [batch, {features}]", model.segment);
    let [input] = request.inputs.as_slice() else {
        return Err(ServeError::invalid("inputs", format!("has {} tensors; {signature}", request.inputs.len())));
    };
    if input.name != INPUT {
        return Err(ServeError::invalid("inputs[0].name", format!("is `{}`; {signature}", echo(&input.name))));
    }
    let [rows, columns] = input.shape.as_slice() else {
        return Err(ServeError::invalid("inputs[0].shape", format!("is {:?}; {signature}", input.shape)));
    };
    let (Ok(rows), Ok(columns)) = (usize::try_from(*rows), usize::try_from(*columns)) else {
        return Err(ServeError::invalid(
            "inputs[0].shape",
            format!("is {:?}: dimensions cannot be negative", input.shape),
        ));
    };
    let Some(elements) = rows.checked_mul(columns) else {
        return Err(ServeError::invalid("inputs[0].shape", format!("is {:?}: too large", input.shape)));
    };
    let values = if request.raw_input_contents.is_empty() {
        typed_values(input, elements)?
    } else {
        if input.contents.as_ref().is_some_and(has_contents) {
            return Err(ServeError::invalid(
                "inputs[0].contents",
                "is set while raw_input_contents is used too; send the tensor one way or the other",
            ));
        }
        let [raw] = request.raw_input_contents.as_slice() else {
            return Err(ServeError::invalid(
                "raw_input_contents",
                format!("has {} entries; expected one per input (1)", request.raw_input_contents.len()),
            ));
        };
        if !matches!(input.datatype.as_str(), "FP32" | "FP64" | "FP16" | "BF16") {
            return Err(unsupported_datatype(&input.datatype));
        }
        raw_values(0, &input.datatype, raw, elements, &input.shape)?
    };
    Ok(Rows { fields: &InputFields, width: columns, values, max_rows })
}

/// Typed contents → f32 values. FP32 travels as `fp32_contents`, FP64 as `fp64_contents`.
fn typed_values(input: &InferInputTensor, elements: usize) -> Result<Vec<f32>, ServeError> {
    let contents = input.contents.clone().unwrap_or_default();
    let (field, values): (&str, Vec<f32>) = match input.datatype.as_str() {
        "FP32" => ("fp32_contents", contents.fp32_contents),
        "FP64" => ("fp64_contents", contents.fp64_contents.into_iter().map(|v| v as f32).collect()),
        "FP16" | "BF16" => {
            return Err(ServeError::invalid(
                "inputs[0].datatype",
                format!("is {}, which travels only in raw_input_contents (little-endian)", echo(&input.datatype)),
            ));
        }
        other => return Err(unsupported_datatype(other)),
    };
    if values.len() != elements {
        return Err(ServeError::invalid(
            format!("inputs[0].contents.{field}"),
            format!("has {} values; shape {:?} needs {elements}", values.len(), input.shape),
        ));
    }
    Ok(values)
}

fn unsupported_datatype(datatype: &str) -> ServeError {
    ServeError::invalid(
        "inputs[0].datatype",
        format!("is `{}`; send FP32 (or FP64, or FP16/BF16 as raw_input_contents)", echo(datatype)),
    )
}

/// One output a request wants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Requested {
    name: &'static str,
    /// Triton's classification extension: the top `k` classes as BYTES
    /// `"<probability>:<index>:<label>"` instead of the probabilities.
    top: Option<usize>,
}

/// The outputs a request wants of `model`, in its order; none listed means
/// all. An `explained` request also gets `contributions` (last, unless listed).
pub fn requested_outputs(
    model: &LoadedModel,
    request: &oip::ModelInferRequest,
    explained: bool,
) -> Result<Vec<Requested>, ServeError> {
    let mut outputs = listed_outputs(model, request, explained)?;
    if explained && !outputs.iter().any(|o| o.name == CONTRIBUTIONS) {
        outputs.push(Requested { name: CONTRIBUTIONS, top: None });
    }
    Ok(outputs)
}

/// The outputs the request lists (all when none).
fn listed_outputs(
    model: &LoadedModel,
    request: &oip::ModelInferRequest,
    explained: bool,
) -> Result<Vec<Requested>, ServeError> {
    let regressor = model.manifest.task() == Task::Regression;
    if request.outputs.is_empty() {
        return Ok(match regressor {
            true => vec![Requested { name: PREDICTION, top: None }],
            false => vec![Requested { name: PROBABILITIES, top: None }, Requested { name: PREDICTION, top: None }],
        });
    }
    request
        .outputs
        .iter()
        .enumerate()
        .map(|(i, output)| {
            let name = match output.name.as_str() {
                PROBABILITIES if regressor => {
                    return Err(ServeError::invalid(
                        format!("outputs[{i}].name"),
                        format!(
                            "is `{PROBABILITIES}`, but model `{}` is a regressor: its one output is `{PREDICTION}`, the value",
                            model.segment
                        ),
                    ));
                }
                PROBABILITIES => PROBABILITIES,
                PREDICTION => PREDICTION,
                CONTRIBUTIONS if explained => CONTRIBUTIONS,
                CONTRIBUTIONS => {
                    return Err(ServeError::invalid(
                        format!("outputs[{i}].name"),
                        format!("is `{CONTRIBUTIONS}`; set the request parameter `explain` (the reasons per row, at least 1) to have them"),
                    ));
                }
                other => {
                    return Err(ServeError::invalid(
                        format!("outputs[{i}].name"),
                        format!("is `{}`; the model's outputs are `{PROBABILITIES}` and `{PREDICTION}`", echo(other)),
                    ));
                }
            };
            let field = || format!("outputs[{i}].parameters[{CLASSIFICATION}]");
            let top = match output.parameters.get(CLASSIFICATION).and_then(|p| p.parameter_choice.as_ref()) {
                None => None,
                Some(_) if name != PROBABILITIES => {
                    return Err(ServeError::invalid(
                        field(),
                        format!("applies to `{PROBABILITIES}`: classify the probabilities, not the predicted index"),
                    ));
                }
                Some(ParameterChoice::Int64Param(k)) if *k >= 1 => Some(*k as usize),
                Some(ParameterChoice::Uint64Param(k)) if *k >= 1 => Some(*k as usize),
                Some(other) => {
                    return Err(ServeError::invalid(
                        field(),
                        format!("is {other:?}; send the number of top classes wanted as an integer of at least 1"),
                    ));
                }
            };
            Ok(Requested { name, top })
        })
        .collect()
}

/// The scores (and the explanation, when asked) as the requested output
/// tensors, raw when the request was raw.
pub fn encode_outputs(
    model: &LoadedModel,
    id: String,
    scores: &Scores,
    explanation: Option<&Explanation>,
    outputs: &[Requested],
    raw: bool,
) -> oip::ModelInferResponse {
    let rows = scores.rows().len() as i64;
    let mut tensors = Vec::with_capacity(outputs.len());
    let mut raw_contents = Vec::new();
    for output in outputs {
        let (datatype, shape, contents) = match *output {
            Requested { top: Some(k), .. } => {
                let top = classified(scores, k.min(scores.classes), &model.manifest.labels);
                let shape = vec![rows, k.min(scores.classes) as i64];
                let contents = if raw {
                    raw_contents.push(length_prefixed(&top));
                    None
                } else {
                    Some(oip::InferTensorContents { bytes_contents: top, ..Default::default() })
                };
                ("BYTES", shape, contents)
            }
            Requested { name: CONTRIBUTIONS, .. } => {
                let explanation = explanation.expect("contributions are requested only with an explanation");
                let shape = match explanation.outputs {
                    1 => vec![rows, explanation.width as i64],
                    outputs => vec![rows, outputs as i64, explanation.width as i64],
                };
                let contents = if raw {
                    raw_contents.push(little_endian(&explanation.contributions, f32::to_le_bytes));
                    None
                } else {
                    let values = explanation.contributions.clone();
                    Some(oip::InferTensorContents { fp32_contents: values, ..Default::default() })
                };
                ("FP32", shape, contents)
            }
            Requested { name: PROBABILITIES, .. } => {
                let contents = if raw {
                    raw_contents.push(little_endian(&scores.probabilities, f32::to_le_bytes));
                    None
                } else {
                    Some(oip::InferTensorContents { fp32_contents: scores.probabilities.clone(), ..Default::default() })
                };
                ("FP32", vec![rows, scores.classes as i64], contents)
            }
            Requested { .. } if model.manifest.task() == Task::Regression => {
                let contents = if raw {
                    raw_contents.push(little_endian(&scores.probabilities, f32::to_le_bytes));
                    None
                } else {
                    Some(oip::InferTensorContents { fp32_contents: scores.probabilities.clone(), ..Default::default() })
                };
                ("FP32", vec![rows, 1], contents)
            }
            Requested { .. } => {
                let classes: Vec<i64> = scores.rows().map(|row| predicted_class(row) as i64).collect();
                let contents = if raw {
                    raw_contents.push(little_endian(&classes, i64::to_le_bytes));
                    None
                } else {
                    Some(oip::InferTensorContents { int64_contents: classes, ..Default::default() })
                };
                ("INT64", vec![rows, 1], contents)
            }
        };
        tensors.push(InferOutputTensor {
            name: output.name.to_string(),
            datatype: datatype.to_string(),
            shape,
            parameters: Default::default(),
            contents,
        });
    }
    oip::ModelInferResponse {
        model_name: model.segment.clone(),
        model_version: model.version.to_string(),
        id,
        parameters: Default::default(),
        outputs: tensors,
        raw_output_contents: raw_contents,
    }
}

/// Each row's `k` most probable classes, most probable first (the lower
/// index on a tie), as Triton writes them: `"<probability>:<index>:<label>"`.
fn classified(scores: &Scores, k: usize, labels: &[String]) -> Vec<Vec<u8>> {
    let mut top = Vec::with_capacity(scores.rows().len() * k);
    for row in scores.rows() {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        top.extend(order[..k].iter().map(|&i| format!("{:.6}:{i}:{}", row[i], labels[i]).into_bytes()));
    }
    top
}

/// How the protocol names the parts of the input tensor, in violations.
pub struct InputFields;

impl Fields for InputFields {
    fn width(&self, declared: usize) -> (&'static str, String) {
        ("inputs[0].shape", format!("has {declared} columns"))
    }

    fn values(&self) -> &'static str {
        "inputs[0]"
    }

    fn row(&self, row: usize) -> String {
        format!("inputs[0][{row}]")
    }

    fn cell(&self, row: usize, col: usize) -> String {
        format!("inputs[0][{row}][{col}]")
    }
}
