//! Why each row was answered as it was, when the caller asks (`explain` =
//! k reasons): every feature's contribution to each explained output, the
//! base they start from, and the k features pushing the row most toward
//! its answer. A forest computes exact TreeSHAP itself (on the blocking
//! pool, never on the reactor); any other model is explained by Shapley
//! values over hybrid rows (`model::shapley`), which are scored through the
//! model's batcher in parts no larger than its pass cap, so they merge with
//! and queue behind other callers' rows like any request. A caller that
//! does not ask pays nothing.

use crate::core::error::ServeError;
use crate::core::scores::Scores;
use crate::core::scoring::{self, Deadline, Fields, Rows};
use crate::core::served::ServedModel;
use crate::model::LoadedModel;
use crate::model::scorer::predicted_class;
use crate::model::shapley::{self, Baseline};
use std::sync::Arc;

/// How an explanation was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Path-dependent TreeSHAP, exact (a forest's own).
    Tree,
    /// Shapley values over every coalition of features.
    Exact,
    /// Shapley values estimated over seeded antithetic permutations.
    Sampled,
}

impl Method {
    /// The method as metrics and answers name it.
    pub fn label(self) -> &'static str {
        match self {
            Method::Tree => "tree",
            Method::Exact => "exact",
            Method::Sampled => "sampled",
        }
    }
}

/// One feature pushing a row toward its answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    pub feature: usize,
    pub contribution: f32,
    /// The row's value of the feature (a category's code).
    pub value: f32,
}

/// Each row's contributions and reasons.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub method: Method,
    /// Outputs explained per row: one for two labels (the positive, second
    /// one) or a regressor; one per label for more.
    pub outputs: usize,
    /// Values per output: each feature's contribution, then the base.
    pub width: usize,
    /// Row-major, `outputs × width` per row.
    pub contributions: Vec<f32>,
    /// Per row, the output its reasons are about (the predicted label's for more than two).
    pub explained: Vec<usize>,
    /// Per row, at most k features with a positive contribution to that output, largest first.
    pub reasons: Vec<Vec<Reason>>,
}

impl Explanation {
    /// Row `row`'s contributions, `outputs × width`.
    pub fn row(&self, row: usize) -> &[f32] {
        let size = self.outputs * self.width;
        &self.contributions[row * size..(row + 1) * size]
    }

    /// Row `row`'s contributions to the output its reasons are about, then its base.
    pub fn about(&self, row: usize) -> &[f32] {
        let start = self.explained[row] * self.width;
        &self.row(row)[start..start + self.width]
    }
}

/// What one request may ask to have explained.
#[derive(Debug, Clone, Copy)]
pub struct ExplainLimits {
    /// Reasons per row (--max-explain; 0: explanations are off).
    pub max_reasons: usize,
    /// Rows per explained request (--max-explain-rows).
    pub max_rows: usize,
}

impl ExplainLimits {
    /// Refuses an `explain` of more reasons than the server gives.
    pub fn check_reasons(&self, k: usize) -> Result<(), ServeError> {
        if k <= self.max_reasons {
            return Ok(());
        }
        let why = match self.max_reasons {
            0 => "this server does not explain answers (--max-explain 0): leave it out or send 0".to_string(),
            limit => format!("this server gives at most {limit} reasons (--max-explain): ask for fewer"),
        };
        Err(ServeError::invalid("explain", format!("is {k}; {why}")))
    }

    /// Refuses an explained request (`k` > 0) of more rows than one may
    /// explain, or for a model that cannot explain; checked before its rows are scored.
    pub fn check_request(&self, k: usize, model: &LoadedModel, rows: &Rows) -> Result<(), ServeError> {
        if k == 0 {
            return Ok(());
        }
        let count = rows.values.len() / rows.width.max(1);
        if count > self.max_rows {
            return Err(ServeError::invalid(
                rows.fields.values(),
                format!(
                    "holds {count} rows to explain; this server explains at most {} per request (--max-explain-rows): split the batch",
                    self.max_rows
                ),
            ));
        }
        if model.scorer.explains_itself() { Ok(()) } else { baseline(model).map(|_| ()) }
    }
}

