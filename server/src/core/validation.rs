//! Checks request rows against a model's input schema and the server's limits
//! before any compute: feature count, finiteness, empty and oversized batches.
//! Every API calls this, so the rules and the wording of each violation are
//! the same whichever protocol a caller speaks; only the field names differ,
//! and the front supplies those (`Fields`).

use crate::core::error::{MAX_VIOLATIONS, ServeError, Violation};
use crate::model::LoadedModel;

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
    let expected = model.network.inputs();
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
    let bad: Vec<usize> = values.iter().enumerate().filter(|(_, v)| !v.is_finite()).map(|(i, _)| i).collect();
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
                description: format!(
                    "(`{}`) is {}; features must be finite numbers",
                    model.manifest.features[col], values[i]
                ),
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
