//! Tree ensembles evaluated natively (a tree is not a tensor program):
//! XGBoost's JSON/UBJSON models (`xgboost`, with `ubjson` decoding the
//! binary form) and LightGBM's text models (`lightgbm`) both become one
//! `Forest`: every tree's nodes in one flat array, each node's split and
//! missing-value rule resolved at load to "go left when value ≤ threshold",
//! so the request path walks compact nodes with one comparison and no
//! format-specific branches. A pass scores rows in blocks (each tree's nodes
//! stay in cache across a block), blocks in parallel on the model's compute
//! threads. A NaN feature is a missing value and follows the node's default
//! direction, exactly as the library that trained the model.

pub mod lightgbm;
mod ubjson;
pub mod xgboost;

use super::scorer::{ComputeError, Pass, Scorer, Stages};
use rayon::prelude::*;
use std::time::Instant;

/// Rows scored together: each tree is walked for all of them before the next.
const BLOCK_ROWS: usize = 64;

/// A node's flags.
const LEAF: u8 = 1;
/// A NaN goes left.
const NAN_LEFT: u8 = 2;
/// Values within ±1e-35 of zero are missing (LightGBM's `missing_type` Zero)
/// and go the default direction.
const ZERO_MISSING: u8 = 4;
/// The default direction (for zeros under `ZERO_MISSING`) is left.
const DEFAULT_LEFT: u8 = 8;

/// LightGBM's `kZeroThreshold` (a float constant widened to double).
const ZERO_THRESHOLD: f64 = 1e-35_f32 as f64;

/// One node of one tree: a split, or a leaf holding its value in `value`.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// A split's threshold (left when value ≤ it), or a leaf's value.
    value: f64,
    feature: u32,
    left: u32,
    right: u32,
    flags: u8,
}

/// How summed margins become probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Link {
    /// One margin per row: P(labels[1]) = 1 / (1 + e^(−scale·margin)).
    Sigmoid { scale: f64 },
    /// One margin per class: softmax.
    Softmax,
}

/// The arithmetic a library sums leaves in; answers match it bit for bit
/// before the link function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sum {
    /// XGBoost: f32, tree by tree, starting from the base margin.
    F32,
    /// LightGBM: f64.
    F64,
}

/// A tree ensemble ready to score.
#[derive(Debug)]
pub struct Forest {
    nodes: Vec<Node>,
    /// Each tree's root in `nodes`, and the margin (class) it adds to.
    trees: Vec<(u32, u32)>,
    /// The starting margin per output group.
    base: Vec<f64>,
    link: Link,
    sum: Sum,
    inputs: usize,
    description: Vec<String>,
}

/// A split as a format describes it, before it is resolved into a `Node`.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    pub feature: usize,
    /// Left when value ≤ this.
    pub threshold: f64,
    /// Where a NaN goes.
    pub nan_left: bool,
    /// LightGBM's zero-as-missing: values within ±1e-35 go the default direction.
    pub zero_missing: bool,
    pub default_left: bool,
}

/// One tree as a format reads it: node `i` is a split with children
/// (indices into the same tree's nodes) or a leaf.
#[derive(Debug, Default)]
pub struct TreeNodes {
    pub nodes: Vec<TreeNode>,
    /// The output group (class) the tree adds to.
    pub group: usize,
}

#[derive(Debug, Clone, Copy)]
pub enum TreeNode {
    Split { split: Split, left: usize, right: usize },
    Leaf(f64),
}

/// What a format read, to assemble into a `Forest`.
pub struct Ensemble {
    pub trees: Vec<TreeNodes>,
    pub base: Vec<f64>,
    pub link: Link,
    pub sum: Sum,
    /// Features the model was trained on (its splits index below it).
    pub features: usize,
    /// E.g. `xgboost binary:logistic`.
    pub kind: String,
}

