//! The two per-column ops of a forward pass, done on the CPU in one loop over
//! the rows: a linear layer's bias (`y[r][j] += bias[j]`) and the prelude's
//! affine (`x[r][j] * scale[j] + shift[j]`). candle composes them from
//! broadcast ops that walk a strided iterator per row and, for the affine,
//! allocate twice; at batch 64 that was a third of a pass's time (perf).
//! The arithmetic is the same, operation for operation, in the same dtype
//! (a product rounded, then a sum rounded; no fused multiply-add), so the
//! answers are bit for bit those of the broadcast ops, which other devices
//! and layouts keep using.

use candle_core::{CpuStorage, CustomOp3, InplaceOp2, Layout, Shape, Tensor, bail};
use half::{bf16, f16};

/// `y + bias` per row, written into `y`'s own memory on the CPU. `y` must be
/// a tensor this pass created (a matmul's output), so nothing else sees it
/// change.
pub fn add_bias(y: Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    if y.device().is_cpu() && y.rank() == 2 && y.is_contiguous() && bias.is_contiguous() && y.dtype() == bias.dtype() {
        y.inplace_op2(bias, &AddBias)?;
        Ok(y)
    } else {
        y.broadcast_add(bias)
    }
}

/// `x * scale + shift` per row (a new tensor).
pub fn scale_shift(x: &Tensor, scale: &Tensor, shift: &Tensor) -> candle_core::Result<Tensor> {
    let same = x.dtype() == scale.dtype() && x.dtype() == shift.dtype();
    if x.device().is_cpu() && x.rank() == 2 && same {
        x.apply_op3_no_bwd(scale, shift, &ScaleShift)
    } else {
        x.broadcast_mul(scale)?.broadcast_add(shift)
    }
}

struct AddBias;

impl InplaceOp2 for AddBias {
    fn name(&self) -> &'static str {
        "add-bias"
    }

    fn cpu_fwd(&self, y: &mut CpuStorage, y_l: &Layout, bias: &CpuStorage, bias_l: &Layout) -> candle_core::Result<()> {
        fn add<T: Copy + std::ops::Add<Output = T>>(y: &mut [T], bias: &[T]) {
            for row in y.chunks_exact_mut(bias.len()) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v = *v + *b;
                }
            }
        }
        let (Some((y0, y1)), Some((b0, b1))) = (y_l.contiguous_offsets(), bias_l.contiguous_offsets()) else {
            bail!("add-bias needs contiguous tensors")
        };
        if y_l.dims().last() != Some(&(b1 - b0)) {
            bail!("add-bias: a bias of {} for rows of {:?}", b1 - b0, y_l.dims())
        }
        match (y, bias) {
            (CpuStorage::F32(y), CpuStorage::F32(b)) => add(&mut y[y0..y1], &b[b0..b1]),
            (CpuStorage::F64(y), CpuStorage::F64(b)) => add(&mut y[y0..y1], &b[b0..b1]),
            (CpuStorage::F16(y), CpuStorage::F16(b)) => add::<f16>(&mut y[y0..y1], &b[b0..b1]),
            (CpuStorage::BF16(y), CpuStorage::BF16(b)) => add::<bf16>(&mut y[y0..y1], &b[b0..b1]),
            _ => bail!("add-bias: no CPU kernel for this dtype (or the two differ)"),
        }
        Ok(())
    }
}

struct ScaleShift;

impl CustomOp3 for ScaleShift {
    fn name(&self) -> &'static str {
        "scale-shift"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        scale: &CpuStorage,
        scale_l: &Layout,
        shift: &CpuStorage,
        shift_l: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn affine<T: Copy + std::ops::Mul<Output = T> + std::ops::Add<Output = T>>(
            x: &[T],
            scale: &[T],
            shift: &[T],
        ) -> Vec<T> {
            let mut out = Vec::with_capacity(x.len());
            for row in x.chunks_exact(scale.len()) {
                out.extend(row.iter().zip(scale).zip(shift).map(|((v, s), h)| *v * *s + *h));
            }
            out
        }
        let offsets = (x_l.contiguous_offsets(), scale_l.contiguous_offsets(), shift_l.contiguous_offsets());
        let (Some((x0, x1)), Some((s0, s1)), Some((h0, h1))) = offsets else {
            bail!("scale-shift needs contiguous tensors")
        };
        if x_l.dims().last() != Some(&(s1 - s0)) || s1 - s0 != h1 - h0 {
            bail!("scale-shift: {} scales and {} shifts for rows of {:?}", s1 - s0, h1 - h0, x_l.dims())
        }
        let out = match (x, scale, shift) {
            (CpuStorage::F32(x), CpuStorage::F32(s), CpuStorage::F32(h)) => {
                CpuStorage::F32(affine(&x[x0..x1], &s[s0..s1], &h[h0..h1]))
            }
            (CpuStorage::F64(x), CpuStorage::F64(s), CpuStorage::F64(h)) => {
                CpuStorage::F64(affine(&x[x0..x1], &s[s0..s1], &h[h0..h1]))
            }
            _ => bail!("scale-shift: no CPU kernel for this dtype (or the three differ)"),
        };
        Ok((out, x_l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Values spread over many magnitudes, so that rounding differences would show.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32).map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 20001) as f32 / 37.0 - 270.0).collect()
    }

    fn bits(t: &Tensor) -> Vec<u64> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    #[test]
    fn the_bias_is_added_exactly_as_broadcast_add_does_in_every_dtype() {
        let cpu = Device::Cpu;
        for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
            let y = Tensor::from_vec(values(7 * 5, 1), (7, 5), &cpu).unwrap().to_dtype(dtype).unwrap();
            let bias = Tensor::from_vec(values(5, 2), 5, &cpu).unwrap().to_dtype(dtype).unwrap();
            let expected = y.broadcast_add(&bias).unwrap();
            let added = add_bias(y.copy().unwrap(), &bias).unwrap();
            assert_eq!(bits(&added), bits(&expected), "{dtype:?}");
        }
    }

    #[test]
    fn scale_and_shift_are_exactly_the_broadcast_ops() {
        let cpu = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let x = Tensor::from_vec(values(9 * 4, 3), (9, 4), &cpu).unwrap().to_dtype(dtype).unwrap();
            let scale =
                Tensor::from_vec(vec![0.37f32, 1e-3, 12.5, 1.0 / 3.0], 4, &cpu).unwrap().to_dtype(dtype).unwrap();
            let shift = Tensor::from_vec(values(4, 4), 4, &cpu).unwrap().to_dtype(dtype).unwrap();
            let expected = x.broadcast_mul(&scale).unwrap().broadcast_add(&shift).unwrap();
            assert_eq!(bits(&scale_shift(&x, &scale, &shift).unwrap()), bits(&expected), "{dtype:?}");
        }
    }

    #[test]
    fn a_row_of_the_wrong_width_is_an_error_not_a_wrong_answer() {
        let cpu = Device::Cpu;
        let y = Tensor::zeros((2, 3), DType::F32, &cpu).unwrap();
        let bias = Tensor::zeros(4, DType::F32, &cpu).unwrap();
        assert!(add_bias(y, &bias).is_err());
    }
}
