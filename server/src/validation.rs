//! Checks request rows against a model's input schema and the server's limits
//! before any compute: feature count, finiteness, empty and oversized batches.
//! Both APIs call this, so the rules and the wording of each violation are the
//! same whichever protocol a caller speaks.

use crate::error::{MAX_VIOLATIONS, ServeError, Violation};
use crate::repository::Model;

/// How the rows travelled, which decides how violations name fields.
#[derive(Debug, Clone, Copy)]
pub enum RowsField {
    /// One row in a repeated `features` field (Predict).
    Features,
    /// Packed rows in a `rows` message (BatchPredict, streams).
    Rows,
    /// The first input tensor of an Open Inference Protocol request.
    Tensor,
}

impl RowsField {
    /// How a violation names one row's values.
    pub fn row(self, row: usize) -> String {
        match self {
            RowsField::Features => "features".to_string(),
            RowsField::Rows => format!("rows.values[{row}]"),
            RowsField::Tensor => format!("inputs[0][{row}]"),
        }
    }

    /// How a violation names one value: row `row`, feature `col`.
    pub fn cell(self, row: usize, col: usize) -> String {
        match self {
            RowsField::Features => format!("features[{col}]"),
            other => format!("{}[{col}]", other.row(row)),
        }
    }
}

/// Checks `values` (row-major, `feature_count` per row) for `model`; returns
/// the number of rows. `feature_count` is what the caller declared.
pub fn check_rows(
    model: &Model,
    field: RowsField,
    feature_count: usize,
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
    match field {
        RowsField::Features if values.len() != expected => {
            return Err(ServeError::invalid("features", format!("has {} values; {}", values.len(), about_model())));
        }
        RowsField::Rows if feature_count != expected => {
            return Err(ServeError::invalid("rows.feature_count", format!("is {feature_count}; {}", about_model())));
        }
        RowsField::Tensor if feature_count != expected => {
            return Err(ServeError::invalid(
                "inputs[0].shape",
                format!("has {feature_count} columns; {}", about_model()),
            ));
        }
        _ => {}
    }
    let values_field = match field {
        RowsField::Features => "features",
        RowsField::Rows => "rows.values",
        RowsField::Tensor => "inputs[0]",
    };
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
                field: field.cell(row, col),
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
