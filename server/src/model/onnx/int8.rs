//! The layer `onnxruntime.quantization.quantize_dynamic` writes for each
//! MatMul (a Gemm is first rewritten as MatMul + Add):
//! `DynamicQuantizeLinear(x) → MatMulInteger(x_q, W, x_zero, W_zero) →
//! Cast(float) → Mul(x_scale · W_scale) → Add(bias)`, recognised as a whole
//! and lowered to one INT8 linear layer (`network::int8` computes it with
//! onnxruntime's arithmetic, each row quantized on its own).

use super::constants::{Constant, per_feature};
use super::{Walk, attribute, refusal};
use crate::model::manifest::LayerSpec;
use onnx_schema::NodeProto;

impl Walk<'_> {
    /// Lowers the quantized layer starting at `node` (a DynamicQuantizeLinear
    /// of the rows' `value`); returns the value its output continues as.
    pub(super) fn dynamic_int8(&mut self, node: &NodeProto, value: &str) -> Result<String, String> {
        let not_the_pattern = || {
            refusal(
                node,
                "a DynamicQuantizeLinear outside quantize_dynamic's pattern (MatMulInteger of its outputs by \
                 constant INT8/UINT8 weights, Cast to float, Mul by the product of the scales, Add of a bias)",
            )
        };
        let [x_q, x_scale, x_zero] = &node.output[..] else { return Err(not_the_pattern()) };
        let matmul = self.sole(x_q).filter(|n| n.op_type == "MatMulInteger").ok_or_else(not_the_pattern)?;
        if node.input.first().map(String::as_str) != Some(value)
            || matmul.input.first() != Some(x_q)
            || matmul.input.get(2).is_some_and(|z| z != x_zero)
        {
            return Err(not_the_pattern());
        }
        let weight = self.param(matmul, 1).ok_or_else(not_the_pattern)?;
        let [inputs, outputs] = weight.dims[..] else { return Err(not_the_pattern()) };
        if inputs != self.width {
            return Err(refusal(matmul, &format!("a weight for {inputs} inputs where rows carry {}", self.width)));
        }
        let zero_points =
            per_feature(self.param(matmul, 3).map(|c| c.values).unwrap_or_default(), outputs, 0.0, matmul)?;
        let scales_mul = self.sole(x_scale).filter(|n| n.op_type == "Mul").ok_or_else(not_the_pattern)?;
        let scales = self.operand(scales_mul, x_scale).cloned().ok_or_else(not_the_pattern)?;
        let scales = per_feature(scales.values, outputs, 1.0, scales_mul)?;
        let cast = self.sole(&matmul.output[0]).filter(|n| n.op_type == "Cast").ok_or_else(not_the_pattern)?;
        if attribute(cast, "to").map(|a| a.i) != Some(1) {
            return Err(not_the_pattern());
        }
        let rescale = self.sole(&cast.output[0]).filter(|n| n.op_type == "Mul").ok_or_else(not_the_pattern)?;
        if !rescale.input.contains(&scales_mul.output[0]) {
            return Err(not_the_pattern());
        }
        let add = self.sole(&rescale.output[0]).filter(|n| n.op_type == "Add");
        let bias = add.and_then(|n| self.operand(n, &rescale.output[0]).cloned());
        let (end, bias) = match (add, bias) {
            (Some(add), Some(bias)) => (add.output[0].clone(), per_feature(bias.values, outputs, 0.0, add)?),
            _ => (rescale.output[0].clone(), vec![0.0; outputs]),
        };
        let transposed = Constant { dims: vec![inputs, outputs], values: weight.values }.transposed(matmul)?;
        self.width = outputs;
        self.push(
            LayerSpec::DynamicInt8Linear,
            vec![
                ("weight", transposed.values, vec![outputs, inputs]),
                ("weight_zero_point", zero_points, vec![outputs]),
                ("weight_scale", scales, vec![outputs]),
                ("bias", bias, vec![outputs]),
            ],
        )?;
        Ok(end)
    }
}
