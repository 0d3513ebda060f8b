//! Tree ensembles evaluated natively (a tree is not a tensor program):
//! XGBoost's JSON/UBJSON models (`xgboost`, with `ubjson` decoding the
//! binary form, both into a compact `document`) and LightGBM's text models (`lightgbm`) both become one
//! `Forest`: every tree's nodes in one flat array of 16-byte nodes, each
//! split's rule and missing-value handling resolved at load to "go left when
//! the f32 value ≤ an f32 threshold" plus flags, exactly, so the request path
//! has no format-specific branches. A pass scores rows in blocks of 64 (each
//! tree's nodes stay in cache across a block), blocks in parallel on the
//! model's compute threads; within a block, 8 rows walk each tree in
//! lockstep with branch-free steps, so the CPU overlaps their independent
//! paths instead of mispredicting each split. Forests of shallow trees
//! (depth ≤ 8, as XGBoost grows them) are also laid out as complete binary
//! trees, where a step loads only the split and computes the child's index.
//! A NaN feature is a missing value and follows the split's default
//! direction, exactly as the library that trained the model. Categorical
//! splits (`category_split`) test a category's code against a bitset; the
//! names a booster file stores for its features and categories are
//! reconciled with model.json by `schema`.

mod category_split;
mod dense;
pub mod document;
mod ensemble;
pub mod lightgbm;
mod link;
pub mod schema;
mod shap;
mod ubjson;
pub mod xgboost;

use super::categories::Categories;
use super::scorer::{Answers, ComputeError, Pass, Scorer, Stages};
pub use category_split::CategorySet;
use dense::Dense;
pub use ensemble::{Ensemble, Split, TreeNode, TreeNodes};
pub use link::Link;
use rayon::prelude::*;
use std::time::Instant;

/// Rows scored together: each tree is walked for all of them before the next.
const BLOCK_ROWS: usize = 64;
/// Rows walked down one tree in lockstep: independent paths the CPU overlaps,
/// each step branch-free.
const LANES: usize = 8;

/// Flags in the high bits of `Node::feature`; the low bits are the feature index.
const LEAF: u32 = 1 << 31;
/// A NaN goes left.
const NAN_LEFT: u32 = 1 << 30;
/// Values within ±1e-35 of zero are missing (LightGBM's `missing_type` Zero)
/// and go the default direction.
const ZERO_MISSING: u32 = 1 << 29;
/// The default direction (for zeros under `ZERO_MISSING`) is left.
const DEFAULT_LEFT: u32 = 1 << 28;
/// Left when the value equals the threshold (ONNX's BRANCH_EQ, a category
/// test) instead of when it is at or below it.
const EQUAL: u32 = 1 << 27;
/// A categorical split: the threshold's bits are where its bitset starts
/// in `Forest::sets`; a NaN goes as `NAN_LEFT` says.
const SET: u32 = 1 << 26;
/// At a `SET` split, the categories in the set go left (LightGBM) rather
/// than right (XGBoost).
const SET_LEFT: u32 = 1 << 25;
const FEATURE: u32 = SET_LEFT - 1;

/// LightGBM's `kZeroThreshold` (the float 1e-35): a value `v` is zero when
/// `-1e-35 < v <= 1e-35`.
const ZERO_THRESHOLD: f32 = 1e-35;

/// One node of one tree in 16 bytes. A split goes to `left` when the value
/// is ≤ `threshold` (every split rule is resolved to this at load, exactly:
/// rows are f32). A leaf points to itself both ways, so a walk may step past
/// it; its value is in `Forest::leaves` at the node's index.
#[derive(Debug, Clone, Copy)]
struct Node {
    threshold: f32,
    /// The feature index and the flags above.
    feature: u32,
    left: u32,
    right: u32,
}

impl Node {
    /// The child a row whose feature values start at `row[at]` goes to,
    /// without a branch. `SPECIAL`: the forest has zero-as-missing or
    /// equality splits (compiled apart: most forests have neither).
    #[inline(always)]
    fn next<const SPECIAL: bool>(&self, row: &[f32], at: usize, sets: &[u32]) -> u32 {
        let left = goes_left::<SPECIAL>(self.threshold, self.feature, row, at, sets);
        self.right ^ ((self.left ^ self.right) & 0u32.wrapping_sub(u32::from(left)))
    }
}

