//! A model converted from a DataFrame takes an input tensor per feature,
//! named as the model names it, exactly as Triton's ONNX Runtime backend
//! takes the same graph: numbers as FP32, FP64, INT64 or INT32, categories
//! as BYTES (UTF-8 strings), each of shape `[batch]` or `[batch, 1]`, typed
//! or raw. The tensors become the core's rows, categories encoded as codes
//! by the core (`cells`).

use super::raw::{has_contents, raw_values, split_length_prefixed};
use crate::core::cells::{self, Cell};
use crate::core::error::{ServeError, echo};
use crate::core::scoring::{Fields, Rows};
use crate::model::LoadedModel;
use candela::inference as oip;

/// The datatype ModelMetadata lists for feature `feature` of `model`.
pub fn datatype(model: &LoadedModel, feature: usize) -> &'static str {
    if model.scorer.categories(feature).is_some() { "BYTES" } else { "FP32" }
}

/// The request's tensors, one per feature, as rows for the core.
pub fn decode(model: &LoadedModel, request: &oip::ModelInferRequest, max_rows: usize) -> Result<Rows, ServeError> {
    let features = &model.manifest.features;
    let width = features.len();
    let signature = || {
        let inputs: Vec<String> = (0..width).map(|f| format!("{} {}", features[f], datatype(model, f))).collect();
        format!("model `{}` takes an input per feature, [batch] or [batch, 1]: {}", model.segment, inputs.join(", "))
    };
    if request.inputs.len() != width {
        return Err(ServeError::invalid("inputs", format!("has {} tensors; {}", request.inputs.len(), signature())));
    }
    let raw = &request.raw_input_contents;
    if !raw.is_empty() && raw.len() != width {
        return Err(ServeError::invalid(
            "raw_input_contents",
            format!("has {} entries; expected one per input ({width})", raw.len()),
        ));
    }
    let empty = oip::InferTensorContents::default();
    let mut values: Vec<f32> = Vec::new();
    let mut batch = None;
    let mut seen = vec![false; width];
    for (i, input) in request.inputs.iter().enumerate() {
        let Some(feature) = features.iter().position(|f| *f == input.name) else {
            return Err(ServeError::invalid(
                format!("inputs[{i}].name"),
                format!("is `{}`; {}", echo(&input.name), signature()),
            ));
        };
        if std::mem::replace(&mut seen[feature], true) {
            return Err(ServeError::invalid(format!("inputs[{i}].name"), format!("`{}` is given twice", input.name)));
        }
        let rows = match input.shape[..] {
            [rows] | [rows, 1] => usize::try_from(rows).ok(),
            _ => None,
        };
        let rows = rows.filter(|r| *r <= max_rows).ok_or_else(|| {
            ServeError::invalid(
                format!("inputs[{i}].shape"),
                format!("is {:?}; an input per feature is [batch] or [batch, 1], at most {max_rows} rows", input.shape),
            )
        })?;
        match batch {
            None => {
                batch = Some(rows);
                values = vec![0.0; rows * width];
            }
            Some(batch) if batch != rows => {
                return Err(ServeError::invalid(
                    format!("inputs[{i}].shape"),
                    format!("is {:?}; every input must carry the same rows ({batch})", input.shape),
                ));
            }
            Some(_) => {}
        }
        let field = |r: usize| format!("inputs[{i}][{r}]");
        let mut put = |r: usize, cell: Cell| -> Result<(), ServeError> {
            values[r * width + feature] =
                cells::encode(model, feature, cell).map_err(|why| ServeError::invalid(field(r), why))?;
            Ok(())
        };
        let contents = input.contents.as_ref().unwrap_or(&empty);
        if !raw.is_empty() && has_contents(contents) {
            return Err(ServeError::invalid(
                format!("inputs[{i}].contents"),
                "is set while raw_input_contents is used too; send the tensor one way or the other",
            ));
        }
        if input.datatype == "BYTES" {
            let strings: Vec<&[u8]> = match raw.get(i) {
                Some(raw) => split_length_prefixed(raw, i)?,
                None => contents.bytes_contents.iter().map(Vec::as_slice).collect(),
            };
            count(i, strings.len(), rows)?;
            for (r, bytes) in strings.into_iter().enumerate() {
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| ServeError::invalid(field(r), "is not UTF-8; categories are UTF-8 strings"))?;
                put(r, Cell::Text(text))?;
            }
            continue;
        }
        let numbers: Vec<f64> = match (raw.get(i), input.datatype.as_str()) {
            (Some(raw), datatype) => {
                raw_values(i, datatype, raw, rows, &input.shape)?.into_iter().map(f64::from).collect()
            }
            (None, "FP32") => contents.fp32_contents.iter().map(|v| f64::from(*v)).collect(),
            (None, "FP64") => contents.fp64_contents.clone(),
            (None, "INT64") => contents.int64_contents.iter().map(|v| *v as f64).collect(),
            (None, "INT32") => contents.int_contents.iter().map(|v| f64::from(*v)).collect(),
            (None, other) => {
                return Err(ServeError::invalid(
                    format!("inputs[{i}].datatype"),
                    format!("is `{}`; send numbers as FP32, FP64, INT64 or INT32 and categories as BYTES", echo(other)),
                ));
            }
        };
        count(i, numbers.len(), rows)?;
        for (r, number) in numbers.into_iter().enumerate() {
            put(r, if number.is_nan() { Cell::Missing } else { Cell::Number(number) })?;
        }
    }
    Ok(Rows { fields: &NamedFields, width, values, max_rows })
}

/// An input's value count must be its rows.
fn count(i: usize, values: usize, rows: usize) -> Result<(), ServeError> {
    if values == rows {
        return Ok(());
    }
    Err(ServeError::invalid(format!("inputs[{i}].contents"), format!("has {values} values for {rows} rows")))
}

/// How the protocol names the values of an input per feature, in violations.
struct NamedFields;

impl Fields for NamedFields {
    fn width(&self, declared: usize) -> (&'static str, String) {
        ("inputs", format!("has {declared} tensors"))
    }

    fn values(&self) -> &'static str {
        "inputs"
    }

    fn row(&self, row: usize) -> String {
        format!("inputs[*][{row}]")
    }

    fn cell(&self, row: usize, col: usize) -> String {
        format!("inputs[feature {col}][{row}]")
    }
}
