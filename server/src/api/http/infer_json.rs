//! The Open Inference Protocol's REST inference body: a JSON request
//! (tensors' `data` flat or nested) or Triton's binary tensor data (a JSON
//! header of `Inference-Header-Content-Length` bytes, then each binary
//! tensor's bytes) decoded into the protocol's request message, and the
//! answer encoded back as JSON or binary data, as the request asked.

use super::answer::{self, Refused};
use super::body;
use crate::api::oip::raw::{length_prefixed, little_endian};
use crate::core::error::{ServeError, echo};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use candela::inference as oip;
use oip::infer_parameter::ParameterChoice;
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The header that splits a binary-data request or answer: the JSON part's length.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// An inference request's JSON.
#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Vec<OutputTensor>,
}

#[derive(Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Flat>,
}

#[derive(Deserialize)]
struct OutputTensor {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// A tensor's `data`, in row-major order, flat or nested to any depth:
/// numbers, or strings (a BYTES tensor's elements).
#[derive(Default)]
struct Flat {
    numbers: Vec<f64>,
    strings: Vec<Vec<u8>>,
}

impl<'de> Deserialize<'de> for Flat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Flat, D::Error> {
        let mut values = Flat::default();
        deserializer.deserialize_any(Flatten(&mut values))?;
        Ok(values)
    }
}

/// Appends numbers or strings (and those of nested lists) to a flat list.
struct Flatten<'a>(&'a mut Flat);

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("numbers or strings, in a list (nested lists allowed)")
    }

    fn visit_f64<E>(self, value: f64) -> Result<(), E> {
        self.0.numbers.push(value);
        Ok(())
    }

    fn visit_i64<E>(self, value: i64) -> Result<(), E> {
        self.0.numbers.push(value as f64);
        Ok(())
    }

    fn visit_u64<E>(self, value: u64) -> Result<(), E> {
        self.0.numbers.push(value as f64);
        Ok(())
    }

    fn visit_str<E>(self, value: &str) -> Result<(), E> {
        self.0.strings.push(value.as_bytes().to_vec());
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(self.0))?.is_some() {}
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Which outputs travel as binary data: each requested output's own
/// `binary_data`, in order, else (and for every output when none is named)
/// the request's `binary_data_output`.
pub struct Binary {
    each: Vec<bool>,
    otherwise: bool,
}

impl Binary {
    /// Whether the answer's `i`th output travels as binary data.
    fn of(&self, i: usize) -> bool {
        self.each.get(i).copied().unwrap_or(self.otherwise)
    }
}

/// The request's JSON (and binary data, after the JSON's `split` bytes when
/// the request says so) as the protocol's request message (public for the
/// fuzz targets in `fuzz/`).
pub fn decode(
    split: Option<HeaderValue>,
    bytes: Bytes,
    model_name: String,
    model_version: String,
) -> Result<(oip::ModelInferRequest, Binary), Refused> {
    let header_length = match split {
        None => bytes.len(),
        Some(value) => {
            value.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|n| *n <= bytes.len()).ok_or_else(
                || {
                    ServeError::invalid(
                        "Inference-Header-Content-Length",
                        format!(
                            "is {value:?}; it must be the length of the JSON part, at most the body's {} bytes",
                            bytes.len()
                        ),
                    )
                },
            )?
        }
    };
    let request: InferRequest = body::parse(&bytes[..header_length])?;
    let mut binary = bytes.slice(header_length..);
    let mut inputs = Vec::with_capacity(request.inputs.len());
    let mut raw = Vec::new();
    for (i, input) in request.inputs.into_iter().enumerate() {
        let size = input.parameters.get("binary_data_size");
        let contents = match (size, input.data) {
            (Some(size), None) => {
                let size = size.as_u64().map(|s| s as usize).filter(|s| *s <= binary.len()).ok_or_else(|| {
                    ServeError::invalid(
                        format!("inputs[{i}].parameters.binary_data_size"),
                        format!("is {size}; {} bytes of binary data follow the JSON", binary.len()),
                    )
                })?;
                raw.push(binary.split_to(size));
                None
            }
            (None, Some(values)) => Some(typed(i, &input.datatype, &input.shape, values)?),
            (Some(_), Some(_)) => {
                return Err(ServeError::invalid(
                    format!("inputs[{i}]"),
                    "has both `data` and `parameters.binary_data_size`; send the tensor one way or the other",
                )
                .into());
            }
            (None, None) => {
                return Err(ServeError::invalid(
                    format!("inputs[{i}].data"),
                    "is missing: send the values, or binary data with `parameters.binary_data_size`",
                )
                .into());
            }
        };
        inputs.push(oip::model_infer_request::InferInputTensor {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            parameters: Default::default(),
            contents,
        });
    }
    if !binary.is_empty() {
        return Err(ServeError::invalid(
            "(body)",
            format!(
                "has {} bytes of binary data after the JSON that no input claims (`parameters.binary_data_size`)",
                binary.len()
            ),
        )
        .into());
    }
    if !raw.is_empty() && raw.len() != inputs.len() {
        return Err(ServeError::invalid("inputs", "mixes JSON and binary tensors; send them all one way").into());
    }
    let otherwise = request.parameters.get("binary_data_output").and_then(Value::as_bool).unwrap_or(false);
    let mut each = Vec::with_capacity(request.outputs.len());
    let outputs = request
        .outputs
        .into_iter()
        .map(|output| {
            each.push(output.parameters.get("binary_data").and_then(Value::as_bool).unwrap_or(otherwise));
            let parameters = output
                .parameters
                .iter()
                .filter(|(name, _)| name.as_str() == "classification")
                .map(|(name, value)| (name.clone(), parameter(value)))
                .collect();
            oip::model_infer_request::InferRequestedOutputTensor { name: output.name, parameters }
        })
        .collect::<Vec<_>>();
    let binary = Binary { each, otherwise };
    // The one request parameter the server reads: `explain`.
    let parameters = request
        .parameters
        .iter()
        .filter(|(name, _)| name.as_str() == "explain")
        .map(|(n, v)| (n.clone(), parameter(v)));
    let request = oip::ModelInferRequest {
        model_name,
        model_version,
        id: request.id,
        parameters: parameters.collect(),
        inputs,
        outputs,
        raw_input_contents: raw,
    };
    Ok((request, binary))
}