/// Whether the row whose values start at `row[at]` goes left at a split of
/// `threshold` and `feature` (index and flags), computed without a branch
/// (but for categorical splits, which look their bitset up in `sets`).
#[inline(always)]
fn goes_left<const SPECIAL: bool>(threshold: f32, feature: u32, row: &[f32], at: usize, sets: &[u32]) -> bool {
    let value = row[at + (feature & FEATURE) as usize];
    let nan = value.is_nan();
    let below = value <= threshold;
    if SPECIAL && feature & SET != 0 {
        category_split::goes_left(value, threshold.to_bits() as usize, feature, sets)
    } else if SPECIAL {
        let hit = below & ((feature & EQUAL == 0) | (value >= threshold));
        let zero = (feature & ZERO_MISSING != 0) & (value > -ZERO_THRESHOLD) & (value <= ZERO_THRESHOLD);
        (nan & (feature & NAN_LEFT != 0)) | (zero & (feature & DEFAULT_LEFT != 0)) | (!zero & hit)
    } else {
        (nan & (feature & NAN_LEFT != 0)) | below
    }
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
    /// The leaf values, at their nodes' indices (0 for splits).
    leaves: Vec<f64>,
    /// Each tree's root in `nodes`, its depth, and the margin (class) it adds to.
    trees: Vec<Tree>,
    /// The starting margin per output group.
    base: Vec<f64>,
    link: Link,
    sum: Sum,
    /// The bitsets of categorical splits, each its length then its words.
    sets: Vec<u32>,
    /// Each node's cover (positive), for TreeSHAP; empty when a tree has none.
    covers: Vec<f64>,
    /// Whether any split treats zeros as missing, tests equality or a category set.
    special: bool,
    /// Per feature, the categories callers name (a booster's categorical
    /// features whose vocabulary is known); empty when there are none.
    categories: Vec<Option<Categories>>,
    /// The same trees as complete binary trees, when all are shallow.
    dense: Option<Dense>,
    inputs: usize,
    description: Vec<String>,
}

/// Where a tree starts in `Forest::nodes`.
#[derive(Debug, Clone, Copy)]
struct Tree {
    root: u32,
    /// The longest path from the root to a leaf, in steps.
    depth: u32,
    group: u32,
}

