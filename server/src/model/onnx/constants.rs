//! An ONNX graph's constants (initializers and Constant nodes) as numbers:
//! decoded from every numeric storage ONNX allows, checked against the
//! shape they declare, and shaped for the layers they become.

use super::refusal;
use onnx_schema::{NodeProto, TensorProto};

/// A constant (initializer or Constant node), as f64 values with its shape.
#[derive(Debug, Clone)]
pub(super) struct Constant {
    pub(super) dims: Vec<usize>,
    pub(super) values: Vec<f64>,
}

impl Constant {
    /// The single value of a one-element constant.
    pub(super) fn scalar(&self) -> Option<f64> {
        match self.values[..] {
            [v] => Some(v),
            _ => None,
        }
    }

    /// A `[in, out]` matrix as `[out, in]`.
    pub(super) fn transposed(&self, node: &NodeProto) -> Result<Constant, String> {
        let [rows, cols] = self.dims[..] else {
            return Err(refusal(node, &format!("a weight of shape {:?}, not a matrix", self.dims)));
        };
        let values =
            (0..cols).flat_map(|c| (0..rows).map(move |r| (r, c))).map(|(r, c)| self.values[r * cols + c]).collect();
        Ok(Constant { dims: vec![cols, rows], values })
    }
}

/// `values` as one per feature: a single value is repeated; an empty list
/// is `default` for every feature.
pub(super) fn per_feature(values: Vec<f64>, width: usize, default: f64, node: &NodeProto) -> Result<Vec<f64>, String> {
    match values.len() {
        0 => Ok(vec![default; width]),
        1 => Ok(vec![values[0]; width]),
        n if n == width => Ok(values),
        n => Err(refusal(node, &format!("a constant of {n} values where rows carry {width}"))),
    }
}

/// Decodes an initializer's values (FLOAT, DOUBLE, INT32, INT64, INT8, UINT8).
pub(super) fn constant(tensor: &TensorProto) -> Result<Constant, String> {
    if tensor.data_location == 1 {
        return Err(format!(
            "initializer `{}` is stored in an external file; save the model with its weights inside (`save_as_external_data=False`)",
            tensor.name
        ));
    }
    let dims: Vec<usize> = tensor.dims.iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect();
    let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or("an initializer's shape overflows")?;
    let raw = &tensor.raw_data;
    let values: Vec<f64> = match tensor.data_type {
        1 if !raw.is_empty() => {
            raw.chunks_exact(4).map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap()))).collect()
        }
        1 => tensor.float_data.iter().map(|v| f64::from(*v)).collect(),
        11 if !raw.is_empty() => raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
        11 => tensor.double_data.clone(),
        7 if !raw.is_empty() => raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
        7 => tensor.int64_data.iter().map(|v| *v as f64).collect(),
        6 if !raw.is_empty() => {
            raw.chunks_exact(4).map(|b| f64::from(i32::from_le_bytes(b.try_into().unwrap()))).collect()
        }
        6 => tensor.int32_data.iter().map(|v| f64::from(*v)).collect(),
        // INT8 and UINT8 (quantized weights, zero points): a byte each raw, else in int32_data.
        3 if !raw.is_empty() => raw.iter().map(|b| f64::from(*b as i8)).collect(),
        2 if !raw.is_empty() => raw.iter().map(|b| f64::from(*b)).collect(),
        2 | 3 => tensor.int32_data.iter().map(|v| f64::from(*v)).collect(),
        // Other types (strings: skl2onnx's class names) are never read as numbers.
        _ => Vec::new(),
    };
    // A numeric initializer must hold exactly what its shape declares (a
    // shape is a claim, not an allocation); any other is shapeless, so no
    // layer can read values it does not have.
    let numeric = matches!(tensor.data_type, 1 | 2 | 3 | 6 | 7 | 11);
    if numeric && values.len() != count {
        return Err(format!("initializer `{}` holds {} values for shape {dims:?}", tensor.name, values.len()));
    }
    Ok(Constant { dims: if numeric { dims } else { vec![0] }, values })
}
