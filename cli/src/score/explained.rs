//! The columns `candela score --explain K` adds: `reason_1` … `reason_K`
//! (the features pushing each row most toward its answer, most first; empty
//! where a row has fewer) and, with `--contributions`, one
//! `contribution_<feature>` column per feature and `contribution_base`:
//! the contributions to the output the reasons are about (the positive
//! label for two labels, the predicted label for more, a regressor's value).

use candela_client::proto;

/// What the run asked to be explained, and the model's features.
#[derive(Debug, Clone, Default)]
pub struct Explained {
    /// Reasons per row (0: no explanation).
    pub reasons: usize,
    /// Whether every contribution gets a column.
    pub contributions: bool,
    pub features: Vec<String>,
}

impl Explained {
    /// The text columns (reasons), then the number columns (contributions).
    pub fn columns(&self) -> (Vec<String>, Vec<String>) {
        let reasons = (1..=self.reasons).map(|k| format!("reason_{k}")).collect();
        let mut numbers = Vec::new();
        if self.contributions {
            numbers.extend(self.features.iter().map(|f| format!("contribution_{f}")));
            numbers.push("contribution_base".into());
        }
        (reasons, numbers)
    }

    /// A row's reasons, one cell per reason column (none: an unanswered row, or fewer reasons).
    pub fn reason_cells<'a>(&self, explanation: Option<&'a proto::Explanation>) -> Vec<Option<&'a str>> {
        (0..self.reasons).map(|k| explanation.and_then(|e| e.reasons.get(k)).map(|r| r.feature.as_str())).collect()
    }

    /// A row's contributions to the output its reasons are about (`class`:
    /// its predicted label), one cell per number column.
    pub fn contribution_cells(&self, explanation: Option<&proto::Explanation>, class: usize) -> Vec<Option<f32>> {
        if !self.contributions {
            return Vec::new();
        }
        let width = self.features.len() + 1;
        let about = explanation.and_then(|e| {
            let outputs = e.contributions.len() / width;
            let output = if outputs == 1 { 0 } else { class };
            e.contributions.get(output * width..(output + 1) * width)
        });
        (0..width).map(|i| about.map(|values| values[i])).collect()
    }
}
