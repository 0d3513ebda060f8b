//! What a model answers for a batch: each row's class probabilities, and how
//! a row is read (its predicted class, and the class whose probability is its
//! score, which drift and the shadow comparison measure). A leaf of the core:
//! scoring, drift and rollouts all read scores this one way.

/// Row-major class probabilities, `classes` per row.
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

    /// The class whose probability is a row's score (drift, shadow
    /// comparison): the second of two labels (the positive class), the
    /// most probable of more.
    pub fn positive_class(row: &[f32]) -> usize {
        if row.len() == 2 { 1 } else { Scores::class_of(row) }
    }
}
