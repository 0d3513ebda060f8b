//! A string feature's categories: what the model's one-hot encoder knows,
//! in code order, and whether it scores an unknown one. A caller's category
//! becomes its code once, at the edge (the core's `cells`); the model reads
//! only codes.

/// The categories a string feature takes, in code order.
#[derive(Debug, Clone, PartialEq)]
pub struct Categories {
    pub values: Vec<String>,
    /// Whether an unknown (or missing) category is scored (as no category:
    /// every indicator 0) rather than refused, as the model's encoder says.
    pub unknown_ignored: bool,
}

/// The code of an unknown category where the encoder ignores unknowns.
pub const UNKNOWN: f32 = -1.0;

impl Categories {
    /// The row value of category `value` (`None`: missing): its code, or
    /// why the model cannot score it.
    pub fn code(&self, value: Option<&str>) -> Result<f32, String> {
        match value.and_then(|v| self.values.iter().position(|c| c == v)) {
            Some(code) => Ok(code as f32),
            None if self.unknown_ignored => Ok(UNKNOWN),
            None => Err(format!(
                "is {}; the model's encoder knows only {:?} and refuses others (handle_unknown='error')",
                value.map_or_else(|| "missing".to_string(), |v| format!("the unknown category `{v}`")),
                self.values
            )),
        }
    }
}