impl Forest {
    /// Assembles `ensemble` for `inputs` features answering `answers` (as
    /// model.json says), checking every tree: children in range, no
    /// cycles (each node reached once), splits on a feature that exists.
    pub fn build(ensemble: Ensemble, inputs: usize, answers: Answers) -> Result<Forest, String> {
        let Ensemble { trees, base, link, sum, features, kind, sets: bitsets } = ensemble;
        let groups = base.len();
        let expected = link.classes(groups);
        let classes = match answers {
            Answers::Value if link.answers_value() && groups == 1 => 1,
            Answers::Value => return Err(format!("the model ({kind}) is a classifier, not a regressor")),
            Answers::Classes(_) if link.answers_value() && groups == 1 => {
                return Err(format!(
                    "the model ({kind}) is a regressor, answering one value per row: say \"task\": \"regression\" in model.json, without labels"
                ));
            }
            Answers::Classes(classes) => classes,
        };
        if classes != expected || (matches!(link, Link::Sigmoid { .. } | Link::Complement) && groups != 1) {
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
        let mut leaves = Vec::new();
        let mut sets = Vec::new();
        let mut covers = Vec::new();
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
            if tree.covers.len() == tree.nodes.len() && tree.covers.iter().all(|c| *c > 0.0 && c.is_finite()) {
                covers.extend(&tree.covers);
            }
            let at = |child: usize| -> Result<u32, String> {
                if child >= tree.nodes.len() {
                    return Err(format!("tree {index} names node {child}, beyond its {} nodes", tree.nodes.len()));
                }
                Ok((offset + child) as u32)
            };
            let mut largest_leaf = 0.0f64;
            for (position, node) in tree.nodes.iter().enumerate() {
                let here = (offset + position) as u32;
                let (node, leaf) = match *node {
                    TreeNode::Leaf(value) if value.is_finite() => {
                        largest_leaf = largest_leaf.max(value.abs());
                        (Node { threshold: 0.0, feature: LEAF, left: here, right: here }, value)
                    }
                    TreeNode::Leaf(value) => {
                        return Err(format!(
                            "tree {index} node {position} is a leaf of value {value}; leaves must be finite"
                        ));
                    }
                    TreeNode::Split { split, left, right } => {
                        if split.feature >= inputs || split.feature > FEATURE as usize {
                            return Err(format!(
                                "tree {index} node {position} splits on feature {}, but model.json lists {inputs} features",
                                split.feature
                            ));
                        }
                        if let Some(set) = split.set {
                            let node = category_split::node(&split, set, &bitsets, &mut sets)
                                .map_err(|e| format!("tree {index} node {position}: {e}"))?;
                            nodes.push(Node { left: at(left)?, right: at(right)?, ..node });
                            leaves.push(0.0);
                            continue;
                        }
                        if split.threshold.is_nan() {
                            return Err(format!("tree {index} node {position} has a NaN threshold"));
                        }
                        if split.equal && f64::from(split.threshold as f32) != split.threshold {
                            return Err(format!(
                                "tree {index} node {position} tests equality with {}, which no f32 feature equals",
                                split.threshold
                            ));
                        }
                        let flag = |on: bool, bit: u32| if on { bit } else { 0 };
                        let feature = split.feature as u32
                            | flag(split.nan_left, NAN_LEFT)
                            | flag(split.zero_missing, ZERO_MISSING)
                            | flag(split.default_left, DEFAULT_LEFT)
                            | flag(split.equal, EQUAL);
                        let node = Node {
                            threshold: at_or_below(split.threshold),
                            feature,
                            left: at(left)?,
                            right: at(right)?,
                        };
                        (node, 0.0)
                    }
                };
                nodes.push(node);
                leaves.push(leaf);
            }
            let depth = check_tree(&nodes[offset..], offset, index)?;
            depth_max = depth_max.max(depth);
            largest += largest_leaf;
            roots.push(Tree { root: offset as u32, depth: depth as u32, group: tree.group as u32 });
        }
        if largest >= f64::from(f32::MAX) / 2.0 {
            return Err(format!("its leaves can sum to {largest:e}, beyond f32's range: the model is corrupt"));
        }
        let answer = match answers {
            Answers::Value => "a value".to_string(),
            Answers::Classes(classes) => format!("{classes} classes"),
        };
        let description =
            vec![format!("{kind}: {} trees, {} nodes, depth ≤ {depth_max}, {answer}", roots.len(), nodes.len())];
        if covers.len() != nodes.len() {
            covers.clear();
        }
        let special = nodes.iter().any(|n| n.feature & LEAF == 0 && n.feature & (ZERO_MISSING | EQUAL | SET) != 0);
        let mut forest = Forest {
            nodes,
            leaves,
            trees: roots,
            base,
            link,
            sum,
            sets,
            covers,
            special,
            categories: Vec::new(),
            dense: None,
            inputs,
            description,
        };
        forest.dense = Dense::of(&forest);
        Ok(forest)
    }

    /// The forest with callers naming the categories of the features that
    /// have them (their codes are what the splits test).
    pub fn with_categories(mut self, categories: Vec<Option<Categories>>) -> Forest {
        self.categories = if categories.iter().any(Option::is_some) { categories } else { Vec::new() };
        self
    }

    /// Walks `LANES` consecutive rows of `rows` (from row `first`) down
    /// `tree` in lockstep, each step branch-free (a leaf absorbs the steps
    /// left), until all have reached their leaves or the tree's depth is
    /// walked; returns the leaf nodes they reach.
    #[inline(always)]
    fn walk<const SPECIAL: bool>(&self, tree: &Tree, rows: &[f32], first: usize) -> [u32; LANES] {
        let mut at = [tree.root; LANES];
        for _ in 0..tree.depth {
            let mut moved = false;
            for (lane, at) in at.iter_mut().enumerate() {
                let next = self.nodes[*at as usize].next::<SPECIAL>(rows, (first + lane) * self.inputs, &self.sets);
                moved |= next != *at;
                *at = next;
            }
            // Every lane at its leaf: the rest of an unbalanced tree's depth is idle.
            if !moved {
                break;
            }
        }
        at
    }