/// A JSON tensor's values as the protocol's typed contents: FP32 or FP64
/// (the other types travel as binary data), as many as the shape says.
fn typed(i: usize, datatype: &str, shape: &[i64], data: Flat) -> Result<oip::InferTensorContents, ServeError> {
    let Flat { numbers: values, strings } = data;
    let count = values.len() + strings.len();
    let elements = shape.iter().try_fold(1usize, |n, d| n.checked_mul(usize::try_from(*d).ok()?));
    if let Some(elements) = elements.filter(|n| *n != count) {
        return Err(ServeError::invalid(
            format!("inputs[{i}].data"),
            format!("has {count} values; shape {shape:?} needs {elements}"),
        ));
    }
    let mixed = if datatype == "BYTES" { !values.is_empty() } else { !strings.is_empty() };
    if mixed {
        return Err(ServeError::invalid(
            format!("inputs[{i}].data"),
            "must be all strings for a BYTES tensor and all numbers otherwise",
        ));
    }
    match datatype {
        "BYTES" => Ok(oip::InferTensorContents { bytes_contents: strings, ..Default::default() }),
        "INT64" => Ok(oip::InferTensorContents {
            int64_contents: values.into_iter().map(|v| v as i64).collect(),
            ..Default::default()
        }),
        "INT32" => Ok(oip::InferTensorContents {
            int_contents: values.into_iter().map(|v| v as i32).collect(),
            ..Default::default()
        }),
        "FP32" => Ok(oip::InferTensorContents {
            fp32_contents: values.into_iter().map(|v| v as f32).collect(),
            ..Default::default()
        }),
        "FP64" => Ok(oip::InferTensorContents { fp64_contents: values, ..Default::default() }),
        other => Err(ServeError::invalid(
            format!("inputs[{i}].datatype"),
            format!(
                "is `{}`; JSON data must be FP32, FP64, INT64, INT32 or BYTES (FP16 and BF16 travel as binary data: Inference-Header-Content-Length)",
                echo(other)
            ),
        )),
    }
}

/// A JSON parameter as the protocol's parameter.
fn parameter(value: &Value) -> oip::InferParameter {
    let choice = match value {
        Value::Bool(b) => ParameterChoice::BoolParam(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => ParameterChoice::Int64Param(i),
            (None, Some(u)) => ParameterChoice::Uint64Param(u),
            _ => ParameterChoice::DoubleParam(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => ParameterChoice::StringParam(s.clone()),
        other => ParameterChoice::StringParam(other.to_string()),
    };
    oip::InferParameter { parameter_choice: Some(choice) }
}

/// One output in the answer's JSON.
#[derive(Serialize)]
struct OutputJson {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

/// The protocol's answer as JSON, with the outputs asked for as binary
/// data after it.
pub fn encode(response: oip::ModelInferResponse, binary: &Binary) -> Response {
    let mut tail: Vec<Bytes> = Vec::new();
    let outputs: Vec<OutputJson> = response
        .outputs
        .into_iter()
        .enumerate()
        .map(|(i, output)| {
            let contents = output.contents.unwrap_or_default();
            let (parameters, data) = if binary.of(i) {
                let bytes = match output.datatype.as_str() {
                    "FP32" => little_endian(&contents.fp32_contents, f32::to_le_bytes),
                    "INT64" => little_endian(&contents.int64_contents, i64::to_le_bytes),
                    _ => length_prefixed(&contents.bytes_contents),
                };
                let size = bytes.len();
                tail.push(bytes);
                (Some(json!({"binary_data_size": size})), None)
            } else {
                let data = match output.datatype.as_str() {
                    "FP32" => json!(contents.fp32_contents),
                    "INT64" => json!(contents.int64_contents),
                    _ => json!(contents.bytes_contents.iter().map(|b| String::from_utf8_lossy(b)).collect::<Vec<_>>()),
                };
                (None, Some(data))
            };
            OutputJson { name: output.name, datatype: output.datatype, shape: output.shape, parameters, data }
        })
        .collect();
    let mut head =
        json!({"model_name": response.model_name, "model_version": response.model_version, "outputs": outputs});
    if !response.id.is_empty() {
        head["id"] = json!(response.id);
    }
    if tail.is_empty() {
        return answer::json(StatusCode::OK, &head);
    }
    let head = serde_json::to_vec(&head).expect("answers always serialize");
    let length = head.len();
    let mut whole = head;
    for bytes in tail {
        whole.extend_from_slice(&bytes);
    }
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
        (header::HeaderName::from_static(HEADER_LENGTH), HeaderValue::from(length)),
    ];
    (StatusCode::OK, headers, whole).into_response()
}
