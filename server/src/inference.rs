//! The serving core's one way to score rows, for every API: validate them
//! against the model and the limits, hand them to the model's batcher (its
//! compute threads, never the async reactor's), and record the request in the
//! model's statistics.

use crate::batching::{Blamed, DropReason, Outcome};
use crate::error::{Canonical, MAX_VIOLATIONS, ServeError, Violation};
use crate::metrics::Metrics;
use crate::repository::Model;
use crate::stats::Stages;
use crate::validation::{RowsField, check_rows};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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

/// What the core knows of the call a request came in on.
#[derive(Clone)]
pub struct Call {
    /// The gRPC service and method, for metrics.
    pub service: &'static str,
    pub method: &'static str,
    /// The segment and version the call was routed to, once known.
    pub route: OnceLock<(String, u64)>,
    /// Where the call's queueing and compute are recorded.
    pub metrics: Arc<Metrics>,
    /// The call's trace span; fields are recorded as they become known.
    pub span: tracing::Span,
    /// The id the response carries: the caller's own, or one generated.
    pub request_id: String,
    /// How logs name the call: a generated id as is, a caller's id only as a
    /// salted hash (it may identify a person or an order).
    pub log_id: String,
    /// When the server received the request.
    pub received: Instant,
    /// The caller's deadline (its `grpc-timeout`), if it set one.
    pub deadline: Option<Instant>,
}

/// How long before a caller's deadline the server gives up and answers
/// DEADLINE_EXCEEDED itself: tonic answers CANCELLED ("Timeout expired") at the
/// deadline, so answering a little earlier gives the caller the code gRPC
/// specifies, and a call arriving with less time than this left is answered
/// at once without touching a model.
const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

impl Call {
    /// The same call's context for one message of its stream: timed and
    /// routed on its own.
    pub fn message(&self) -> Call {
        Call { received: Instant::now(), route: OnceLock::new(), ..self.clone() }
    }

    /// Notes the model the call was routed to.
    pub fn routed(&self, model: &Model) {
        if self.route.set((model.segment.clone(), model.version)).is_ok() {
            self.span.record("segment", model.segment.as_str());
            self.span.record("version", model.version);
        }
    }

    /// Records the call's (or stream message's) outcome, `None` for success,
    /// in metrics and its span.
    pub fn finished(&self, error: Option<&ServeError>) {
        let code = error.map_or(Canonical::Ok, ServeError::canonical);
        self.metrics.record_call(self, code.name());
        self.span.record("rpc.grpc.status_code", code.number());
    }

    /// Records this call's share (`rows`) of a forward pass over `batch_rows`
    /// rows after waiting `queue`: in the model's statistics, the metrics and
    /// the span.
    pub(crate) fn computed(&self, model: &Model, rows: usize, queue: Duration, stages: Stages, batch_rows: usize) {
        self.metrics.dequeued(&model.segment, model.version, queue);
        model.stats.record_compute(queue, stages);
        self.span.record("rows", rows);
        self.span.record("batch_rows", batch_rows);
        self.span.record("queue_seconds", queue.as_secs_f64());
        self.span.record("compute_seconds", stages.total().as_secs_f64());
    }

    /// Records that this call's work left the queue after `queue` without
    /// being computed.
    pub(crate) fn dropped(&self, model: &Model, queue: Duration, reason: DropReason) {
        self.metrics.dequeued(&model.segment, model.version, queue);
        self.metrics.dropped(&model.segment, model.version, reason);
        model.stats.record_dropped(reason);
    }

    /// The moment the server stops working on this call.
    pub(crate) fn give_up_at(&self) -> Option<Instant> {
        self.deadline.map(|d| d.checked_sub(DEADLINE_MARGIN).unwrap_or(d))
    }

    fn expired(&self) -> ServeError {
        ServeError::DeadlineExceeded(format!(
            "the caller's deadline passed after {} ms in the server; the work was dropped",
            self.received.elapsed().as_millis()
        ))
    }
}

/// Validates and scores `rows` with `model`, and records the outcome and the
/// time since the call was received in the model's statistics. Work still
/// waiting when the caller's deadline passes is dropped, not computed.
pub async fn serve(model: &Arc<Model>, rows: RowsRequest, call: &Call) -> Result<Scores, ServeError> {
    call.routed(model);
    let work = async {
        check_rows(model, rows.field, rows.feature_count, &rows.values, rows.max_rows)?;
        score(model.clone(), rows.values, rows.field, 0, call).await
    };
    let result = match call.give_up_at() {
        Some(at) => tokio::time::timeout_at(at.into(), work).await.unwrap_or_else(|_| Err(call.expired())),
        None => work.await,
    };
    model.stats.record_request(call.received.elapsed(), result.is_ok());
    result
}

/// Queues already-validated `values` for the model's compute workers, which
/// may merge them with other callers' rows into one forward pass (for callers
/// that validate and record the request themselves). If the call's deadline
/// passes while they wait, or the caller goes, they are dropped uncomputed.
/// `field` and `first_row` say how errors name the rows (a chunk of a larger
/// request starts at `first_row`).
pub async fn score(
    model: Arc<Model>,
    values: Vec<f32>,
    field: RowsField,
    first_row: usize,
    call: &Call,
) -> Result<Scores, ServeError> {
    let rows = values.len() / model.network.inputs();
    let answer = model.batcher.submit(values, rows, call).ok_or_else(|| {
        ServeError::Unavailable("the server is shutting down and no longer computes; retry on another replica".into())
    })?;
    let internal = |message: String| {
        tracing::error!(request = call.log_id, %message, "inference failed");
        ServeError::Internal { request_id: call.request_id.clone(), message }
    };
    match answer.await {
        Ok(Outcome::Scored(probabilities)) => Ok(Scores { probabilities, classes: model.network.classes() }),
        Ok(Outcome::Overflowed { rows, total }) => Err(overflowed(&model, &rows, total, field, first_row)),
        Ok(Outcome::Dropped) => Err(call.expired()),
        Ok(Outcome::Failed(message)) => Err(internal(message)),
        Err(_) => Err(internal("the compute worker stopped without answering".into())),
    }
}

/// The answer to rows whose finite features overflowed the model's
/// arithmetic (its dtype's range) on the way through: nothing is answered for
/// the request; the caller learns which rows and which features to look at.
fn overflowed(model: &Model, rows: &[Blamed], total: usize, field: RowsField, first_row: usize) -> ServeError {
    let about = format!(
        "overflows model `{}` version {} (dtype {}) inside the network: the value is far outside the scale the model was trained on",
        model.segment,
        model.version,
        model.manifest.dtype.as_str()
    );
    let mut violations = Vec::new();
    for blamed in rows {
        let row = first_row + blamed.row;
        if blamed.features.is_empty() {
            violations.push(Violation {
                field: field.row(row),
                description: format!("(no single feature: their combination) {about}"),
            });
        }
        for &(col, value) in &blamed.features {
            violations.push(Violation {
                field: field.cell(row, col),
                description: format!("(`{}`) = {value:e} {about}", model.manifest.features[col]),
            });
        }
    }
    violations.truncate(MAX_VIOLATIONS);
    let first = &violations[0];
    let message = if total == 1 {
        format!("{} {}", first.field, first.description)
    } else {
        format!(
            "{total} rows overflow the model; the first: {} {} (the BadRequest details list up to {MAX_VIOLATIONS})",
            first.field, first.description
        )
    };
    ServeError::InvalidArgument { message, violations }
}
