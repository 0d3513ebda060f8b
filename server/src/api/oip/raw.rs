//! Tensors' raw (binary) form, both ways: numbers as little-endian bytes,
//! BYTES elements each a 4-byte little-endian length then its bytes, as
//! Triton's clients write `raw_input_contents` and HTTP binary data (and
//! whether a tensor came typed instead, which excludes the raw form).

use crate::core::error::{ServeError, echo};
use bytes::Bytes;
use candela::inference as oip;

/// Whether a tensor carries typed contents (which raw_input_contents excludes).
pub(super) fn has_contents(c: &oip::InferTensorContents) -> bool {
    !(c.bool_contents.is_empty()
        && c.int_contents.is_empty()
        && c.int64_contents.is_empty()
        && c.uint_contents.is_empty()
        && c.uint64_contents.is_empty()
        && c.fp32_contents.is_empty()
        && c.fp64_contents.is_empty()
        && c.bytes_contents.is_empty())
}

/// Input `input`'s raw little-endian bytes → f32 values, for FP32, FP64,
/// FP16, BF16, INT64 and INT32.
pub fn raw_values(
    input: usize,
    datatype: &str,
    raw: &[u8],
    elements: usize,
    shape: &[i64],
) -> Result<Vec<f32>, ServeError> {
    let width = match datatype {
        "FP32" | "INT32" => 4,
        "FP64" | "INT64" => 8,
        "FP16" | "BF16" => 2,
        other => {
            return Err(ServeError::invalid(
                format!("inputs[{input}].datatype"),
                format!("is `{}`; send numbers as FP32, FP64, FP16, BF16, INT64 or INT32", echo(other)),
            ));
        }
    };
    if elements.checked_mul(width) != Some(raw.len()) {
        return Err(ServeError::invalid(
            format!("raw_input_contents[{input}]"),
            format!("has {} bytes; {datatype} shape {shape:?} needs {elements} × {width}", raw.len()),
        ));
    }
    let values = match datatype {
        "FP32" => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        "FP64" => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("chunks of 8; this is a bug")) as f32)
            .collect(),
        "INT64" => raw
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("chunks of 8; this is a bug")) as f32)
            .collect(),
        "INT32" => raw.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32).collect(),
        "FP16" => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
    };
    Ok(values)
}

/// BYTES elements as a raw tensor: each a 4-byte little-endian length, then its bytes.
pub fn length_prefixed(elements: &[Vec<u8>]) -> Bytes {
    let mut bytes = Vec::with_capacity(elements.iter().map(|e| e.len() + 4).sum());
    for element in elements {
        bytes.extend_from_slice(&(element.len() as u32).to_le_bytes());
        bytes.extend_from_slice(element);
    }
    Bytes::from(bytes)
}

/// Values as the raw little-endian bytes of a tensor's contents.
pub fn little_endian<T: Copy, const N: usize>(values: &[T], to_bytes: fn(T) -> [u8; N]) -> Bytes {
    let mut bytes = Vec::with_capacity(values.len() * N);
    for value in values {
        bytes.extend_from_slice(&to_bytes(*value));
    }
    Bytes::from(bytes)
}

/// A raw BYTES tensor's elements: each a 4-byte little-endian length, then its bytes.
pub fn split_length_prefixed(raw: &[u8], i: usize) -> Result<Vec<&[u8]>, ServeError> {
    let mut elements = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let bad = || {
            ServeError::invalid(
                format!("raw_input_contents[{i}]"),
                "is not BYTES elements (each a 4-byte little-endian length, then that many bytes)",
            )
        };
        let (length, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let length = u32::from_le_bytes(*length) as usize;
        if length > tail.len() {
            return Err(bad());
        }
        let (element, tail) = tail.split_at(length);
        elements.push(element);
        rest = tail;
    }
    Ok(elements)
}
