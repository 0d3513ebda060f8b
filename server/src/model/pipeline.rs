//! A model behind its preprocessing, as scikit-learn pipelines export it to
//! ONNX: each column the model reads is computed from the caller's features
//! (a number, or the one-hot indicator of a category) through per-column ops
//! (imputing missing values, standard and min-max scaling, constant
//! arithmetic, clipping). The ops run on the CPU over the request's rows in
//! f32, operation for operation as onnxruntime computes them
//! (`(x − offset) · scale`, not a division), so a tree's split sees exactly
//! the value it sees there. A category arrives as its code (its index in the
//! feature's `Categories`, encoded once at the edge by the core), so the
//! request path stays numeric.

use super::categories::Categories;
use super::scorer::{ComputeError, Pass, Scorer};
use std::time::Instant;

/// What a model column starts from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    /// The value of feature `.0`.
    Feature(usize),
    /// 1 when feature `feature` holds `code` (a category's code, or an
    /// integer category's value), else 0.
    Indicator { feature: usize, code: f32 },
}

/// One per-column op.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ColumnOp {
    /// A missing value (NaN, or `replaced` when it is a number) becomes `value`.
    Impute { replaced: f32, value: f32 },
    /// `(x − offset) · scale` (ONNX-ML `Scaler`).
    Scale { offset: f32, scale: f32 },
    /// `x ∘ c`, or `c ∘ x` when `constant_first`.
    Arithmetic { op: Arithmetic, constant: f32, constant_first: bool },
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

impl ColumnOp {
    fn apply(&self, x: f32) -> f32 {
        match *self {
            ColumnOp::Impute { replaced, value } => {
                let missing = if replaced.is_nan() { x.is_nan() } else { x == replaced };
                if missing { value } else { x }
            }
            ColumnOp::Scale { offset, scale } => (x - offset) * scale,
            ColumnOp::Arithmetic { op, constant, constant_first } => {
                let (a, b) = if constant_first { (constant, x) } else { (x, constant) };
                match op {
                    Arithmetic::Add => a + b,
                    Arithmetic::Sub => a - b,
                    Arithmetic::Mul => a * b,
                    Arithmetic::Div => a / b,
                }
            }
            ColumnOp::Clip { low, high } => {
                let raised = if x < low { low } else { x };
                if high < raised { high } else { raised }
            }
        }
    }

    /// The op's name as GetModel lists it.
    fn name(&self) -> &'static str {
        match self {
            ColumnOp::Impute { .. } => "impute",
            ColumnOp::Scale { .. } => "scale",
            ColumnOp::Arithmetic { op: Arithmetic::Add, .. } => "add",
            ColumnOp::Arithmetic { op: Arithmetic::Sub, .. } => "sub",
            ColumnOp::Arithmetic { op: Arithmetic::Mul, .. } => "mul",
            ColumnOp::Arithmetic { op: Arithmetic::Div, .. } => "div",
            ColumnOp::Clip { .. } => "clip",
        }
    }
}

/// One column the model reads: its source, then its ops in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub source: Source,
    pub ops: Vec<ColumnOp>,
}

impl Column {
    fn value(&self, row: &[f32]) -> f32 {
        let x = match self.source {
            Source::Feature(f) => row[f],
            Source::Indicator { feature, code } => f32::from(u8::from(row[feature] == code)),
        };
        self.ops.iter().fold(x, |x, op| op.apply(x))
    }
}

/// A model behind the columns it reads, computed from the caller's features.
pub struct Pipeline {
    /// Per feature, its categories when it is a string feature.
    categories: Vec<Option<Categories>>,
    columns: Vec<Column>,
    /// Whether the features arrive as an input each (a DataFrame's columns).
    by_name: bool,
    /// Whether NaN is a legitimate feature value (asked per request: decided once).
    accepts_missing: bool,
    model: Box<dyn Scorer>,
    description: Vec<String>,
}

impl Pipeline {
    /// `model` reading `columns` (as many as it takes) computed from rows of
    /// `categories.len()` features, sent as an input each when `by_name`.
    pub fn new(
        categories: Vec<Option<Categories>>,
        columns: Vec<Column>,
        by_name: bool,
        model: Box<dyn Scorer>,
    ) -> Pipeline {
        let mut description = vec![describe(&categories, &columns)];
        description.extend(model.description().iter().cloned());
        // NaN is legitimate when the model takes it, or when every column
        // read from a number imputes it first.
        let accepts_missing = model.accepts_missing()
            || columns.iter().all(|c| match c.source {
                Source::Indicator { .. } => true,
                Source::Feature(_) => matches!(
                    c.ops.first(),
                    Some(ColumnOp::Impute { replaced, value }) if replaced.is_nan() && value.is_finite()
                ),
            });
        Pipeline { categories, columns, by_name, accepts_missing, model, description }
    }

