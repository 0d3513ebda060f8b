//! Which rows of a forward pass went non-finite: a finite feature far
//! outside the training scale can overflow the model's dtype inside the
//! network, and such a row must be refused, never answered.

use candle_core::{CpuStorage, DType, Storage, Tensor};

/// Tracks which rows of a pass went non-finite. The check is a scan of the
/// output with no allocation while every value is finite (the hot path);
/// only a failed check looks at rows.
pub(super) struct Overflow {
    rows: usize,
    marked: Vec<bool>,
}

impl Overflow {
    pub(super) fn new(rows: usize) -> Overflow {
        Overflow { rows, marked: Vec::new() }
    }

    /// Marks the rows of `x` (one row per pass row) holding a non-finite value.
    pub(super) fn check(&mut self, x: &Tensor) -> candle_core::Result<()> {
        if all_finite(x)? {
            return Ok(());
        }
        let values = x.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        self.marked.resize(self.rows, false);
        for (marked, row) in self.marked.iter_mut().zip(values) {
            *marked |= row.iter().any(|v| !v.is_finite());
        }
        Ok(())
    }

    pub(super) fn rows(&self) -> Vec<usize> {
        self.marked.iter().enumerate().filter(|(_, marked)| **marked).map(|(row, _)| row).collect()
    }
}

/// Whether every value of `x` is finite. On the CPU a branch-free scan of the
/// exponent bits (all ones: infinite or NaN) over the tensor's own memory;
/// elsewhere one reduction: `0 × x` is 0 for a finite value and NaN for any
/// other, so the sum is exactly 0 when all are finite (and cannot overflow).
fn all_finite(x: &Tensor) -> candle_core::Result<bool> {
    /// Whether any value's exponent bits are all set.
    fn any_special<T: Copy, B: Into<u64>>(values: &[T], bits: impl Fn(T) -> B, exponent: u64) -> bool {
        values.iter().fold(false, |any, v| any | (bits(*v).into() & exponent == exponent))
    }
    let (storage, layout) = x.storage_and_layout();
    if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
        let special = match cpu {
            CpuStorage::F32(v) => any_special(&v[start..end], f32::to_bits, 0x7f80_0000),
            CpuStorage::F64(v) => any_special(&v[start..end], f64::to_bits, 0x7ff0_0000_0000_0000),
            CpuStorage::F16(v) => any_special(&v[start..end], half::f16::to_bits, 0x7c00),
            CpuStorage::BF16(v) => any_special(&v[start..end], half::bf16::to_bits, 0x7f80),
            _ => false,
        };
        return Ok(!special);
    }
    drop(storage);
    Ok(x.affine(0.0, 0.0)?.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()? == 0.0)
}
