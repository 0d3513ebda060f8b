//! What a model answers for a batch: each row's class probabilities (a
//! regressor's: its one value, read as a row of one "class"), and how
//! a row is read (its predicted class, and the class whose probability is its
//! score, which drift and the shadow comparison measure). A leaf of the core:
//! scoring, drift and rollouts all read scores this one way.

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

    /// The index of a row's most probable class (the first, on a tie).
    pub fn class_of(row: &[f32]) -> usize {
        row.iter().enumerate().fold(0, |best, (i, p)| if *p > row[best] { i } else { best })
    }

    /// Whether two versions' answers to a row agree (the shadow
    /// comparison): the same class, or for a regressor's one value, within
    /// 1 % of the first's magnitude (at least 0.01).
    pub fn agree(first: &[f32], second: &[f32]) -> bool {
        match (first, second) {
            ([a], [b]) => (a - b).abs() <= 0.01 * a.abs().max(1.0),
            _ => Scores::class_of(first) == Scores::class_of(second),
        }
    }

    /// The class whose probability is a row's score (drift, shadow
    /// comparison): the second of two labels (the positive class), the
    /// most probable of more; a regressor's value is its score.
    pub fn positive_class(row: &[f32]) -> usize {
        if row.len() == 2 { 1 } else { Scores::class_of(row) }
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
