//! A network's compiled operations: what each does to a batch, which can
//! overflow, and how each is checked against and moved to the model's dtype
//! and device at load.

use super::super::columns;
use super::ModelError;
use super::int8::DynamicInt8;
use candle_core::{DType, Device, Tensor};

/// One compiled layer.
pub(super) enum Op {
    /// `x * scale + shift` per feature: standardisation and inference batch norm
    /// both fold into this at load, so the request path does one fused op.
    Affine {
        scale: Tensor,
        shift: Tensor,
    },
    Linear(candle_nn::Linear),
    /// A linear layer on INT8 weights, its input quantized per row.
    Int8(DynamicInt8),
    LayerNorm {
        weight: Tensor,
        bias: Tensor,
        eps: f32,
    },
    Relu,
    Gelu,
    GeluTanh,
    Tanh,
    Sigmoid,
    Softmax,
}

impl Op {
    /// Whether the op can turn finite values into non-finite ones (a large
    /// product or sum); activations cannot.
    pub(super) fn may_overflow(&self) -> bool {
        matches!(self, Op::Affine { .. } | Op::Linear(_) | Op::Int8(_) | Op::LayerNorm { .. })
    }

    pub(super) fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Op::Affine { scale, shift } => columns::scale_shift(x, scale, shift),
            // Rows × features only (what `run` builds): the product, then the
            // bias added into it in place.
            Op::Linear(linear) => {
                let y = x.matmul(&linear.weight().t()?)?;
                match linear.bias() {
                    Some(bias) => columns::add_bias(y, bias),
                    None => Ok(y),
                }
            }
            Op::Int8(layer) => layer.apply(x),
            // candle's fused kernel covers f32/f16/bf16; f64 takes the composed form.
            Op::LayerNorm { weight, bias, eps } if x.dtype() == DType::F64 => {
                candle_nn::ops::layer_norm_slow(x, weight, bias, *eps)
            }
            Op::LayerNorm { weight, bias, eps } => candle_nn::ops::layer_norm(x, weight, bias, *eps),
            Op::Relu => x.relu(),
            Op::Gelu => x.gelu_erf(),
            Op::GeluTanh => x.gelu(),
            Op::Tanh => x.tanh(),
            Op::Sigmoid => candle_nn::ops::sigmoid(x),
            Op::Softmax => candle_nn::ops::softmax_last_dim(x),
        }
    }

    /// Checks that the op's tensors (f32 here) survive conversion to `dtype`:
    /// f16 tops out at ±65504, and a weight beyond it would silently become
    /// infinite (bf16 has f32's range). `layer` and `kind` name the op's layer.
    pub(super) fn fit(self, dtype: DType, layer: usize, kind: &'static str) -> Result<Op, ModelError> {
        if dtype != DType::F16 {
            return Ok(self);
        }
        let tensors: Vec<&Tensor> = match &self {
            Op::Affine { scale, shift } => vec![scale, shift],
            Op::Linear(linear) => std::iter::once(linear.weight()).chain(linear.bias()).collect(),
            Op::LayerNorm { weight, bias, .. } => vec![weight, bias],
            _ => Vec::new(),
        };
        for tensor in tensors {
            let largest = tensor.abs()?.max_all()?.to_scalar::<f32>()?;
            if largest > f32::from(half::f16::MAX) {
                return Err(ModelError::F16Range { layer, kind, largest });
            }
        }
        Ok(self)
    }

    /// The same op with its tensors on `device` in `dtype`.
    pub(super) fn to(self, device: &Device, dtype: DType) -> candle_core::Result<Op> {
        let place = |t: &Tensor| t.to_dtype(dtype)?.to_device(device);
        Ok(match self {
            Op::Affine { scale, shift } => Op::Affine { scale: place(&scale)?, shift: place(&shift)? },
            Op::Linear(linear) => {
                Op::Linear(candle_nn::Linear::new(place(linear.weight())?, linear.bias().map(place).transpose()?))
            }
            Op::LayerNorm { weight, bias, eps } => Op::LayerNorm { weight: place(&weight)?, bias: place(&bias)?, eps },
            other => other,
        })
    }
}

/// The dtype a network's prelude and head compute in: f32 for a model in
/// f16/bf16, else the model's own.
pub(super) fn wide_dtype(dtype: DType) -> DType {
    if matches!(dtype, DType::F16 | DType::BF16) { DType::F32 } else { dtype }
}
