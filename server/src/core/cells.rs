//! A caller's typed values (a number, a category's string, or missing)
//! become the numeric row values a model reads, once, at the edge: numbers
//! as f32, categories as their code in the model's vocabulary (what the
//! model's one-hot encoder knows, unknown ones as its encoder says). Every
//! front that takes typed rows encodes through here, so the rules and their
//! wording are the same whichever protocol a caller speaks; the request path
//! behind stays numeric. Rows that arrive as plain numbers are checked here
//! too: a category column must hold a valid code.

use crate::core::error::ServeError;
use crate::model::LoadedModel;
use crate::model::categories::UNKNOWN;

/// One feature's value as a caller sent it.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    Number(f64),
    Text(&'a str),
    Missing,
}

/// Feature `feature`'s row value for `cell`, or why it cannot be one (a
/// description for the field the front names).
pub fn encode(model: &LoadedModel, feature: usize, cell: Cell) -> Result<f32, String> {
    let name = || model.manifest.features.get(feature).map_or("?", String::as_str);
    match (model.scorer.categories(feature), cell) {
        (None, Cell::Number(value)) => Ok(value as f32),
        (None, Cell::Missing) => Ok(f32::NAN),
        (None, Cell::Text(_)) => Err(format!("is a string; feature `{}` takes numbers", name())),
        (Some(categories), Cell::Text(text)) => categories.code(Some(text)),
        (Some(categories), Cell::Missing) => categories.code(None),
        (Some(_), Cell::Number(_)) => {
            Err(format!("is a number; feature `{}` is a category: send its name (a string)", name()))
        }
    }
}

/// Checks that every category column of `values` (rows of the model's
/// features) holds a category's code, as a caller sending plain numbers
/// must; `cell` names a value's field by row and column.
pub fn check_codes(
    model: &LoadedModel,
    values: &[f32],
    cell: impl Fn(usize, usize) -> String,
) -> Result<(), ServeError> {
    if !model.scorer.inputs_by_name() {
        return Ok(());
    }
    let width = model.scorer.inputs();
    for feature in 0..width {
        let Some(categories) = model.scorer.categories(feature) else { continue };
        let valid = |v: f32| {
            (v >= 0.0 && v.fract() == 0.0 && (v as usize) < categories.values().len())
                || (v == UNKNOWN && categories.unknown_ignored())
                || (v.is_nan() && categories.missing_nan())
        };
        if let Some(row) = values.iter().skip(feature).step_by(width).position(|v| !valid(*v)) {
            return Err(ServeError::invalid(
                cell(row, feature),
                format!(
                    "is {}; feature `{}` is a category: send its name, a string, by name (HTTP /score, the Open \
                     Inference Protocol), or its code: its position in {:?}",
                    values[row * width + feature],
                    model.manifest.features[feature],
                    categories.values()
                ),
            ));
        }
    }
    Ok(())
}
