//! LightGBM's text model format (what `Booster.save_model` writes), read into
//! a `Forest` with LightGBM's own rules: a split goes left when
//! `value <= threshold` (a double); `decision_type` carries the default
//! direction (bit 1) and the missing type (bits 2–3: None, Zero, NaN). With
//! None a NaN counts as 0; with Zero a NaN or a value within ±1e-35 goes the
//! default direction; with NaN only a NaN does. Leaves are summed in f64,
//! then `binary`'s sigmoid (with its `sigmoid:` scale) or `multiclass`'s
//! softmax. A categorical split (decision bit 0) sends the categories in
//! its bitset (`cat_threshold` words between `cat_boundaries`) left; the
//! file's `feature_names` (unless LightGBM's own `Column_<i>`) and a
//! DataFrame's `pandas_categorical` are its schema. Random forest mode
//! (`average_output`) averages the trees. Linear trees are refused, naming
//! where they are.

use super::category_split::CategorySet;
use super::schema::FileSchema;
use super::{Ensemble, Link, Split, Sum, TreeNode, TreeNodes};
use std::collections::HashMap;

/// Reads a LightGBM text model: its trees and what it says about its inputs.
pub fn parse(bytes: &[u8]) -> Result<(Ensemble, FileSchema), String> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| "not a LightGBM text model: the file is not UTF-8 text".to_string())?;
    let ensemble = ensemble(text)?;
    let schema = schema(text, ensemble.features)?;
    Ok((ensemble, schema))
}

/// The feature names (LightGBM names an array's columns `Column_<i>`: no
/// names), the categorical features (their `feature_infos` list category
/// values, not a `[min:max]` range) and a DataFrame's categories.
fn schema(text: &str, features: usize) -> Result<FileSchema, String> {
    let header = pairs(text.split("\nTree=").next().unwrap_or_default());
    let names: Vec<String> = header
        .get("feature_names")
        .map_or_else(Vec::new, |names| names.split_whitespace().map(str::to_string).collect());
    let generated = names.iter().enumerate().all(|(i, name)| *name == format!("Column_{i}"));
    let names = if generated { Vec::new() } else { names };
    if !names.is_empty() && names.len() != features {
        return Err(format!("`feature_names` lists {} names for {features} features", names.len()));
    }
    let infos: Vec<&str> = header.get("feature_infos").map_or_else(Vec::new, |i| i.split_whitespace().collect());
    let categorical: Vec<usize> =
        (0..features).filter(|&f| infos.get(f).is_some_and(|info| !info.starts_with('[') && *info != "none")).collect();
    let pandas = text.lines().find_map(|line| line.strip_prefix("pandas_categorical:")).unwrap_or("null");
    let lists: Option<Vec<Vec<serde_json::Value>>> =
        serde_json::from_str(pandas).map_err(|e| format!("`pandas_categorical` is not a list of lists: {e}"))?;
    let lists = lists.unwrap_or_default();
    if !lists.is_empty() && lists.len() != categorical.len() {
        return Err(format!(
            "`pandas_categorical` lists categories for {} columns but the model has {} categorical features: \
             train with the category columns as pandas `category` dtype only",
            lists.len(),
            categorical.len()
        ));
    }
    let vocabularies = categorical
        .iter()
        .zip(lists)
        .map(|(&feature, values)| {
            let values = values.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect();
            (feature, values)
        })
        .collect();
    Ok(FileSchema { names, categorical, vocabularies, unknown_refused_by: None })
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
    // Random forest mode (`boosting: rf`): the trees' outputs are averaged, not summed.
    let average = header.lines().any(|line| line.trim() == "average_output");
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
    let (mut trees, mut sets) = (Vec::new(), Vec::new());
    for (index, block) in blocks.enumerate() {
        let block = block.split("end of trees").next().unwrap_or_default();
        trees.push(read_tree(block, index, index % groups, &mut sets)?);
    }
    if average && !trees.is_empty() {
        // LightGBM divides each output's sum by the iterations; the leaves
        // are divided instead (the same up to f64 rounding).
        let iterations = (trees.len() / groups).max(1) as f64;
        for tree in &mut trees {
            for node in &mut tree.nodes {
                if let TreeNode::Leaf(value) = node {
                    *value /= iterations;
                }
            }
        }
    }
    Ok(Ensemble {
        trees,
        base: vec![0.0; groups],
        link,
        sum: Sum::F64,
        features,
        kind: format!("lightgbm {}{objective}", if average { "random forest " } else { "" }),
        sets,
    })
}

/// Tree `index`, its categorical splits' bitsets appended to `sets`.
fn read_tree(block: &str, index: usize, group: usize, sets: &mut Vec<Vec<u32>>) -> Result<TreeNodes, String> {
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
        return Ok(TreeNodes { nodes: vec![TreeNode::Leaf(leaf_values[0])], group, covers: vec![1.0] });
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
    // The words of this tree's category bitsets, split `i`'s between boundaries i and i + 1.
    let (boundaries, words): (Vec<usize>, Vec<u32>) = match fields.get("cat_boundaries") {
        Some(list) => {
            (parse_list(list, index, "cat_boundaries")?, parse_list(get("cat_threshold")?, index, "cat_threshold")?)
        }
        None => (Vec::new(), Vec::new()),
    };
    // Internal node i is node i; leaf j (written ~j, i.e. -(j + 1)) follows them.
    let child = |c: i64| if c >= 0 { c as usize } else { splits + (!c) as usize };
    let mut nodes = Vec::with_capacity(splits + leaves);
    for node in 0..splits {
        let decision = decisions[node];
        if features[node] < 0 {
            return Err(format!("tree {index} node {node} splits on feature {}", features[node]));
        }
        if decision & 1 != 0 {
            let set = thresholds[node] as usize;
            let range = boundaries.get(set).zip(boundaries.get(set + 1)).filter(|(a, b)| a <= b && **b <= words.len());
            let Some((&start, &end)) = range else {
                return Err(format!("tree {index} node {node} names category set {set}, which its tree lacks"));
            };
            sets.push(words[start..end].to_vec());
            let set = Some(CategorySet { index: sets.len() - 1, in_set_left: true });
            let split = Split {
                feature: features[node] as usize,
                threshold: 0.0,
                nan_left: false,
                zero_missing: false,
                default_left: false,
                equal: false,
                set,
            };
            nodes.push(TreeNode::Split { split, left: child(lefts[node]), right: child(rights[node]) });
            continue;
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
        let feature = features[node] as usize;
        let split = Split { feature, threshold, nan_left, zero_missing, default_left, equal: false, set: None };
        nodes.push(TreeNode::Split { split, left: child(lefts[node]), right: child(rights[node]) });
    }
    nodes.extend(leaf_values.into_iter().map(TreeNode::Leaf));
    // Row counts, splits then leaves as the nodes are (older files have none).
    let covers = match (fields.get("internal_count"), fields.get("leaf_count")) {
        (Some(internal), Some(leaf)) => {
            let mut covers: Vec<f64> = parse_list(internal, index, "internal_count")?;
            covers.extend(parse_list::<f64>(leaf, index, "leaf_count")?);
            if covers.len() == nodes.len() { covers } else { Vec::new() }
        }
        _ => Vec::new(),
    };
    Ok(TreeNodes { nodes, group, covers })
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
