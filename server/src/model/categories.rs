//! A string feature's categories: what the model knows (a pipeline's
//! one-hot encoder, or a booster's categorical feature), in code order, and
//! how it scores an unknown or missing one. A caller's category becomes its
//! code once, at the edge (the core's `cells`), by a hash lookup (a feature
//! may have thousands of categories); the model reads only codes.

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
    /// Whether a missing category is a NaN, which the model routes as
    /// missing (a booster's default direction), whatever it does with
    /// unknown ones.
    missing_nan: bool,
    /// Who refuses an unknown category, for the refusal's wording.
    refuser: &'static str,
}

/// The code of an unknown category where the encoder ignores unknowns.
pub const UNKNOWN: f32 = -1.0;

impl Categories {
    /// No category yet; unknown ones ignored until an encoder says otherwise.
    pub fn new() -> Categories {
        Categories {
            values: Vec::new(),
            codes: HashMap::new(),
            unknown_ignored: true,
            missing_nan: false,
            refuser: "the model's encoder refuses others (handle_unknown='error')",
        }
    }

    /// A booster's categorical feature: `values` in code order (unique), a
    /// missing category is NaN (the split's missing direction); an unknown
    /// one is refused, saying `refuser` does so, or else scored as code
    /// `UNKNOWN`, which every split sends where it sends a missing value.
    pub fn of_booster(values: Vec<String>, refuser: Option<&'static str>) -> Result<Categories, String> {
        let mut categories = Categories::new();
        for value in values {
            if categories.codes.contains_key(&value) {
                return Err(format!("category `{value}` is listed twice"));
            }
            categories.add(value);
        }
        categories.missing_nan = true;
        if let Some(refuser) = refuser {
            categories.unknown_ignored = false;
            categories.refuser = refuser;
        }
        Ok(categories)
    }

    /// The categories in code order.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// The category a row value names (`code`'s inverse); `None` for a
    /// missing or unknown one.
    pub fn name(&self, value: f32) -> Option<&str> {
        let index = (value >= 0.0 && value.fract() == 0.0).then_some(value as usize)?;
        self.values.get(index).map(String::as_str)
    }

    /// Whether an unknown category is scored as no category.
    pub fn unknown_ignored(&self) -> bool {
        self.unknown_ignored
    }

    /// Whether a missing category is sent to the model as NaN.
    pub fn missing_nan(&self) -> bool {
        self.missing_nan
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
            None if value.is_none() && self.missing_nan => Ok(f32::NAN),
            None if self.unknown_ignored => Ok(UNKNOWN),
            None => Err(format!(
                "is {}; the model knows only {:?} and {}",
                value.map_or_else(|| "missing".to_string(), |v| format!("the unknown category `{v}`")),
                self.values,
                self.refuser
            )),
        }
    }
}

impl Default for Categories {
    fn default() -> Categories {
        Categories::new()
    }
}