    /// Scores one block of rows into `out` (`classes` probabilities per row).
    fn block(&self, rows: &[f32], out: &mut [f32]) {
        let margins = match (self.sum, self.special) {
            (Sum::F32, false) => self.margins::<true, false>(rows),
            (Sum::F32, true) => self.margins::<true, true>(rows),
            (Sum::F64, false) => self.margins::<false, false>(rows),
            (Sum::F64, true) => self.margins::<false, true>(rows),
        };
        self.link.apply(&margins, self.base.len(), out);
    }

    /// The margins of a block of rows, `groups` per row: leaves summed in
    /// f32 (`F32`, XGBoost) or f64 (LightGBM), compiled apart so the inner
    /// loops carry no choice.
    fn margins<const F32: bool, const SPECIAL: bool>(&self, rows: &[f32]) -> Vec<f64> {
        let groups = self.base.len();
        let count = rows.len() / self.inputs;
        let mut margins: Vec<f64> = self.base.iter().copied().cycle().take(count * groups).collect();
        let add = |margin: &mut f64, leaf: f64| {
            *margin = if F32 { f64::from(*margin as f32 + leaf as f32) } else { *margin + leaf };
        };
        let whole = count - count % LANES;
        for first in (0..whole).step_by(LANES) {
            for (index, tree) in self.trees.iter().enumerate() {
                let values = match &self.dense {
                    Some(dense) => dense.walk::<SPECIAL>(tree, index, rows, first, self.inputs, &self.sets),
                    None => self.walk::<SPECIAL>(tree, rows, first).map(|leaf| self.leaves[leaf as usize]),
                };
                let group = tree.group as usize;
                for (lane, value) in values.into_iter().enumerate() {
                    add(&mut margins[(first + lane) * groups + group], value);
                }
            }
        }
        // The last rows (a single row, say) one at a time, each stopping at its leaf.
        for r in whole..count {
            for tree in &self.trees {
                let mut at = tree.root;
                while self.nodes[at as usize].feature & LEAF == 0 {
                    at = self.nodes[at as usize].next::<SPECIAL>(rows, r * self.inputs, &self.sets);
                }
                add(&mut margins[r * groups + tree.group as usize], self.leaves[at as usize]);
            }
        }
        margins
    }
}

/// The largest f32 at or below `threshold`: for an f32 value `v`,
/// `v <= threshold` exactly when `v <= at_or_below(threshold)`.
fn at_or_below(threshold: f64) -> f32 {
    let nearest = threshold as f32;
    if f64::from(nearest) > threshold { nearest.next_down() } else { nearest }
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
        if n.feature & LEAF == 0 {
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

    fn outputs(&self) -> usize {
        self.link.classes(self.base.len())
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

    fn on_cpu(&self) -> bool {
        true
    }

    fn categories(&self, feature: usize) -> Option<&Categories> {
        self.categories.get(feature).and_then(Option::as_ref)
    }

    fn inputs_by_name(&self) -> bool {
        !self.categories.is_empty()
    }

    fn forward(&self, values: &[f32]) -> Result<Pass, ComputeError> {
        let start = Instant::now();
        let (inputs, classes) = (self.inputs, self.outputs());
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
        // `build` bounds every sum of leaves; only a log-link's e^margin can
        // leave f32's range (one value per row).
        let overflowed = match self.link {
            Link::Exp => (0..rows).filter(|&r| !probabilities[r].is_finite()).collect(),
            _ => Vec::new(),
        };
        Ok(Pass { probabilities, stages, overflowed })
    }

    fn contributions(&self, values: &[f32]) -> Option<Vec<f32>> {
        shap::contributions(self, values)
    }

    fn explains_itself(&self) -> bool {
        !self.covers.is_empty()
    }

    fn blame(&self, _row: &[f32]) -> Vec<usize> {
        // No single feature explains a sum of many trees' leaves.
        Vec::new()
    }
}
