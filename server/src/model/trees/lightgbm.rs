//! LightGBM's text model format (what `Booster.save_model` writes), read into
//! a `Forest` with LightGBM's own rules: a split goes left when
//! `value <= threshold` (a double); `decision_type` carries the default
//! direction (bit 1) and the missing type (bits 2–3: None, Zero, NaN). With
//! None a NaN counts as 0; with Zero a NaN or a value within ±1e-35 goes the
//! default direction; with NaN only a NaN does. Leaves are summed in f64,
//! then `binary`'s sigmoid (with its `sigmoid:` scale) or `multiclass`'s
//! softmax. Categorical splits, linear trees and averaged (random forest)
//! output are refused, naming where they are.

use super::{Ensemble, Forest, Link, Split, Sum, TreeNode, TreeNodes};
use crate::model::scorer::Answers;
use std::collections::HashMap;

/// Reads a LightGBM text model for `inputs` features answering `answers`.
pub fn parse(bytes: &[u8], inputs: usize, answers: Answers) -> Result<Forest, String> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| "not a LightGBM text model: the file is not UTF-8 text".to_string())?;
    Forest::build(ensemble(text)?, inputs, answers)
}

fn ensemble(text: &str) -> Result<Ensemble, String> {
    let mut blocks = text.split("\nTree=");
    let header = blocks.next().unwrap_or_default();
    if !header.starts_with("tree") {
        return Err(
            "not a LightGBM text model: it must start with the line `tree` (save it with `booster.save_model(path)`)"
                .into(),
        );
    }
    if header.lines().any(|line| line.trim() == "average_output") {
        return Err(
            "the model averages its trees (random forest mode), which is not supported: train with boosting `gbdt`"
                .into(),
        );
    }
    let header = pairs(header);
    let get = |key: &str| header.get(key).copied().ok_or_else(|| format!("not a LightGBM model: `{key}=` is missing"));
    let features = parse_one::<usize>(get("max_feature_idx")?, "max_feature_idx")? + 1;
    let per_iteration = parse_one::<usize>(get("num_tree_per_iteration")?, "num_tree_per_iteration")?;
    let objective = get("objective")?;
    let mut words = objective.split_whitespace();
    let (link, groups) = match words.next() {
        Some("binary") => {
            let scale =
                words.find_map(|w| w.strip_prefix("sigmoid:")).map(|s| parse_one::<f64>(s, "sigmoid")).transpose()?;
            (Link::Sigmoid { scale: scale.unwrap_or(1.0) }, 1)
        }
        Some("multiclass") => (Link::Softmax, parse_one::<usize>(get("num_class")?, "num_class")?),
        // Regressors: the sum itself, or through the objective's inverse link.
        Some("regression" | "regression_l1" | "huber" | "fair" | "quantile" | "mape")
            if !objective.contains("sqrt") =>
        {
            (Link::Identity, 1)
        }
        Some("poisson" | "gamma" | "tweedie") => (Link::Exp, 1),
        Some("cross_entropy") => (Link::Logistic, 1),
        _ => {
            return Err(format!(
                "objective `{objective}` is not supported: Candela serves LightGBM classifiers trained with `binary` or \
                 `multiclass` and regressors trained with `regression` (without `reg_sqrt`), `regression_l1`, `huber`, \
                 `fair`, `quantile`, `mape`, `poisson`, `gamma`, `tweedie` or `cross_entropy`"
            ));
        }
    };
    if per_iteration != groups {
        return Err(format!("num_tree_per_iteration is {per_iteration} for {groups} output(s)"));
    }
    let mut trees = Vec::new();
    for (index, block) in blocks.enumerate() {
        let block = block.split("end of trees").next().unwrap_or_default();
        trees.push(read_tree(block, index, index % groups)?);
    }
    Ok(Ensemble {
        trees,
        base: vec![0.0; groups],
        link,
        sum: Sum::F64,
        features,
        kind: format!("lightgbm {objective}"),
    })
}

