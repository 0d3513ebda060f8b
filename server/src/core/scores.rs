//! What a model answers for a batch: each row's class probabilities (a
//! regressor's: its one value, read as a row of one "class"), and whether
//! two answers agree. How a row is read (its predicted class, the class
//! whose probability is its score) is the model layer's
//! (`scorer::predicted_class`, `scorer::scored_class`), so the core and the
//! load-time tools read scores one way.

use crate::model::scorer::predicted_class;

/// Row-major class probabilities, `classes` per row (a regressor: its
/// values, `classes` 1).
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

    /// Whether two versions' answers to a row agree (the shadow
    /// comparison): the same class, or for a regressor's one value, within
    /// 1 % of the first's magnitude (at least 0.01).
    pub fn agree(first: &[f32], second: &[f32]) -> bool {
        match (first, second) {
            ([a], [b]) => (a - b).abs() <= 0.01 * a.abs().max(1.0),
            _ => predicted_class(first) == predicted_class(second),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Scores;

    #[test]
    fn answers_agree_on_the_class_or_within_one_percent_of_a_value() {
        assert!(Scores::agree(&[0.2, 0.8], &[0.4, 0.6]));
        assert!(!Scores::agree(&[0.2, 0.8], &[0.6, 0.4]));
        assert!(Scores::agree(&[250.0], &[252.4]));
        assert!(!Scores::agree(&[250.0], &[253.0]));
        assert!(Scores::agree(&[0.001], &[0.0099]), "below 1 the bound is 0.01");
    }
}
