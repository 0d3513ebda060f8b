//! A linear layer quantized as `onnxruntime.quantization.quantize_dynamic`
//! writes it (`DynamicQuantizeLinear` → `MatMulInteger` → `Cast` → `Mul` by
//! the two scales → `Add` bias), computed with ONNX Runtime's arithmetic:
//! the input quantized to u8 over its range (widened to include 0), `scale
//! = (max − min) / 255` in f32 (1 when the range is empty), zero point
//! `round_half_even(clamp(−min / scale, 0, 255))`, each value divided by the
//! scale (no reciprocal), rounded half to even, offset and clamped; products
//! of the centred integers summed exactly in i32; then
//! `f32(sum) · (x_scale · w_scale) + bias`, the scales multiplied first and
//! no fused multiply-add. onnxruntime takes the scale over the whole input
//! tensor, so its answer for a row depends on the rows sent with it; a
//! batching server must not let one caller's rows change another's answer,
//! so each row is quantized on its own: the answer onnxruntime gives that
//! row sent alone.

use candle_core::{DType, Tensor};

/// The quantized weights of one layer and what the integer sums are scaled by.
#[derive(Debug)]
pub(super) struct DynamicInt8 {
    /// `[out][in]`, each weight minus its column's zero point (within ±255:
    /// i16, so that the products vectorise as 16-bit multiplies summed in i32).
    weights: Vec<i16>,
    /// Per output: the weight scale.
    scales: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
}

impl DynamicInt8 {
    /// The layer from `weights` `[out][in]` (integers as stored, i8 or u8),
    /// per-output `zero_points` and `scales`, and `bias`.
    pub(super) fn new(weights: &[f32], zero_points: &[f32], scales: Vec<f32>, bias: Vec<f32>) -> DynamicInt8 {
        let outputs = scales.len();
        let inputs = weights.len() / outputs.max(1);
        let weights = weights
            .chunks_exact(inputs.max(1))
            .zip(zero_points)
            .flat_map(|(row, zero)| row.iter().map(move |w| (*w - *zero) as i16))
            .collect();
        DynamicInt8 { weights, scales, bias, inputs }
    }

    pub(super) fn outputs(&self) -> usize {
        self.scales.len()
    }

    /// `x` `[rows, in]` → `[rows, out]`, in `x`'s dtype and on its device
    /// (the arithmetic is integer and f32 on the CPU, as onnxruntime's).
    pub(super) fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let rows = values.len() / self.inputs.max(1);
        let outputs = self.outputs();
        let mut out = Vec::with_capacity(rows * outputs);
        let mut quantized = vec![0i16; self.inputs];
        for row in values.chunks_exact(self.inputs) {
            let scale = quantize(row, &mut quantized);
            for ((weights, w_scale), bias) in self.weights.chunks_exact(self.inputs).zip(&self.scales).zip(&self.bias) {
                let sum: i32 = quantized.iter().zip(weights).map(|(q, w)| i32::from(*q) * i32::from(*w)).sum();
                out.push(sum as f32 * (scale * w_scale) + bias);
            }
        }
        Tensor::from_vec(out, (rows, outputs), x.device())?.to_dtype(x.dtype())
    }
}

/// Quantizes `row` as DynamicQuantizeLinear does, into `centred` (each u8
/// value minus the zero point); returns the scale.
fn quantize(row: &[f32], centred: &mut [i16]) -> f32 {
    let (low, high) = row.iter().fold((0.0f32, 0.0f32), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let scale = if high == low { 1.0 } else { (high - low) / 255.0 };
    let zero = (0.0 - low / scale).clamp(0.0, 255.0).round_ties_even();
    let (below, above) = (-zero, 255.0 - zero);
    for (q, v) in centred.iter_mut().zip(row) {
        // Clamped to the u8 range around the zero point, then rounded: the
        // same as rounding, offsetting and clamping, for integer bounds
        // (written as selects, which vectorise; the rows are finite).
        let t = v / scale;
        let t = if t < below { below } else { t };
        let t = if t > above { above } else { t };
        *q = round_half_even(t) as i16;
    }
    scale
}

/// `x` rounded to the nearest integer, ties to even, for |x| < 2²²: adding
/// and taking away 1.5 · 2²³ leaves no fraction bits, and the default
/// rounding mode rounds the sum half to even (no libm call per value).
#[inline(always)]
fn round_half_even(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    (x + SHIFT) - SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn rows_are_quantized_on_their_own_as_onnxruntime_quantizes_one_row() {
        // [−1, 0.5, 2]: range [−1, 2], scale 3/255, zero point round(85) = 85;
        // 0.5/scale = 42.5 → 42 (half to even), so 0.5 quantizes to 127.
        let mut centred = [0; 3];
        let scale = quantize(&[-1.0, 0.5, 2.0], &mut centred);
        assert_eq!(scale, 3.0f32 / 255.0);
        assert_eq!(centred, [-85, 42, 170]);
        assert_eq!((round_half_even(2.5), round_half_even(-3.5), round_half_even(0.49)), (2.0, -4.0, 0.0));
        // An all-zero row: scale 1, every value its zero point.
        assert_eq!(quantize(&[0.0, 0.0, 0.0], &mut centred), 1.0);
        assert_eq!(centred, [0, 0, 0]);
        // One output, weights [1, 2, −1] with zero point 0 and scale 0.5, bias 0.25:
        // (−85 + 84 − 170) · (3/255 · 0.5) + 0.25, for each row alone.
        let layer = DynamicInt8::new(&[1.0, 2.0, -1.0], &[0.0], vec![0.5], vec![0.25]);
        let x = Tensor::from_vec(vec![-1.0f32, 0.5, 2.0, 0.0, 0.0, 0.0], (2, 3), &Device::Cpu).unwrap();
        let y = layer.apply(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y, [[-171.0f32 * (3.0f32 / 255.0 * 0.5) + 0.25], [0.25]]);
    }
}
