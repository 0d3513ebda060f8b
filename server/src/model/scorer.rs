//! The one interface the serving core calls on a model version, whatever
//! its format: candle networks (from `model.json` layers or an ONNX graph)
//! and tree ensembles (XGBoost, LightGBM) all answer row-major feature
//! values with row-major class probabilities (a regressor: one value per row). The batcher, validation and
//! statistics see only this trait, so a caller cannot tell which format
//! answered.

use super::categories::Categories;
use std::time::Duration;

/// What a model answers per row: a probability for each of its classes
/// (a classifier), or one value (a regressor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answers {
    Classes(usize),
    Value,
}

impl Answers {
    /// Numbers per row.
    pub fn width(self) -> usize {
        match self {
            Answers::Classes(classes) => classes,
            Answers::Value => 1,
        }
    }
}

/// The index of a row's most probable class (the first, on a tie).
pub fn predicted_class(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, p)| if *p > row[best] { i } else { best })
}

/// The class whose probability is a row's score (drift, the shadow
/// comparison, the statistics `candela model init` writes): the second of
/// two labels (the positive class), the most probable of more; a
/// regressor's value is its score.
pub fn scored_class(row: &[f32]) -> usize {
    if row.len() == 2 { 1 } else { predicted_class(row) }
}

/// A loaded model's forward pass, as the core uses it.
pub trait Scorer: Send + Sync {
    /// Number of input features per row.
    fn inputs(&self) -> usize;
    /// Numbers answered per row: one probability per class, or a
    /// regressor's one value.
    fn outputs(&self) -> usize;
    /// The model's structure as a caller would read it (GetModel's `layers`),
    /// e.g. `["standardize(30)", "linear(30→32)", …]` or `["xgboost: 100 trees, …"]`.
    fn description(&self) -> &[String];
    /// The arithmetic the model computes in, e.g. `f32`.
    fn dtype(&self) -> &'static str;
    /// Whether a NaN feature is legitimate input meaning "missing" (trees
    /// route it by their default directions); networks refuse it.
    fn accepts_missing(&self) -> bool;
    /// Whether the model computes on the CPU whatever device is configured
    /// (trees do), so that GetModel names the device it really runs on.
    fn on_cpu(&self) -> bool;
    /// The categories of feature `feature` when it is a string feature (its
    /// row value is then the category's code); `None` for numbers.
    fn categories(&self, _feature: usize) -> Option<&Categories> {
        None
    }
    /// Whether the model takes an input per feature, by name (a graph
    /// converted from a DataFrame), rather than one matrix of every feature.
    fn inputs_by_name(&self) -> bool {
        false
    }
    /// Each row's exact contributions, when the model computes them itself
    /// (a forest with covers: TreeSHAP in margin space), row-major, for
    /// each of its outputs (a forest: its margins) the features' then the
    /// base; `None`: the server estimates them from forward passes (`shapley`).
    fn contributions(&self, _values: &[f32]) -> Option<Vec<f32>> {
        None
    }
    /// Whether `contributions` answers (so no background is needed).
    fn explains_itself(&self) -> bool {
        false
    }
    /// Scores `values` (row-major, `inputs()` per row) and returns row-major
    /// answers, `outputs()` per row. Rows whose arithmetic overflowed
    /// are listed in the pass, never silently scored.
    fn forward(&self, values: &[f32]) -> Result<Pass, ComputeError>;
    /// The features of one overflowing row to blame; empty when no single
    /// set explains it. Runs only on the error path.
    fn blame(&self, row: &[f32]) -> Vec<usize>;
}

/// Why a forward pass could not run at all (a device failure, say).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ComputeError(pub String);

impl From<candle_core::Error> for ComputeError {
    fn from(error: candle_core::Error) -> ComputeError {
        ComputeError(error.to_string())
    }
}

/// Time spent in the stages of one forward pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stages {
    /// Building the input tensor from the request's values.
    pub input: Duration,
    /// The layers (or trees) themselves.
    pub infer: Duration,
    /// Copying probabilities out of the output tensor.
    pub output: Duration,
}

impl Stages {
    /// The whole pass.
    pub fn total(&self) -> Duration {
        self.input + self.infer + self.output
    }
}

/// One forward pass's result.
#[derive(Debug)]
pub struct Pass {
    /// Row-major probabilities, `outputs()` per row (a regressor's values);
    /// meaningless for the overflowed rows.
    pub probabilities: Vec<f32>,
    pub stages: Stages,
    /// The rows (ascending) whose values went non-finite inside the model:
    /// finite features beyond what the model's arithmetic can carry.
    pub overflowed: Vec<usize>,
}
