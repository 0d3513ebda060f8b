//! A model behind per-column preprocessing, as scikit-learn pipelines export
//! it to ONNX: imputing missing values (`Imputer`), standard scaling
//! (`Scaler`), min-max scaling (`Mul`, `Add`, `Clip`) and plain constant
//! arithmetic ahead of the model op. The steps run on the CPU over the
//! request's rows in f32, operation for operation as onnxruntime computes
//! them (`(x − offset) · scale`, not a division), so a tree's split sees
//! exactly the value it would see there; then the model scores the result.

use super::scorer::{ComputeError, Pass, Scorer};
use std::time::Instant;

/// One per-column step; every vector holds one value per feature.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A missing value (NaN, or `replaced` when it is a number) becomes the
    /// column's `values` entry.
    Impute { replaced: f32, values: Vec<f32> },
    /// `(x − offset) · scale` (ONNX-ML `Scaler`).
    Scale { offset: Vec<f32>, scale: Vec<f32> },
    /// `x ∘ c`, or `c ∘ x` when `constant_first`.
    Arithmetic { op: Arithmetic, constant: Vec<f32>, constant_first: bool },
    /// `min(max(x, low), high)`; a NaN stays NaN.
    Clip { low: f32, high: f32 },
}

/// The four elementwise operations of ONNX.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arithmetic {
    Add,
    Sub,
    Mul,
    Div,
}

impl Step {
    /// The step as GetModel lists it.
    fn describe(&self, width: usize) -> String {
        match self {
            Step::Impute { replaced, .. } if replaced.is_nan() => format!("impute({width}, missing)"),
            Step::Impute { replaced, .. } => format!("impute({width}, {replaced})"),
            Step::Scale { .. } => format!("scale({width})"),
            Step::Arithmetic { op, .. } => format!("{}({width})", format!("{op:?}").to_lowercase()),
            Step::Clip { low, high } => format!("clip({low}, {high})"),
        }
    }

    /// Applies the step to one row.
    fn apply(&self, row: &mut [f32]) {
        match self {
            Step::Impute { replaced, values } => {
                for (x, v) in row.iter_mut().zip(values) {
                    let missing = if replaced.is_nan() { x.is_nan() } else { *x == *replaced };
                    if missing {
                        *x = *v;
                    }
                }
            }
            Step::Scale { offset, scale } => {
                for ((x, o), s) in row.iter_mut().zip(offset).zip(scale) {
                    *x = (*x - o) * s;
                }
            }
            Step::Arithmetic { op, constant, constant_first } => {
                for (x, c) in row.iter_mut().zip(constant) {
                    let (a, b) = if *constant_first { (*c, *x) } else { (*x, *c) };
                    *x = match op {
                        Arithmetic::Add => a + b,
                        Arithmetic::Sub => a - b,
                        Arithmetic::Mul => a * b,
                        Arithmetic::Div => a / b,
                    };
                }
            }
            Step::Clip { low, high } => {
                for x in row.iter_mut() {
                    let raised = if *x < *low { *low } else { *x };
                    *x = if *high < raised { *high } else { raised };
                }
            }
        }
    }

    /// Whether the step replaces every NaN, so that the model never sees one.
    fn imputes_nan(&self) -> bool {
        matches!(self, Step::Impute { replaced, values } if replaced.is_nan() && values.iter().all(|v| v.is_finite()))
    }
}

/// Preprocessing steps in front of a model.
pub struct Pipeline {
    steps: Vec<Step>,
    model: Box<dyn Scorer>,
    description: Vec<String>,
}

impl Pipeline {
    /// `model` behind `steps` (each step's vectors must hold `model.inputs()` values).
    pub fn new(steps: Vec<Step>, model: Box<dyn Scorer>) -> Pipeline {
        let width = model.inputs();
        let description = steps.iter().map(|s| s.describe(width)).chain(model.description().iter().cloned()).collect();
        Pipeline { steps, model, description }
    }

    /// `values` (rows of the model's width) after every step.
    fn prepared(&self, values: &[f32]) -> Vec<f32> {
        let mut rows = values.to_vec();
        for row in rows.chunks_exact_mut(self.model.inputs()) {
            for step in &self.steps {
                step.apply(row);
            }
        }
        rows
    }
}

impl Scorer for Pipeline {
    fn inputs(&self) -> usize {
        self.model.inputs()
    }

    fn classes(&self) -> usize {
        self.model.classes()
    }

    fn description(&self) -> &[String] {
        &self.description
    }

    fn dtype(&self) -> &'static str {
        self.model.dtype()
    }

    fn accepts_missing(&self) -> bool {
        self.model.accepts_missing() || self.steps.first().is_some_and(Step::imputes_nan)
    }

    fn on_cpu(&self) -> bool {
        self.model.on_cpu()
    }

    fn forward(&self, values: &[f32]) -> Result<Pass, ComputeError> {
        let start = Instant::now();
        let rows = self.prepared(values);
        let prepared = start.elapsed();
        let mut pass = self.model.forward(&rows)?;
        pass.stages.input += prepared;
        Ok(pass)
    }

    fn blame(&self, row: &[f32]) -> Vec<usize> {
        self.model.blame(&self.prepared(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_compute_as_onnxruntime_does() {
        let mut row = [f32::NAN, 3.0, -7.0];
        Step::Impute { replaced: f32::NAN, values: vec![1.5, 0.0, 0.0] }.apply(&mut row);
        assert_eq!(row, [1.5, 3.0, -7.0]);
        Step::Scale { offset: vec![0.5, 1.0, 0.0], scale: vec![2.0, 0.1, 1.0] }.apply(&mut row);
        // (3 − 1) · 0.1 in f32, not (3 − 1) / 10.
        assert_eq!(row, [2.0, 2.0f32 * 0.1f32, -7.0]);
        Step::Arithmetic { op: Arithmetic::Sub, constant: vec![10.0; 3], constant_first: true }.apply(&mut row);
        assert_eq!(row[0], 8.0);
        Step::Clip { low: -1.0, high: 5.0 }.apply(&mut row);
        assert_eq!(row, [5.0, 5.0, 5.0]);
        let mut missing = [f32::NAN];
        Step::Clip { low: 0.0, high: 1.0 }.apply(&mut missing);
        assert!(missing[0].is_nan(), "a missing value stays missing through a clip");
        let mut sentinel = [-1.0, 2.0];
        Step::Impute { replaced: -1.0, values: vec![9.0, 9.0] }.apply(&mut sentinel);
        assert_eq!(sentinel, [9.0, 2.0]);
    }
}
