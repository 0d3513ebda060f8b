//! The network a model version runs: its layers compiled into candle operations
//! on one device (`build`, one function per layer kind; `op`, the compiled
//! operations), and the forward pass from packed feature rows to class
//! probabilities, watching for arithmetic that overflows (`overflow`).
//! Building a `Network` checks every tensor against the layer list, so a
//! model that builds is a model that can answer; the checks' failures are
//! `ModelError`s that name the tensor and what was expected.

mod build;
mod int8;
mod op;
mod overflow;

use super::scorer::{ComputeError, Pass, Scorer, Stages};
use candle_core::{DType, Device, Tensor};
use op::{Op, wide_dtype};
use overflow::Overflow;
use std::time::Instant;

/// Why a layer list and a set of tensors do not make a network.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("tensor `{name}` is missing: layer {layer} ({kind}) needs it; {hint}")]
    MissingTensor { name: String, layer: usize, kind: &'static str, hint: String },
    #[error("tensor `{name}` has shape {found:?}; expected {expected}")]
    BadShape { name: String, found: Vec<usize>, expected: String },
    #[error("tensor `{name}` {problem}")]
    BadValues { name: String, problem: String },
    #[error("tensor `{name}` is not used by any layer: is a layer missing from model.json's `layers`?")]
    UnusedTensor { name: String },
    #[error("{0}")]
    BadHead(String),
    #[error(
        "layer {layer} ({kind}) holds a value of magnitude {largest}, beyond f16's largest (65504): this model cannot compute in f16; use dtype `bf16` (f32's range) or `f32`"
    )]
    F16Range { layer: usize, kind: &'static str, largest: f32 },
    #[error("model.json lists no features")]
    NoFeatures,
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("the ONNX graph cannot be served: {0}")]
    Graph(String),
    #[error("the tree model cannot be served: {0}")]
    Trees(String),
    #[error("the warm-up pass failed: {0}")]
    Compute(String),
}

/// How the last layer's output becomes one probability per class, or a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// A regressor: the last layer's one output is the value.
    Value,
    /// The last layer is a softmax over all classes.
    Softmax,
    /// The last layer is a sigmoid of one logit: P(labels[1]); labels[0] gets the rest.
    BinarySigmoid,
}

/// A model's network, resident on its device in its dtype.
pub struct Network {
    /// The leading per-feature affine ops (standardisation, a first batch
    /// norm), computed at least in f32 so raw feature magnitudes
    /// never meet f16's narrow range.
    prelude: Vec<Op>,
    /// The rest, in the model's dtype.
    ops: Vec<Op>,
    /// One line per layer as a caller would read it, e.g. `linear(30→32)`.
    description: Vec<String>,
    device: Device,
    dtype: DType,
    inputs: usize,
    outputs: usize,
    head: Head,
}

impl Network {
    /// The forward pass in the model's dtype; probabilities come back as f32.
    fn run(&self, values: &[f32]) -> candle_core::Result<Pass> {
        let start = Instant::now();
        let rows = values.len() / self.inputs;
        // One host-to-device copy of the whole (batched) input.
        let x = Tensor::from_slice(values, (rows, self.inputs), &self.device)?.to_dtype(wide_dtype(self.dtype))?;
        let built = Instant::now();
        let mut overflow = Overflow::new(rows);
        let x = self.prelude(x, &mut overflow)?;
        let p = self.layers(x, &mut overflow)?;
        let computed = Instant::now();
        let probabilities = p.flatten_all()?.to_vec1::<f32>()?;
        let stages = Stages { input: built - start, infer: computed - built, output: computed.elapsed() };
        Ok(Pass { probabilities, stages, overflowed: overflow.rows() })
    }