impl Forest {
    /// Assembles `ensemble` for `inputs` features and `classes` labels (as
    /// model.json lists them), checking every tree: children in range, no
    /// cycles (each node reached once), splits on a feature that exists.
    pub fn build(ensemble: Ensemble, inputs: usize, classes: usize) -> Result<Forest, String> {
        let Ensemble { trees, base, link, sum, features, kind } = ensemble;
        let groups = base.len();
        let expected = match link {
            Link::Sigmoid { .. } => 2,
            Link::Softmax => groups,
        };
        if classes != expected || (matches!(link, Link::Sigmoid { .. }) && groups != 1) {
            return Err(format!(
                "the model ({kind}) gives {expected} class probabilities but model.json lists {classes} labels; they must be equal, in the model's class order"
            ));
        }
        if features != inputs {
            return Err(format!(
                "the model was trained on {features} features but model.json lists {inputs}; list every feature, in the training column order"
            ));
        }
        if trees.is_empty() {
            return Err("the model has no trees".into());
        }
        let mut nodes = Vec::new();
        let mut roots = Vec::with_capacity(trees.len());
        let mut depth_max = 0;
        // The largest margin any row can reach: bounded, no sum overflows.
        let mut largest = base.iter().map(|b| b.abs()).fold(0.0, f64::max);
        for (index, tree) in trees.iter().enumerate() {
            if tree.group >= groups {
                return Err(format!("tree {index} adds to output {} of {groups}", tree.group));
            }
            if tree.nodes.is_empty() {
                return Err(format!("tree {index} has no nodes"));
            }
            let offset = nodes.len();
            let at = |child: usize| -> Result<u32, String> {
                if child >= tree.nodes.len() {
                    return Err(format!("tree {index} names node {child}, beyond its {} nodes", tree.nodes.len()));
                }
                Ok((offset + child) as u32)
            };
            for (position, node) in tree.nodes.iter().enumerate() {
                nodes.push(match *node {
                    TreeNode::Leaf(value) if value.is_finite() => {
                        Node { value, feature: 0, left: 0, right: 0, flags: LEAF }
                    }
                    TreeNode::Leaf(value) => {
                        return Err(format!("tree {index} node {position} is a leaf of value {value}; leaves must be finite"));
                    }
                    TreeNode::Split { split, left, right } => {
                        if split.feature >= inputs {
                            return Err(format!(
                                "tree {index} node {position} splits on feature {}, but model.json lists {inputs} features",
                                split.feature
                            ));
                        }
                        if split.threshold.is_nan() {
                            return Err(format!("tree {index} node {position} has a NaN threshold"));
                        }
                        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
                        let flags = flag(split.nan_left, NAN_LEFT)
                            | flag(split.zero_missing, ZERO_MISSING)
                            | flag(split.default_left, DEFAULT_LEFT);
                        Node { value: split.threshold, feature: split.feature as u32, left: at(left)?, right: at(right)?, flags }
                    }
                });
            }
            depth_max = depth_max.max(check_tree(&nodes[offset..], offset, index)?);
            largest +=
                nodes[offset..].iter().filter(|n| n.flags & LEAF != 0).map(|n| n.value.abs()).fold(0.0, f64::max);
            roots.push((offset as u32, tree.group as u32));
        }
        if largest >= f64::from(f32::MAX) / 2.0 {
            return Err(format!("its leaves can sum to {largest:e}, beyond f32's range: the model is corrupt"));
        }
        let description = vec![format!(
            "{kind}: {} trees, {} nodes, depth ≤ {depth_max}, {classes} classes",
            roots.len(),
            nodes.len()
        )];
        Ok(Forest { nodes, trees: roots, base, link, sum, inputs, description })
    }

    /// The leaf value `row` reaches in the tree rooted at `root`.
    #[inline]
    fn leaf(&self, root: u32, row: &[f32]) -> f64 {
        let mut node = &self.nodes[root as usize];
        while node.flags & LEAF == 0 {
            let value = row[node.feature as usize];
            let left = if value.is_nan() {
                node.flags & NAN_LEFT != 0
            } else {
                let value = f64::from(value);
                if node.flags & ZERO_MISSING != 0 && value > -ZERO_THRESHOLD && value <= ZERO_THRESHOLD {
                    node.flags & DEFAULT_LEFT != 0
                } else {
                    value <= node.value
                }
            };
            node = &self.nodes[if left { node.left } else { node.right } as usize];
        }
        node.value
    }

