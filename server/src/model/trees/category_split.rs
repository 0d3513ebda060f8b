//! Categorical splits: a row's value is a category's code (an integer, as
//! the libraries cast it) tested against the set a split keeps as a bitset.
//! LightGBM sends the set's categories left and everything else right (a
//! NaN, a negative code, one beyond the bitset); XGBoost sends them right
//! and everything else left, but a NaN its default way. Both cast the value
//! to an integer by truncation; LightGBM tests the sign after the cast
//! (−0.5 is category 0), XGBoost before it (−0.5 is no category).

use super::{FEATURE, NAN_LEFT, Node, SET, SET_LEFT, Split};

/// The categories a split tests: `Ensemble::sets[index]`, and which way
/// they go.
#[derive(Debug, Clone, Copy)]
pub struct CategorySet {
    pub index: usize,
    /// The set's categories go left (LightGBM), else right (XGBoost).
    pub in_set_left: bool,
}

/// Codes at or beyond this are no category (XGBoost's bound, 2^24; far
/// beyond any vocabulary a model is served with).
const MAX_CATEGORY: u32 = 1 << 24;

/// The bitset of `categories` (codes below `MAX_CATEGORY`).
pub fn bitset(categories: &[u32]) -> Result<Vec<u32>, String> {
    let mut words = Vec::new();
    for &category in categories {
        if category >= MAX_CATEGORY {
            return Err(format!("category {category} is beyond the largest code, {}", MAX_CATEGORY - 1));
        }
        let word = (category / 32) as usize;
        if words.len() <= word {
            words.resize(word + 1, 0);
        }
        words[word] |= 1 << (category % 32);
    }
    Ok(words)
}

/// `split`'s node (children left for the caller to set), its bitset
/// appended to `sets` as its length then its words.
pub fn node(split: &Split, set: CategorySet, bitsets: &[Vec<u32>], sets: &mut Vec<u32>) -> Result<Node, String> {
    let words = bitsets.get(set.index).ok_or_else(|| format!("category set {} does not exist", set.index))?;
    if split.feature > FEATURE as usize {
        return Err(format!("a split on feature {}", split.feature));
    }
    let start = sets.len() as u32;
    sets.push(words.len() as u32);
    sets.extend(words);
    let flag = |on: bool, bit: u32| if on { bit } else { 0 };
    let feature = split.feature as u32 | SET | flag(split.nan_left, NAN_LEFT) | flag(set.in_set_left, SET_LEFT);
    Ok(Node { threshold: f32::from_bits(start), feature, left: 0, right: 0 })
}

/// Whether `value` goes left at the set split of `feature` (index and
/// flags) whose bitset starts at `sets[start]`.
#[inline]
pub fn goes_left(value: f32, start: usize, feature: u32, sets: &[u32]) -> bool {
    if value.is_nan() {
        return feature & NAN_LEFT != 0;
    }
    let in_set_left = feature & SET_LEFT != 0;
    let valid = if in_set_left { value > -1.0 } else { value >= 0.0 };
    let words = sets[start] as usize;
    // Truncated as the libraries cast; saturating, so a huge value is beyond every set.
    let code = value as u64;
    let in_set =
        valid && ((code / 32) as usize) < words && (sets[start + 1 + (code / 32) as usize] >> (code % 32)) & 1 == 1;
    in_set == in_set_left
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(in_set_left: bool, nan_left: bool, value: f32) -> bool {
        let split = Split {
            feature: 0,
            threshold: 0.0,
            nan_left,
            zero_missing: false,
            default_left: false,
            equal: false,
            set: Some(CategorySet { index: 0, in_set_left }),
        };
        let mut sets = Vec::new();
        let node = node(&split, CategorySet { index: 0, in_set_left }, &[bitset(&[0, 3, 40]).unwrap()], &mut sets);
        let node = node.unwrap();
        goes_left(value, node.threshold.to_bits() as usize, node.feature, &sets)
    }

    #[test]
    fn lightgbm_sends_the_set_left_and_everything_else_right() {
        for (value, left) in [(0.0, true), (3.0, true), (3.9, true), (40.0, true), (1.0, false), (41.0, false)] {
            assert_eq!(walk(true, false, value), left, "{value}");
        }
        // A negative code, one beyond the bitset, and a NaN go right; −0.5 truncates to 0.
        for value in [-1.0, -7.0, 64.0, 1e30, f32::NAN] {
            assert!(!walk(true, false, value), "{value}");
        }
        assert!(walk(true, false, -0.5));
    }

    #[test]
    fn xgboost_sends_the_set_right_and_missing_its_default_way() {
        for (value, left) in [(0.0, false), (3.0, false), (40.0, false), (1.0, true), (41.0, true), (1e9, true)] {
            assert_eq!(walk(false, false, value), left, "{value}");
        }
        assert!(walk(false, false, -0.5), "below zero is no category: left");
        assert!(walk(false, true, f32::NAN) && !walk(false, false, f32::NAN));
    }

    #[test]
    fn codes_beyond_the_bound_are_refused() {
        assert!(bitset(&[MAX_CATEGORY]).unwrap_err().contains("beyond the largest code"));
        assert_eq!(bitset(&[1, 33]).unwrap(), vec![2, 2]);
    }
}