    /// The model's columns for `values` (rows of every feature).
    fn prepared(&self, values: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(values.len() / self.categories.len() * self.columns.len());
        for row in values.chunks_exact(self.categories.len()) {
            out.extend(self.columns.iter().map(|c| c.value(row)));
        }
        out
    }
}

/// GetModel's line for the preprocessing: e.g. `columns(3 features → 7:
/// 2 one-hot, impute ×2, scale ×2)`.
fn describe(categories: &[Option<Categories>], columns: &[Column]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    let indicators = columns.iter().filter(|c| matches!(c.source, Source::Indicator { .. })).count();
    for op in columns.iter().flat_map(|c| &c.ops) {
        match counts.iter_mut().find(|(name, _)| *name == op.name()) {
            Some((_, n)) => *n += 1,
            None => counts.push((op.name(), 1)),
        }
    }
    let mut parts: Vec<String> = Vec::new();
    if indicators > 0 {
        parts.push(format!("{indicators} one-hot"));
    }
    parts.extend(counts.iter().map(|(name, n)| format!("{name} ×{n}")));
    format!("columns({} features → {}: {})", categories.len(), columns.len(), parts.join(", "))
}

impl Scorer for Pipeline {
    fn inputs(&self) -> usize {
        self.categories.len()
    }

    fn outputs(&self) -> usize {
        self.model.outputs()
    }

    fn description(&self) -> &[String] {
        &self.description
    }

    fn dtype(&self) -> &'static str {
        self.model.dtype()
    }

    fn accepts_missing(&self) -> bool {
        self.accepts_missing
    }

    fn on_cpu(&self) -> bool {
        self.model.on_cpu()
    }

    fn categories(&self, feature: usize) -> Option<&Categories> {
        self.categories.get(feature).and_then(Option::as_ref)
    }

    fn inputs_by_name(&self) -> bool {
        self.by_name
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
        // The model's columns blamed, traced back to the features they come from.
        let mut features: Vec<usize> = self
            .model
            .blame(&self.prepared(row))
            .into_iter()
            .filter_map(|c| self.columns.get(c))
            .map(|c| match c.source {
                Source::Feature(f) | Source::Indicator { feature: f, .. } => f,
            })
            .collect();
        features.sort_unstable();
        features.dedup();
        features
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::categories::UNKNOWN;

    #[test]
    fn ops_compute_as_onnxruntime_does() {
        let column = |ops: Vec<ColumnOp>| Column { source: Source::Feature(0), ops };
        let impute = ColumnOp::Impute { replaced: f32::NAN, value: 1.5 };
        assert_eq!(column(vec![impute]).value(&[f32::NAN]), 1.5);
        // (3 − 1) · 0.1 in f32, not (3 − 1) / 10.
        assert_eq!(column(vec![ColumnOp::Scale { offset: 1.0, scale: 0.1 }]).value(&[3.0]), 2.0f32 * 0.1f32);
        let minus = ColumnOp::Arithmetic { op: Arithmetic::Sub, constant: 10.0, constant_first: true };
        assert_eq!(column(vec![minus]).value(&[2.0]), 8.0);
        let clip = ColumnOp::Clip { low: -1.0, high: 5.0 };
        assert_eq!(column(vec![clip]).value(&[8.0]), 5.0);
        assert!(column(vec![clip]).value(&[f32::NAN]).is_nan(), "a missing value stays missing through a clip");
        let sentinel = ColumnOp::Impute { replaced: -1.0, value: 9.0 };
        assert_eq!(column(vec![sentinel]).value(&[-1.0]), 9.0);
    }

    #[test]
    fn categories_become_codes_and_indicators() {
        let mut known = Categories::new();
        assert_eq!((known.add("de".into()), known.add("fr".into()), known.add("de".into())), (0, 1, 0));
        assert_eq!(known.code(Some("fr")), Ok(1.0));
        assert_eq!(known.code(Some("us")), Ok(UNKNOWN));
        assert_eq!(known.code(None), Ok(UNKNOWN));
        let mut strict = known.clone();
        strict.refuse_unknown();
        let error = strict.code(Some("us")).unwrap_err();
        assert!(error.contains("the unknown category `us`") && error.contains("handle_unknown='error'"), "{error}");
        let fr = Column { source: Source::Indicator { feature: 1, code: 1.0 }, ops: Vec::new() };
        assert_eq!((fr.value(&[0.0, 1.0]), fr.value(&[0.0, 0.0]), fr.value(&[0.0, UNKNOWN])), (1.0, 0.0, 0.0));
    }
}