    /// The features of one overflowing row (`inputs()` values) to blame: those
    /// that are already non-finite when they reach the first layer in the
    /// model's dtype, else the fewest of the largest (after the prelude) whose
    /// reset to the training mean (0 after standardisation) lets the row
    /// through. Empty when no such set exists. Runs only on the error path:
    /// one pass of `inputs()` rows.
    fn blamed(&self, row: &[f32]) -> candle_core::Result<Vec<usize>> {
        let x = Tensor::from_slice(row, (1, self.inputs), &self.device)?.to_dtype(wide_dtype(self.dtype))?;
        let z = self.prelude(x, &mut Overflow::new(1))?;
        let z = z.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let infinite: Vec<usize> = (0..z.len()).filter(|&j| !z[j].is_finite()).collect();
        if !infinite.is_empty() {
            return Ok(infinite);
        }
        let mut largest: Vec<usize> = (0..z.len()).collect();
        largest.sort_by(|&a, &b| z[b].abs().total_cmp(&z[a].abs()));
        // Row k resets the k + 1 largest features.
        let mut reset = Vec::with_capacity(z.len() * z.len());
        let mut trial = z.clone();
        for &j in &largest {
            trial[j] = 0.0;
            reset.extend_from_slice(&trial);
        }
        let trials = Tensor::from_vec(reset, (z.len(), z.len()), &self.device)?.to_dtype(self.dtype)?;
        let mut overflow = Overflow::new(z.len());
        self.layers(trials, &mut overflow)?;
        let overflowed = overflow.rows();
        let Some(k) = (0..z.len()).find(|k| overflowed.binary_search(k).is_err()) else {
            return Ok(Vec::new());
        };
        let mut blamed = largest[..=k].to_vec();
        blamed.sort_unstable();
        Ok(blamed)
    }

    /// The leading per-feature ops, then the conversion to the model's dtype:
    /// where a feature far outside the training scale first overflows.
    fn prelude(&self, mut x: Tensor, overflow: &mut Overflow) -> candle_core::Result<Tensor> {
        for op in &self.prelude {
            x = op.apply(&x)?;
        }
        if !self.prelude.is_empty() || wide_dtype(self.dtype) != self.dtype {
            x = x.to_dtype(self.dtype)?;
            overflow.check(&x)?;
        }
        Ok(x)
    }

    /// The layers after the prelude and the head, checking for non-finite
    /// values after every op that can create them from finite ones (affine,
    /// linear, layer norm, the last op): an activation could hide them (ReLU
    /// turns NaN into 0, tanh turns ±inf into ±1) and answer a wrong score.
    fn layers(&self, mut x: Tensor, overflow: &mut Overflow) -> candle_core::Result<Tensor> {
        for (position, op) in self.ops.iter().enumerate() {
            let last = position + 1 == self.ops.len();
            if last {
                // The head (softmax or sigmoid) computes in f32 for f16/bf16
                // models, so their probabilities sum to 1 within f32's precision.
                x = x.to_dtype(wide_dtype(self.dtype))?;
            }
            x = op.apply(&x)?;
            if op.may_overflow() || last {
                overflow.check(&x)?;
            }
        }
        let p = x.to_dtype(DType::F32)?;
        match self.head {
            Head::Softmax | Head::Value => Ok(p),
            Head::BinarySigmoid => Tensor::cat(&[p.affine(-1.0, 1.0)?, p], 1),
        }
    }
}

impl Scorer for Network {
    fn inputs(&self) -> usize {
        self.inputs
    }

    fn outputs(&self) -> usize {
        self.outputs
    }

    fn description(&self) -> &[String] {
        &self.description
    }

    fn dtype(&self) -> &'static str {
        self.dtype.as_str()
    }

    fn on_cpu(&self) -> bool {
        false
    }

    fn accepts_missing(&self) -> bool {
        false
    }

    fn forward(&self, values: &[f32]) -> Result<Pass, ComputeError> {
        Ok(self.run(values)?)
    }

    fn blame(&self, row: &[f32]) -> Vec<usize> {
        self.blamed(row).unwrap_or_default()
    }
}
