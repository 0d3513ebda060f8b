//! What a format's reader hands over to be assembled into a `Forest`:
//! trees as plain node lists, each split as the format describes it (a
//! threshold with missing-value rules, or a category set), before
//! `Forest::build` checks and lays them out.

use super::{CategorySet, Link, Sum};

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
    /// Left when the value equals `threshold` (which must be an f32)
    /// instead of when it is at or below it.
    pub equal: bool,
    /// A categorical split instead: the value's category tested against a
    /// set (`threshold` and `equal` unused; a NaN goes as `nan_left`).
    pub set: Option<CategorySet>,
}

/// One tree as a format reads it: node `i` is a split with children
/// (indices into the same tree's nodes) or a leaf.
#[derive(Debug, Default)]
pub struct TreeNodes {
    pub nodes: Vec<TreeNode>,
    /// The output group (class) the tree adds to.
    pub group: usize,
    /// Each node's cover (the training rows' weight that reached it:
    /// XGBoost's hessian sums, LightGBM's row counts), which TreeSHAP uses
    /// to weigh the paths a row did not take; empty when the format keeps none.
    pub covers: Vec<f64>,
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
    /// The bitsets `CategorySet::index` refers to: word `w` bit `b` is category `32w + b`.
    pub sets: Vec<Vec<u32>>,
}