    /// Scores one block of rows into `out` (`classes` probabilities per row).
    fn block(&self, rows: &[f32], out: &mut [f32]) {
        let groups = self.base.len();
        let count = rows.len() / self.inputs;
        let mut margins: Vec<f64> = self.base.iter().copied().cycle().take(count * groups).collect();
        for &(root, group) in &self.trees {
            let group = group as usize;
            for (row, margin) in rows.chunks_exact(self.inputs).zip(margins.chunks_exact_mut(groups)) {
                let leaf = self.leaf(root, row);
                let margin = &mut margin[group];
                *margin = match self.sum {
                    Sum::F32 => f64::from(*margin as f32 + leaf as f32),
                    Sum::F64 => *margin + leaf,
                };
            }
        }
        match self.link {
            Link::Sigmoid { scale } => {
                for (margin, out) in margins.iter().zip(out.chunks_exact_mut(2)) {
                    let p = 1.0 / (1.0 + (-scale * margin).exp());
                    out[0] = (1.0 - p) as f32;
                    out[1] = p as f32;
                }
            }
            Link::Softmax => {
                for (margin, out) in margins.chunks_exact(groups).zip(out.chunks_exact_mut(groups)) {
                    let top = margin.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let total: f64 = margin.iter().map(|m| (m - top).exp()).sum();
                    for (m, p) in margin.iter().zip(out) {
                        *p = ((m - top).exp() / total) as f32;
                    }
                }
            }
        }
    }
}

/// Walks one tree from its root (`nodes[0]`, absolute indices offset by
/// `offset`): every node must be reached exactly once, so a malformed file
/// cannot make a cycle the request path would loop in. Returns the depth.
fn check_tree(nodes: &[Node], offset: usize, index: usize) -> Result<usize, String> {
    let mut seen = vec![false; nodes.len()];
    let mut stack = vec![(0usize, 0usize)];
    let mut depth = 0;
    while let Some((node, level)) = stack.pop() {
        if std::mem::replace(&mut seen[node], true) {
            return Err(format!(
                "tree {index} reaches node {node} twice: its children form a cycle or a shared branch"
            ));
        }
        depth = depth.max(level);
        let n = nodes[node];
        if n.flags & LEAF == 0 {
            stack.push((n.left as usize - offset, level + 1));
            stack.push((n.right as usize - offset, level + 1));
        }
    }
    if let Some(orphan) = seen.iter().position(|s| !s) {
        return Err(format!("tree {index} node {orphan} is not reachable from the root"));
    }
    Ok(depth)
}

impl Scorer for Forest {
    fn inputs(&self) -> usize {
        self.inputs
    }

    fn classes(&self) -> usize {
        match self.link {
            Link::Sigmoid { .. } => 2,
            Link::Softmax => self.base.len(),
        }
    }

    fn description(&self) -> &[String] {
        &self.description
    }

    fn dtype(&self) -> &'static str {
        match self.sum {
            Sum::F32 => "f32",
            Sum::F64 => "f64",
        }
    }

    fn accepts_missing(&self) -> bool {
        true
    }

    fn forward(&self, values: &[f32]) -> Result<Pass, ComputeError> {
        let start = Instant::now();
        let (inputs, classes) = (self.inputs, self.classes());
        let rows = values.len() / inputs;
        let mut probabilities = vec![0.0f32; rows * classes];
        let (in_block, out_block) = (BLOCK_ROWS * inputs, BLOCK_ROWS * classes);
        if rows > BLOCK_ROWS {
            values
                .par_chunks(in_block)
                .zip(probabilities.par_chunks_mut(out_block))
                .for_each(|(rows, out)| self.block(rows, out));
        } else {
            self.block(values, &mut probabilities);
        }
        let stages = Stages { infer: start.elapsed(), ..Stages::default() };
        Ok(Pass { probabilities, stages, overflowed: Vec::new() })
    }

    fn blame(&self, _row: &[f32]) -> Vec<usize> {
        // Never called: `build` bounds every sum of leaves, so no row overflows.
        Vec::new()
    }
}
