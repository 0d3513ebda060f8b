//! The serving core's one way to score rows, for every API: validate them
//! against the model and the limits, run the forward pass off the async
//! reactor, and record the request in the model's statistics. Compute goes to
//! tokio's blocking pool so a large batch never stalls the workers that drive
//! every other connection.

use crate::error::ServeError;
use crate::repository::Model;
use crate::validation::{RowsField, check_rows};
use std::sync::Arc;
use std::time::Instant;

/// Row-major class probabilities, `classes` per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub probabilities: Vec<f32>,
    pub classes: usize,
}

impl Scores {
    /// Each row's probabilities.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[f32]> {
        self.probabilities.chunks_exact(self.classes)
    }

    /// The index of a row's most probable class (the first, on a tie).
    pub fn class_of(row: &[f32]) -> usize {
        row.iter().enumerate().fold(0, |best, (i, p)| if *p > row[best] { i } else { best })
    }
}

/// A request's rows, as its API delivered them.
pub struct RowsRequest {
    /// How the API names the fields, for violations.
    pub field: RowsField,
    /// The features per row the caller declared.
    pub feature_count: usize,
    /// Row-major values.
    pub values: Vec<f32>,
    /// The most rows this request may carry.
    pub max_rows: usize,
}

/// Validates and scores `rows` with `model`, and records the outcome and the
/// time since `received` in the model's statistics.
pub async fn serve(
    model: &Arc<Model>,
    rows: RowsRequest,
    request_id: &str,
    received: Instant,
) -> Result<Scores, ServeError> {
    let result = match check_rows(model, rows.field, rows.feature_count, &rows.values, rows.max_rows) {
        Ok(_) => score(model.clone(), rows.values, request_id).await,
        Err(error) => Err(error),
    };
    model.stats.record_request(received.elapsed(), result.is_ok());
    result
}

/// Runs the forward pass over already-validated `values` on the blocking pool
/// (for callers that validate and record the request themselves).
pub async fn score(model: Arc<Model>, values: Vec<f32>, request_id: &str) -> Result<Scores, ServeError> {
    let queued = Instant::now();
    let computed = tokio::task::spawn_blocking(move || {
        let queue = queued.elapsed();
        let result = model.network.forward_timed(&values);
        if let Ok((_, stages)) = &result {
            model.stats.record_execution(values.len() / model.network.inputs(), queue, *stages);
        }
        (model, result)
    })
    .await;
    let internal = |message: String| {
        tracing::error!(request_id, %message, "inference failed");
        ServeError::Internal { request_id: request_id.to_string(), message }
    };
    match computed {
        Ok((model, Ok((probabilities, _)))) => Ok(Scores { probabilities, classes: model.network.classes() }),
        Ok((_, Err(error))) => Err(internal(format!("forward pass failed: {error}"))),
        Err(join) => Err(internal(format!("inference task failed: {join}"))),
    }
}