/// Explains `values` (rows already scored as `scores` by `model`) with `k` reasons a row.
pub async fn explain(
    model: &Arc<ServedModel>,
    values: Vec<f32>,
    scores: &Scores,
    k: usize,
    deadline: Deadline,
) -> Result<Explanation, ServeError> {
    let inputs = model.scorer.inputs();
    let (method, contributions, values) = if model.scorer.explains_itself() {
        let served = model.clone();
        let own = tokio::task::spawn_blocking(move || (served.scorer.contributions(&values), values));
        let (own, values) = match deadline.give_up_at() {
            Some(at) => tokio::time::timeout_at(at.into(), own).await.map_err(|_| deadline.expired())?,
            None => own.await,
        }
        .map_err(|e| ServeError::Internal(format!("explaining stopped: {e}")))?;
        let own = own.ok_or_else(|| ServeError::Internal("a forest with covers did not explain".into()))?;
        (Method::Tree, own, values)
    } else {
        let (method, contributions) = estimate(model, &values, deadline).await?;
        (method, contributions, values)
    };
    if contributions.iter().any(|c| !c.is_finite()) {
        return Err(ServeError::Internal(format!(
            "model `{}` version {}: an explanation came out non-finite",
            model.segment, model.version
        )));
    }
    let rows = values.len() / inputs;
    model.batcher.metrics().explained(method.label(), rows);
    // Outputs per row as computed (a forest's margins, or the answer's explained outputs).
    let outputs = contributions.len() / rows.max(1) / (inputs + 1);
    let mut explanation = Explanation {
        method,
        outputs,
        width: inputs + 1,
        contributions,
        explained: Vec::with_capacity(rows),
        reasons: Vec::with_capacity(rows),
    };
    for (row, answer) in scores.rows().enumerate() {
        let output = if outputs == 1 { 0 } else { predicted_class(answer) };
        explanation.explained.push(output);
        let mut pushing: Vec<Reason> = explanation.about(row)[..inputs]
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0.0)
            .map(|(feature, contribution)| Reason {
                feature,
                contribution: *contribution,
                value: values[row * inputs + feature],
            })
            .collect();
        pushing.sort_by(|a, b| b.contribution.total_cmp(&a.contribution).then(a.feature.cmp(&b.feature)));
        pushing.truncate(k);
        explanation.reasons.push(pushing);
    }
    Ok(explanation)
}

/// What `model` is explained against, or why it cannot explain.
fn baseline(model: &LoadedModel) -> Result<&Baseline, ServeError> {
    model.baseline.as_ref().map_err(|why| {
        ServeError::FailedPrecondition(format!(
            "model `{}` version {} cannot explain: {why}",
            model.segment, model.version
        ))
    })
}

/// Shapley values of `values`' rows from forward passes over hybrid rows
/// (`model::shapley`), against the model's background.
async fn estimate(model: &ServedModel, values: &[f32], deadline: Deadline) -> Result<(Method, Vec<f32>), ServeError> {
    let inputs = model.scorer.inputs();
    let Baseline { background, design } = baseline(model)?;
    let method = if design.exact() { Method::Exact } else { Method::Sampled };
    let (bases, coalitions) = (background.len() / inputs, design.coalitions());
    let per_row = bases * coalitions;
    // Explained rows per part: one part's hybrids stay within a pass (at least one row).
    let part = (model.batcher.policy().max_batch_rows / per_row).max(1);
    // One explained output for two labels or a value, one per label for more (`shapley::explained`).
    let outputs = match model.scorer.outputs() {
        2 => 1,
        classes => classes,
    };
    let mut contributions = Vec::with_capacity(values.len() / inputs * outputs * (inputs + 1));
    let (mut hybrids, mut explained) = (Vec::new(), Vec::new());
    for rows in values.chunks(part * inputs) {
        hybrids.clear();
        for row in rows.chunks_exact(inputs) {
            design.hybrids(row, background, &mut hybrids);
        }
        let scored = scoring::score(model, std::mem::take(&mut hybrids), &Hybrids, 0, false, deadline).await?;
        explained.clear();
        for answer in scored.scores.rows() {
            shapley::explained(answer, &mut explained);
        }
        // Per explained row, per output: v of each coalition, the mean over the background.
        for row in explained.chunks_exact(per_row * outputs) {
            for output in 0..outputs {
                let v: Vec<f64> = (0..coalitions)
                    .map(|c| (0..bases).map(|b| row[(c * bases + b) * outputs + output]).sum::<f64>() / bases as f64)
                    .collect();
                contributions.extend(design.contributions(&v).into_iter().map(|c| c as f32));
            }
        }
    }
    Ok((method, contributions))
}

/// How violations name hybrid rows (only an overflow inside the model can
/// name one: the rows themselves were validated).
struct Hybrids;

impl Fields for Hybrids {
    fn width(&self, declared: usize) -> (&'static str, String) {
        ("explain", format!("built rows of {declared} features"))
    }
    fn values(&self) -> &'static str {
        "explain"
    }
    fn row(&self, row: usize) -> String {
        format!("explain (hybrid row {row})")
    }
    fn cell(&self, row: usize, col: usize) -> String {
        format!("explain (hybrid row {row}, feature {col})")
    }
}
