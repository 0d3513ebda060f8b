//! Shallow forests laid out again as complete binary trees, where a step
//! loads only the split and computes the child's index.

use super::{Forest, LANES, LEAF, NAN_LEFT, Tree, goes_left};

/// Trees no deeper than this are also laid out as complete binary trees.
const DENSE_DEPTH: u32 = 8;

/// The forest again, every tree as a complete binary tree of its depth
/// (XGBoost's depth-wise trees are nearly so): the children of slot `i` are
/// `2i + 1` and `2i + 2`, so a step loads only the split (8 bytes) and
/// computes where to go; a leaf above the bottom level is copied down
/// through splits that always go left.
#[derive(Debug)]
pub(super) struct Dense {
    /// Per tree, `2^depth − 1` splits: threshold and feature (with flags).
    splits: Vec<(f32, u32)>,
    /// Per tree, `2^depth` leaf values.
    leaves: Vec<f64>,
    /// Per tree (as `Forest::trees`): where its splits and leaves start.
    starts: Vec<(usize, usize)>,
}

impl Dense {
    /// `forest`'s trees as complete binary trees, if none is deeper than `DENSE_DEPTH`.
    pub(super) fn of(forest: &Forest) -> Option<Dense> {
        if forest.trees.iter().any(|t| t.depth > DENSE_DEPTH) {
            return None;
        }
        let mut dense = Dense { splits: Vec::new(), leaves: Vec::new(), starts: Vec::new() };
        for tree in &forest.trees {
            let (splits, leaves) = (dense.splits.len(), dense.leaves.len());
            dense.starts.push((splits, leaves));
            dense.splits.resize(splits + (1 << tree.depth) - 1, (f32::INFINITY, NAN_LEFT));
            dense.leaves.resize(leaves + (1 << tree.depth), 0.0);
            dense.fill(forest, tree, tree.root, 0, 0, (splits, leaves));
        }
        Some(dense)
    }

    /// Places linked node `node` at slot `slot` of level `level`.
    fn fill(
        &mut self,
        forest: &Forest,
        tree: &Tree,
        node: u32,
        slot: usize,
        level: u32,
        (splits, leaves): (usize, usize),
    ) {
        let n = forest.nodes[node as usize];
        if level == tree.depth {
            self.leaves[leaves + slot - ((1 << tree.depth) - 1)] = forest.leaves[node as usize];
            return;
        }
        let (left, right) = if n.feature & LEAF != 0 {
            // A shallow leaf: an always-left pass-through (the default split), both children the leaf.
            (node, node)
        } else {
            self.splits[splits + slot] = (n.threshold, n.feature);
            (n.left, n.right)
        };
        self.fill(forest, tree, left, 2 * slot + 1, level + 1, (splits, leaves));
        self.fill(forest, tree, right, 2 * slot + 2, level + 1, (splits, leaves));
    }

    /// As `Forest::walk`, for tree `index`: returns leaf values.
    #[inline(always)]
    pub(super) fn walk<const SPECIAL: bool>(
        &self,
        tree: &Tree,
        index: usize,
        rows: &[f32],
        first: usize,
        inputs: usize,
        sets: &[u32],
    ) -> [f64; LANES] {
        let (splits, leaves) = self.starts[index];
        let splits = &self.splits[splits..];
        let mut at = [0usize; LANES];
        for _ in 0..tree.depth {
            for (lane, at) in at.iter_mut().enumerate() {
                let (threshold, feature) = splits[*at];
                let left = goes_left::<SPECIAL>(threshold, feature, rows, (first + lane) * inputs, sets);
                *at = 2 * *at + 2 - usize::from(left);
            }
        }
        let bottom = (1 << tree.depth) - 1;
        std::array::from_fn(|lane| self.leaves[leaves + at[lane] - bottom])
    }
}
