//! The dense layers of a network graph: Gemm, MatMul (with the Add of its
//! bias folded in) and a LinearClassifier's scores as linear layers, and
//! arithmetic by constants after them as a standardisation.

use super::constants::{Constant, per_feature};
use super::{Walk, attribute, refusal};
use crate::model::manifest::LayerSpec;
use onnx_schema::NodeProto;

impl Walk<'_> {
    /// `Y = alpha · A · op(B) + beta · C` as a linear layer.
    pub(super) fn gemm(&mut self, node: &NodeProto, value: &str, out: String) -> Result<String, String> {
        let int = |name| attribute(node, name).map_or(0, |a| a.i);
        let float = |name| attribute(node, name).map_or(1.0, |a| f64::from(a.f));
        if node.input.first().map(String::as_str) != Some(value) || int("transA") != 0 {
            return Err(refusal(node, "a Gemm whose first input is not the rows (or is transposed)"));
        }
        let b = self.param(node, 1).ok_or_else(|| refusal(node, "a Gemm whose B is not a constant"))?;
        let weight = if int("transB") != 0 { b } else { b.transposed(node)? };
        let bias = self.param(node, 2);
        self.linear(node, weight, bias, float("alpha"), float("beta"))?;
        Ok(out)
    }

    /// `MatMul(x, W)`, with the `Add` of a constant bias after it folded in.
    pub(super) fn matmul(&mut self, node: &NodeProto, value: &str, out: String) -> Result<String, String> {
        if node.input.first().map(String::as_str) != Some(value) {
            return Err(refusal(node, "a MatMul whose first input is not the rows"));
        }
        let b = self.param(node, 1).ok_or_else(|| refusal(node, "a MatMul whose second input is not a constant"))?;
        let weight = b.transposed(node)?;
        let outputs = weight.dims[0];
        let add = self.sole(&out).filter(|n| n.op_type == "Add").and_then(|n| {
            let bias = self.operand(n, &out)?;
            (bias.values.len() == outputs).then(|| (n.output[0].clone(), bias.clone()))
        });
        match add {
            Some((end, bias)) => {
                self.linear(node, weight, Some(bias), 1.0, 1.0)?;
                Ok(end)
            }
            None => {
                self.linear(node, weight, None, 1.0, 1.0)?;
                Ok(out)
            }
        }
    }

    /// A linear layer from `weight` `[out, in]` and an optional bias.
    pub(super) fn linear(
        &mut self,
        node: &NodeProto,
        weight: Constant,
        bias: Option<Constant>,
        alpha: f64,
        beta: f64,
    ) -> Result<(), String> {
        let [outputs, width] = weight.dims[..] else {
            return Err(refusal(node, "a weight that is not a matrix"));
        };
        if width != self.width {
            return Err(refusal(node, &format!("a weight for {width} inputs where rows carry {}", self.width)));
        }
        let mut tensors = vec![("weight", weight.values.iter().map(|w| w * alpha).collect(), vec![outputs, width])];
        if let Some(bias) = &bias {
            let values = per_feature(bias.values.clone(), outputs, 0.0, node)?;
            tensors.push(("bias", values.into_iter().map(|b| b * beta).collect(), vec![outputs]));
        }
        self.width = outputs;
        self.push(LayerSpec::Linear { bias: bias.is_some() }, tensors)
    }

    /// `x + c`, `x − c`, `x · c`, `x / c` with a constant `c` (per feature or
    /// one for all) as a standardisation.
    pub(super) fn arithmetic(&mut self, node: &NodeProto, value: &str) -> Result<(), String> {
        let width = self.width;
        let first = node.input.first().map(String::as_str) == Some(value);
        let c = self
            .operand(node, value)
            .cloned()
            .ok_or_else(|| refusal(node, "arithmetic between two computed values"))?;
        let c = per_feature(c.values, width, 0.0, node)?;
        let (offset, scale) = match (node.op_type.as_str(), first) {
            ("Add", _) => (c.iter().map(|v| -v).collect(), vec![1.0; width]),
            ("Sub", true) => (c, vec![1.0; width]),
            ("Mul", _) => (vec![0.0; width], c),
            ("Div", true) => (vec![0.0; width], c.iter().map(|v| 1.0 / v).collect()),
            _ => return Err(refusal(node, "a constant minus or divided by the rows")),
        };
        self.standardize(node, offset, scale)
    }

    /// `(x − offset) · scale` as a `standardize` layer (mean, std = 1 / scale).
    pub(super) fn standardize(&mut self, node: &NodeProto, offset: Vec<f64>, scale: Vec<f64>) -> Result<(), String> {
        if let Some(bad) = scale.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
            return Err(refusal(
                node,
                &format!("a scaling by {bad}; only positive finite scales compile to standardisation"),
            ));
        }
        let width = self.width;
        let std = scale.iter().map(|s| 1.0 / s).collect();
        self.push(LayerSpec::Standardize, vec![("mean", offset, vec![width]), ("std", std, vec![width])])
    }
}
