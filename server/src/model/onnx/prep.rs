//! The per-column ops a pipeline applies before its model (imputing,
//! standard and min-max scaling, constant arithmetic, clipping) taken out of
//! the graph as `pipeline::Step`s while no layer has been compiled yet, so
//! they run in f32 exactly as onnxruntime runs them, also ahead of trees.

use super::constants::per_feature;
use super::{Walk, attribute, refusal};
use crate::model::pipeline::{Arithmetic, Step};
use onnx_schema::NodeProto;

impl Walk<'_> {
    /// Takes `node`, which reads the rows' `value`, as a leading step if it
    /// is one; false when it is something else.
    pub(super) fn leading_step(&mut self, node: &NodeProto, value: &str) -> Result<bool, String> {
        let step = match (node.domain.as_str(), node.op_type.as_str()) {
            ("ai.onnx.ml", "Scaler") => Step::Scale {
                offset: self.per_feature(floats(node, "offset"), 0.0, node)?,
                scale: self.per_feature(floats(node, "scale"), 1.0, node)?,
            },
            ("ai.onnx.ml", "Imputer") => self.imputer(node)?,
            ("" | "ai.onnx", "Add" | "Sub" | "Mul" | "Div") => {
                let Some(constant) = self.operand(node, value).cloned() else { return Ok(false) };
                let op = match node.op_type.as_str() {
                    "Add" => Arithmetic::Add,
                    "Sub" => Arithmetic::Sub,
                    "Mul" => Arithmetic::Mul,
                    _ => Arithmetic::Div,
                };
                let constant_first = node.input.first().map(String::as_str) != Some(value);
                Step::Arithmetic { op, constant: self.per_feature(constant.values, 0.0, node)?, constant_first }
            }
            ("" | "ai.onnx", "Clip") => self.clip(node)?,
            _ => return Ok(false),
        };
        self.steps.push(step);
        Ok(true)
    }

    /// `values` as f32s, one per feature of the rows.
    fn per_feature(&self, values: Vec<f64>, default: f64, node: &NodeProto) -> Result<Vec<f32>, String> {
        Ok(per_feature(values, self.width, default, node)?.into_iter().map(|v| v as f32).collect())
    }

    /// A numeric Imputer: `replaced_value_float` (NaN: missing) becomes the
    /// column's `imputed_value_floats` entry.
    fn imputer(&self, node: &NodeProto) -> Result<Step, String> {
        if attribute(node, "imputed_value_int64s").is_some_and(|a| !a.ints.is_empty()) {
            return Err(refusal(node, "an Imputer of integers; Candela's rows are floats"));
        }
        let values = self.per_feature(floats(node, "imputed_value_floats"), f64::NAN, node)?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(refusal(node, "an Imputer without a finite value for every column"));
        }
        let replaced = attribute(node, "replaced_value_float").map_or(0.0, |a| a.f);
        Ok(Step::Impute { replaced, values })
    }

    /// A Clip by constants: its `min`/`max` inputs (opset 11+) or attributes.
    fn clip(&self, node: &NodeProto) -> Result<Step, String> {
        let bound = |index: usize, name: &str, default: f32| -> Result<f32, String> {
            match node.input.get(index).filter(|n| !n.is_empty()) {
                Some(input) => self
                    .constants
                    .get(input)
                    .and_then(|c| c.scalar())
                    .map(|v| v as f32)
                    .ok_or_else(|| refusal(node, "a Clip whose bounds are not constants")),
                None => Ok(attribute(node, name).map_or(default, |a| a.f)),
            }
        };
        let (low, high) = (bound(1, "min", f32::NEG_INFINITY)?, bound(2, "max", f32::INFINITY)?);
        if low.is_nan() || high.is_nan() || low > high {
            return Err(refusal(node, &format!("a Clip to [{low}, {high}]")));
        }
        Ok(Step::Clip { low, high })
    }
}

/// `node`'s float-list attribute `name` as f64s (empty when absent).
pub(super) fn floats(node: &NodeProto, name: &str) -> Vec<f64> {
    attribute(node, name).map(|a| a.floats.iter().map(|v| f64::from(*v)).collect()).unwrap_or_default()
}
