//! A string feature's categories: what the model's one-hot encoder knows,
//! in code order, and whether it scores an unknown one. A caller's category
//! becomes its code once, at the edge (the core's `cells`), by a hash lookup
//! (a feature may have thousands of categories); the model reads only codes.

use std::collections::HashMap;

/// The categories a string feature takes, in code order.
#[derive(Debug, Clone, PartialEq)]
pub struct Categories {
    values: Vec<String>,
    /// Each category's code: its position in `values`.
    codes: HashMap<String, usize>,
    /// Whether an unknown (or missing) category is scored (as no category:
    /// every indicator 0) rather than refused, as the model's encoder says.
    unknown_ignored: bool,
}

/// The code of an unknown category where the encoder ignores unknowns.
pub const UNKNOWN: f32 = -1.0;

impl Categories {
    /// No category yet; unknown ones ignored until an encoder says otherwise.
    pub fn new() -> Categories {
        Categories { values: Vec::new(), codes: HashMap::new(), unknown_ignored: true }
    }

    /// The categories in code order.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether an unknown category is scored as no category.
    pub fn unknown_ignored(&self) -> bool {
        self.unknown_ignored
    }

    /// `category`'s code, adding it when new.
    pub fn add(&mut self, category: String) -> usize {
        if let Some(&code) = self.codes.get(&category) {
            return code;
        }
        self.values.push(category.clone());
        self.codes.insert(category, self.values.len() - 1);
        self.values.len() - 1
    }

    /// Makes an unknown category refused (an encoder with `handle_unknown='error'`).
    pub fn refuse_unknown(&mut self) {
        self.unknown_ignored = false;
    }

    /// The row value of category `value` (`None`: missing): its code, or
    /// why the model cannot score it.
    pub fn code(&self, value: Option<&str>) -> Result<f32, String> {
        match value.and_then(|v| self.codes.get(v)) {
            Some(&code) => Ok(code as f32),
            None if self.unknown_ignored => Ok(UNKNOWN),
            None => Err(format!(
                "is {}; the model's encoder knows only {:?} and refuses others (handle_unknown='error')",
                value.map_or_else(|| "missing".to_string(), |v| format!("the unknown category `{v}`")),
                self.values
            )),
        }
    }
}

impl Default for Categories {
    fn default() -> Categories {
        Categories::new()
    }
}
