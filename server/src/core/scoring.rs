//! The serving core's one way to score rows, for every API and for unary
//! and streaming calls alike: validate them against the model's input schema
//! and the server's limits before any compute (feature count, finiteness,
//! empty and oversized batches: the same rules and wording whichever protocol
//! a caller speaks, only the field names differ, and the front supplies
//! those), hand them to the model's batcher (its compute threads, never the
//! async reactor's), give up at the caller's deadline, and record the request
//! in the model's statistics. It knows nothing of the transport: the front
//! passes the rows, how its protocol names their fields, and the deadline,
//! and gets the scores with where their time went.

use crate::core::batching::{Blamed, Outcome, Timing};
use crate::core::error::{MAX_VIOLATIONS, ServeError, Violation};
use crate::core::scores::Scores;
use crate::core::served::ServedModel;
use crate::model::LoadedModel;
use std::time::{Duration, Instant};

/// Scores, and where the time to compute them went.
#[derive(Debug)]
pub struct Scored {
    pub scores: Scores,
    pub timing: Timing,
}

/// A request's rows, as its API delivered them.
pub struct Rows {
    /// How the API names the fields, for violations.
    pub fields: &'static dyn Fields,
    /// The features per row the caller declared.
    pub width: usize,
    /// Row-major values.
    pub values: Vec<f32>,
    /// The most rows this request may carry.
    pub max_rows: usize,
}

/// When a request arrived and when its caller stops waiting for it.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub received: Instant,
    /// The caller's deadline, if it set one.
    pub at: Option<Instant>,
}

/// How long before a caller's deadline the server gives up and answers
/// DEADLINE_EXCEEDED itself: gRPC clients give up at the deadline (tonic
/// answers CANCELLED "Timeout expired" then), so answering a little earlier
/// gives the caller the code gRPC specifies, and a call arriving with less
/// time than this left is answered at once without touching a model.
const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

impl Deadline {
    /// The moment the server stops working on the request.
    pub fn give_up_at(&self) -> Option<Instant> {
        self.at.map(|d| d.checked_sub(DEADLINE_MARGIN).unwrap_or(d))
    }

    fn expired(&self) -> ServeError {
        ServeError::DeadlineExceeded(format!(
            "the caller's deadline passed after {} ms in the server; the work was dropped",
            self.received.elapsed().as_millis()
        ))
    }
}

/// Validates and scores `rows` with `model`, and records the outcome and
/// the time since the request was received in the model's statistics.
pub async fn serve(model: &ServedModel, rows: Rows, deadline: Deadline) -> Result<Scored, ServeError> {
    let result = match check(model, &rows) {
        Ok(_) => score(model, rows.values, rows.fields, 0, deadline).await,
        Err(error) => Err(error),
    };
    recorded(model, deadline, result)
}

/// Validates `rows` for `model` without scoring them; returns the number of
/// rows. (A caller that scores them in parts, a stream, checks the whole
/// request first so that a bad row ends it before any part is answered.)
pub fn check(model: &ServedModel, rows: &Rows) -> Result<usize, ServeError> {
    check_rows(model, rows.fields, rows.width, &rows.values, rows.max_rows)
}

/// Records a request's `result` in `model`'s statistics, with its time in
/// the server, and returns it. Every request routed to a model is recorded
/// exactly once, through here.
pub fn recorded<T>(model: &ServedModel, deadline: Deadline, result: Result<T, ServeError>) -> Result<T, ServeError> {
    model.stats.record_request(deadline.received.elapsed(), result.is_ok());
    result
}

/// Queues already-validated `values` for the model's compute workers, which
/// may merge them with other callers' rows into one forward pass. If the
/// deadline passes while they wait, or the caller goes (drops this future),
/// they are dropped uncomputed. `fields` and `first_row` say how errors name
/// the rows (a part of a larger request starts at `first_row`).
pub async fn score(
    model: &ServedModel,
    values: Vec<f32>,
    fields: &dyn Fields,
    first_row: usize,
    deadline: Deadline,
) -> Result<Scored, ServeError> {
    let rows = values.len() / model.scorer.inputs();
    let give_up_at = deadline.give_up_at();
    let answer = model.batcher.submit(values, rows, give_up_at).ok_or_else(|| {
        ServeError::Unavailable("the server is shutting down and no longer computes; retry on another replica".into())
    })?;
    let answer = match give_up_at {
        Some(at) => match tokio::time::timeout_at(at.into(), answer).await {
            Ok(answer) => answer,
            Err(_) => return Err(deadline.expired()),
        },
        None => answer.await,
    };
    let Ok(answer) = answer else {
        return Err(ServeError::Internal("the compute worker stopped without answering".into()));
    };
    match answer.outcome {
        Outcome::Scored(probabilities) => {
            Ok(Scored { scores: Scores { probabilities, classes: model.scorer.classes() }, timing: answer.timing })
        }
        Outcome::Overflowed { rows, total } => Err(overflowed(model, &rows, total, fields, first_row)),
        Outcome::Dropped => Err(deadline.expired()),
        Outcome::Failed(message) => Err(ServeError::Internal(message)),
    }
}