fn read_tree(block: &str, index: usize, group: usize) -> Result<TreeNodes, String> {
    let fields = pairs(block);
    let get = |key: &str| fields.get(key).copied().ok_or_else(|| format!("tree {index}: `{key}=` is missing"));
    let leaves: usize = parse_one(get("num_leaves")?, "num_leaves")?;
    let leaf_values: Vec<f64> = parse_list(get("leaf_value")?, index, "leaf_value")?;
    if leaf_values.len() != leaves || leaves == 0 {
        return Err(format!("tree {index}: {} leaf values for {leaves} leaves", leaf_values.len()));
    }
    if fields.get("is_linear").is_some_and(|v| v.trim() == "1") {
        return Err(format!("tree {index} is a linear tree (`linear_tree`), which is not supported"));
    }
    if leaves == 1 {
        return Ok(TreeNodes { nodes: vec![TreeNode::Leaf(leaf_values[0])], group });
    }
    let splits = leaves - 1;
    let features: Vec<i64> = parse_list(get("split_feature")?, index, "split_feature")?;
    let thresholds: Vec<f64> = parse_list(get("threshold")?, index, "threshold")?;
    let decisions: Vec<u8> = parse_list(get("decision_type")?, index, "decision_type")?;
    let lefts: Vec<i64> = parse_list(get("left_child")?, index, "left_child")?;
    let rights: Vec<i64> = parse_list(get("right_child")?, index, "right_child")?;
    if [features.len(), thresholds.len(), decisions.len(), lefts.len(), rights.len()].iter().any(|&n| n != splits) {
        return Err(format!("tree {index}: its split arrays do not all have {splits} entries"));
    }
    // Internal node i is node i; leaf j (written ~j, i.e. -(j + 1)) follows them.
    let child = |c: i64| if c >= 0 { c as usize } else { splits + (!c) as usize };
    let mut nodes = Vec::with_capacity(splits + leaves);
    for node in 0..splits {
        let decision = decisions[node];
        if decision & 1 != 0 {
            return Err(format!(
                "tree {index} node {node} is a categorical split, which Candela does not evaluate: train with numerical features (no `categorical_feature`)"
            ));
        }
        if features[node] < 0 {
            return Err(format!("tree {index} node {node} splits on feature {}", features[node]));
        }
        let default_left = decision & 2 != 0;
        let threshold = thresholds[node];
        let (nan_left, zero_missing) = match (decision >> 2) & 3 {
            // None: a NaN is taken as 0 and compared.
            0 => (0.0 <= threshold, false),
            // Zero: a NaN becomes 0, which is missing.
            1 => (default_left, true),
            2 => (default_left, false),
            other => return Err(format!("tree {index} node {node} has missing type {other}")),
        };
        let split =
            Split { feature: features[node] as usize, threshold, nan_left, zero_missing, default_left, equal: false };
        nodes.push(TreeNode::Split { split, left: child(lefts[node]), right: child(rights[node]) });
    }
    nodes.extend(leaf_values.into_iter().map(TreeNode::Leaf));
    Ok(TreeNodes { nodes, group })
}

/// `key=value` lines.
fn pairs(text: &str) -> HashMap<&str, &str> {
    text.lines().filter_map(|line| line.split_once('=')).map(|(k, v)| (k.trim(), v.trim())).collect()
}

fn parse_one<T: std::str::FromStr>(value: &str, name: &str) -> Result<T, String> {
    value.trim().parse().map_err(|_| format!("`{name}={value}` is not a valid value"))
}

fn parse_list<T: std::str::FromStr>(value: &str, index: usize, name: &str) -> Result<Vec<T>, String> {
    value
        .split_whitespace()
        .map(|item| item.parse().map_err(|_| format!("tree {index}: `{name}` holds `{item}`, not a number")))
        .collect()
}
