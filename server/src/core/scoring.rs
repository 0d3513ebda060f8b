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

use crate::core::batching::{Blamed, Computed, Timing};
use crate::core::cells;
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

    /// The answer once the server has given up on the request.
    pub fn expired(&self) -> ServeError {
        ServeError::DeadlineExceeded(format!(
            "the caller's deadline passed after {} ms in the server; the work was dropped",
            self.received.elapsed().as_millis()
        ))
    }
}

/// Validates and scores `rows` with `model`, and records the outcome and
/// the time since the request was received in the model's statistics.
pub async fn serve(model: &ServedModel, rows: Rows, deadline: Deadline, lone: bool) -> Result<Scored, ServeError> {
    let result = match check(model, &rows) {
        Ok(_) => score(model, rows.values, rows.fields, 0, lone, deadline).await,
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
/// may merge them with other callers' rows into one forward pass; a `lone`
/// request (the only one in the server) may be computed right here instead
/// (`Batcher::run_inline`). If the deadline passes while they wait, or the
/// caller goes (drops this future), they are dropped uncomputed. `fields`
/// and `first_row` say how errors name the rows (a part of a larger request
/// starts at `first_row`).
pub async fn score(
    model: &ServedModel,
    values: Vec<f32>,
    fields: &dyn Fields,
    first_row: usize,
    lone: bool,
    deadline: Deadline,
) -> Result<Scored, ServeError> {
    let rows = values.len() / model.scorer.inputs();
    let give_up_at = deadline.give_up_at();
    let answer = match model.batcher.run_inline(&model.loaded, &model.stats, values, rows, give_up_at, lone) {
        Ok(answered) => answered,
        Err(values) => model.batcher.submit(values, rows, give_up_at).ok_or_else(|| {
            ServeError::Unavailable(
                "the server is shutting down and no longer computes; retry on another replica".into(),
            )
        })?,
    };
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
        Computed::Scored(probabilities) => {
            Ok(Scored { scores: Scores { probabilities, classes: model.scorer.outputs() }, timing: answer.timing })
        }
        Computed::Overflowed { rows, total } => Err(overflowed(model, &rows, total, fields, first_row)),
        Computed::Dropped => Err(deadline.expired()),
        Computed::Failed(message) => Err(ServeError::Internal(message)),
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
        cells::check_codes(model, values, |row, col| fields.cell(row, col))?;
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

#[cfg(test)]
mod tests {
    use super::{Fields, check_rows};
    use crate::core::error::{MAX_VIOLATIONS, ServeError};
    use crate::model::{LoadedModel, repository};
    use candle_core::Device;
    use std::path::Path;

    /// Fields named as a flat list: `width`, `values`, `values[r]`, `values[r][c]`.
    struct Plain;

    impl Fields for Plain {
        fn width(&self, declared: usize) -> (&'static str, String) {
            ("width", format!("is {declared}"))
        }
        fn values(&self) -> &'static str {
            "values"
        }
        fn row(&self, row: usize) -> String {
            format!("values[{row}]")
        }
        fn cell(&self, row: usize, col: usize) -> String {
            format!("values[{row}][{col}]")
        }
    }

    fn demo(segment: &str) -> LoadedModel {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(segment).join("1");
        repository::load_version(segment, 1, &dir, &Device::Cpu, "cpu", u64::MAX).unwrap()
    }

    fn refused(result: Result<usize, ServeError>) -> (String, Vec<String>) {
        match result {
            Err(ServeError::InvalidArgument { message, violations }) => {
                (message, violations.into_iter().map(|v| v.field).collect())
            }
            other => panic!("not refused as INVALID_ARGUMENT: {other:?}"),
        }
    }

    #[test]
    fn whole_finite_rows_of_the_models_width_pass_and_are_counted() {
        let model = demo("retail");
        assert_eq!(check_rows(&model, &Plain, 30, &vec![0.5; 90], 3).unwrap(), 3);
    }

    #[test]
    fn each_rule_is_refused_naming_the_field_and_what_to_fix() {
        let model = demo("retail");
        let (message, _) = refused(check_rows(&model, &Plain, 29, &[0.5; 29], 10));
        assert!(message.starts_with("width is 29; model `retail` version 1 expects 30 features"), "{message}");
        let (message, _) = refused(check_rows(&model, &Plain, 30, &[], 10));
        assert_eq!(message, "values is empty: send at least one row");
        let (message, _) = refused(check_rows(&model, &Plain, 30, &[0.5; 45], 10));
        assert!(message.contains("has 45 values, not a whole number of rows of 30"), "{message}");
        let (message, _) = refused(check_rows(&model, &Plain, 30, &[0.5; 120], 3));
        assert!(message.contains("holds 4 rows; this server accepts at most 3"), "{message}");
    }

    #[test]
    fn non_finite_values_are_listed_by_row_and_feature_up_to_the_limit() {
        let model = demo("retail");
        let mut values = vec![0.5; 30 * 40];
        values[31] = f32::NAN;
        let (message, fields) = refused(check_rows(&model, &Plain, 30, &values, 100));
        assert!(message.starts_with("values[1][1] (`"), "{message}");
        assert!(message.contains("is NaN; features must be finite numbers"), "{message}");
        assert_eq!(fields, ["values[1][1]"]);
        for row in 0..40 {
            values[row * 30] = f32::INFINITY;
        }
        let (message, fields) = refused(check_rows(&model, &Plain, 30, &values, 100));
        assert!(message.starts_with("41 non-finite feature values; the first: values[0][0]"), "{message}");
        assert_eq!(fields.len(), MAX_VIOLATIONS, "the details list at most {MAX_VIOLATIONS}");
    }

    #[test]
    fn trees_take_nan_as_missing_but_never_an_infinity() {
        let model = demo("retail-gbt");
        let mut values = vec![0.5; 30];
        values[3] = f32::NAN;
        assert_eq!(check_rows(&model, &Plain, 30, &values, 1).unwrap(), 1);
        values[4] = f32::NEG_INFINITY;
        let (message, fields) = refused(check_rows(&model, &Plain, 30, &values, 1));
        assert!(message.contains("features must be finite numbers, or NaN for a missing value"), "{message}");
        assert_eq!(fields, ["values[0][4]"]);
    }
}