/// The answer to rows whose finite features overflowed the model's
/// arithmetic (its dtype's range) on the way through: nothing is answered for
/// the request; the caller learns which rows and which features to look at.
fn overflowed(model: &LoadedModel, rows: &[Blamed], total: usize, fields: &dyn Fields, first_row: usize) -> ServeError {
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
                field: fields.row(row),
                description: format!("(no single feature: their combination) {about}"),
            });
        }
        for &(col, value) in &blamed.features {
            violations.push(Violation {
                field: fields.cell(row, col),
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

/// How a front names the parts of a request's rows in violations: each
/// protocol carries rows in fields of its own.
pub trait Fields: Sync {
    /// The field that declares the row width, and how to say what it declared
    /// (`declared` features per row).
    fn width(&self, declared: usize) -> (&'static str, String);
    /// The field holding the values.
    fn values(&self) -> &'static str;
    /// How a violation names one row's values.
    fn row(&self, row: usize) -> String;
    /// How a violation names one value: row `row`, feature `col`.
    fn cell(&self, row: usize, col: usize) -> String;
}

/// Checks `values` (row-major, `width` per row, as the caller declared) for
/// `model`; returns the number of rows.
pub fn check_rows(
    model: &LoadedModel,
    fields: &dyn Fields,
    width: usize,
    values: &[f32],
    max_rows: usize,
) -> Result<usize, ServeError> {
    let expected = model.scorer.inputs();
    let about_model = || {
        format!(
            "model `{}` version {} expects {expected} features per row (see GetModel for their order)",
            model.segment, model.version
        )
    };
    if width != expected {
        let (field, declared) = fields.width(width);
        return Err(ServeError::invalid(field, format!("{declared}; {}", about_model())));
    }
    let values_field = fields.values();
    if values.is_empty() {
        return Err(ServeError::invalid(values_field, "is empty: send at least one row"));
    }
    if !values.len().is_multiple_of(expected) {
        return Err(ServeError::invalid(
            values_field,
            format!("has {} values, not a whole number of rows of {expected} features", values.len()),
        ));
    }
    let rows = values.len() / expected;
    if rows > max_rows {
        return Err(ServeError::invalid(
            values_field,
            format!("holds {rows} rows; this server accepts at most {max_rows} per request: split the batch"),
        ));
    }
    // Trees take NaN as a missing value; no model takes an infinity.
    let missing = model.scorer.accepts_missing();
    let refused = |v: f32| !(v.is_finite() || missing && v.is_nan());
    let bad: Vec<usize> = values.iter().enumerate().filter(|(_, v)| refused(**v)).map(|(i, _)| i).collect();
    let rule = if missing {
        "features must be finite numbers, or NaN for a missing value"
    } else {
        "features must be finite numbers"
    };
    if bad.is_empty() {
        return Ok(rows);
    }
    let violations: Vec<Violation> = bad
        .iter()
        .take(MAX_VIOLATIONS)
        .map(|&i| {
            let (row, col) = (i / expected, i % expected);
            Violation {
                field: fields.cell(row, col),
                description: format!("(`{}`) is {}; {rule}", model.manifest.features[col], values[i]),
            }
        })
        .collect();
    let first = &violations[0];
    let message = if bad.len() == 1 {
        format!("{} {}", first.field, first.description)
    } else {
        format!(
            "{} non-finite feature values; the first: {} {} (the first {} are listed in the BadRequest details)",
            bad.len(),
            first.field,
            first.description,
            violations.len()
        )
    };
    Err(ServeError::InvalidArgument { message, violations })
}
