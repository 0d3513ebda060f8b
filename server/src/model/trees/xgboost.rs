//! XGBoost's model format (what `Booster.save_model` writes: JSON, or UBJSON
//! for a `.ubj` file), read into a `Forest` with XGBoost's own rules: a
//! split goes left when `value < split_condition` (both f32), a missing
//! value (NaN) follows the node's `default_left`, margins are summed in f32
//! from the base score (a probability for `binary:logistic`, turned into a
//! margin as XGBoost does; margins per class for `multi:softprob`), then the
//! objective's transform. A categorical split (`split_type` 1) sends the
//! categories it lists right, any other category left and a missing one its
//! default way; the learner's `feature_names`, `feature_types` (`c`:
//! categorical) and, since 3.1, the training categories (`cats`) are its
//! schema. A DART booster's trees are scaled by their `weight_drop`. Vector
//! leaves (multi-output trees) and several targets are refused, naming
//! where they are.

use super::category_split::{CategorySet, bitset};
use super::document::{Document, List};
use super::schema::FileSchema;
use super::{Ensemble, Link, Split, Sum, TreeNode, TreeNodes, ubjson};

/// XGBoost refuses a category it was not trained on (it re-codes a
/// DataFrame's categories to the training ones by name).
const REFUSES_UNKNOWN: &str = "XGBoost refuses a category not in its training set";

/// The document of an XGBoost model file (`ubj`: UBJSON, else JSON). Apart
/// from `forest`, so a loader can let go of the file's bytes first.
pub fn read(bytes: &[u8], ubj: bool) -> Result<Document, String> {
    if ubj {
        ubjson::decode(bytes)
    } else {
        serde_json::from_slice(bytes).map_err(|e| format!("not XGBoost JSON: {e}"))
    }
}

/// The trees an XGBoost model's `document` describes, and what it says
/// about its inputs.
pub fn booster(document: &Document) -> Result<(Ensemble, FileSchema), String> {
    let ensemble = ensemble(document)?;
    let schema = schema(field(document, "learner")?, ensemble.features)?;
    Ok((ensemble, schema))
}

/// The learner's feature names and types and its training categories.
fn schema(learner: &Document, features: usize) -> Result<FileSchema, String> {
    let strings = |name: &str| -> Result<Vec<String>, String> {
        let Some(list) = learner.get(name).and_then(Document::list) else { return Ok(Vec::new()) };
        (0..list.len())
            .map(|i| {
                let item = list.item(i).and_then(Document::as_str);
                item.map(str::to_string).ok_or_else(|| format!("`learner.{name}[{i}]` is not a string"))
            })
            .collect()
    };
    let names = strings("feature_names")?;
    let types = strings("feature_types")?;
    for (list, name) in [(&names, "feature_names"), (&types, "feature_types")] {
        if !list.is_empty() && list.len() != features {
            return Err(format!("`learner.{name}` lists {} entries for {features} features", list.len()));
        }
    }
    let categorical: Vec<usize> = (0..types.len()).filter(|&f| types[f] == "c").collect();
    let model = learner.get("gradient_booster").and_then(|b| trees_of(b).ok()).map(|(model, _)| model);
    let cats = model.and_then(|m| m.get("cats"));
    let encodings = cats.and_then(|c| c.get("enc")).and_then(Document::list);
    let mut vocabularies = Vec::new();
    for &feature in &categorical {
        let Some(encoding) = encodings.and_then(|e| e.item(feature)) else { continue };
        let values = encoding.get("values").and_then(Document::list);
        let Some(values) = values.filter(|v| !v.is_empty()) else { continue };
        let number =
            |i: usize| values.number(i).ok_or_else(|| format!("`cats.enc[{feature}].values[{i}]` is not a number"));
        let offsets = encoding.get("offsets").and_then(Document::list).filter(|o| !o.is_empty());
        let categories = match offsets {
            // Strings: UTF-8 bytes in `values`, each starting at its offset.
            Some(offsets) => {
                let bytes = (0..values.len()).map(|i| number(i).map(|b| b as u8)).collect::<Result<Vec<u8>, _>>()?;
                let mut starts = (0..offsets.len())
                    .map(|i| offsets.number(i).map(|o| o as usize).ok_or("`cats` offsets are not numbers"))
                    .collect::<Result<Vec<usize>, _>>()?;
                starts.push(bytes.len());
                starts
                    .windows(2)
                    .map(|w| {
                        let text = bytes.get(w[0]..w[1]).and_then(|b| std::str::from_utf8(b).ok());
                        text.map(str::to_string).ok_or_else(|| format!("`cats.enc[{feature}]` is not UTF-8 text"))
                    })
                    .collect::<Result<Vec<String>, String>>()?
            }
            // Numbers: written as a caller would send them, `10` or `2.5`.
            None => (0..values.len()).map(|i| number(i).map(|v| v.to_string())).collect::<Result<_, _>>()?,
        };
        vocabularies.push((feature, categories));
    }
    Ok(FileSchema { names, categorical, vocabularies, unknown_refused_by: Some(REFUSES_UNKNOWN) })
}

fn ensemble(model: &Document) -> Result<Ensemble, String> {
    let learner = field(model, "learner")?;
    let params = field(learner, "learner_model_param")?;
    let objective = text(field(field(learner, "objective")?, "name")?, "learner.objective.name")?;
    let (gbtree, weights) = trees_of(field(learner, "gradient_booster")?)?;
    let features = number(field(params, "num_feature")?, "num_feature")? as usize;
    let num_class = number(field(params, "num_class")?, "num_class")? as usize;
    let targets = params.get("num_target").map(|t| number(t, "num_target")).transpose()?.unwrap_or(1.0);
    if targets > 1.0 {
        return Err(format!(
            "the model predicts {targets} targets at once (multi-output), which is not supported: train one model per \
             target and serve each as its own segment"
        ));
    }
    let base_scores = base_score(field(params, "base_score")?)?;
    let (link, groups) = match objective {
        "binary:logistic" => (Link::Sigmoid { scale: 1.0 }, 1),
        "multi:softprob" if num_class >= 2 => (Link::Softmax, num_class),
        // Regressors: the margin itself, or through the objective's inverse link.
        "reg:squarederror" | "reg:squaredlogerror" | "reg:absoluteerror" | "reg:pseudohubererror" => {
            (Link::Identity, 1)
        }
        "reg:logistic" => (Link::Logistic, 1),
        "count:poisson" | "reg:gamma" | "reg:tweedie" => (Link::Exp, 1),
        other => {
            return Err(format!(
                "objective `{other}` is not supported: Candela serves XGBoost classifiers trained with \
                 `binary:logistic` or `multi:softprob` and regressors trained with `reg:squarederror`, \
                 `reg:squaredlogerror`, `reg:absoluteerror`, `reg:pseudohubererror`, `reg:logistic`, \
                 `count:poisson`, `reg:gamma` or `reg:tweedie`"
            ));
        }
    };
    let base: Vec<f64> = match (link, base_scores.as_slice()) {
        // XGBoost keeps a logistic model's base score as a probability and
        // starts from its logit, and a log-link model's as a mean and starts
        // from its logarithm, computed in f32.
        (Link::Sigmoid { .. } | Link::Logistic, [p]) if *p > 0.0 && *p < 1.0 => {
            vec![f64::from(-(1.0f32 / p - 1.0).ln())]
        }
        (Link::Sigmoid { .. } | Link::Logistic, [p]) => {
            return Err(format!("base_score {p} is not a probability in (0, 1)"));
        }
        (Link::Exp, [mean]) if *mean > 0.0 => vec![f64::from(mean.ln())],
        (Link::Exp, [mean]) => return Err(format!("base_score {mean} is not a positive mean")),
        (_, [margin]) => vec![f64::from(*margin); groups],
        (_, margins) if margins.len() == groups => margins.iter().map(|m| f64::from(*m)).collect(),
        (_, margins) => return Err(format!("base_score has {} values for {groups} classes", margins.len())),
    };
    let trees = array(field(gbtree, "trees")?, "trees")?;
    let groups_of = array(field(gbtree, "tree_info")?, "tree_info")?;
    if groups_of.len() != trees.len() {
        return Err(format!("tree_info lists {} trees but the model has {}", groups_of.len(), trees.len()));
    }
    let mut sets = Vec::new();
    let trees = (0..trees.len())
        .map(|index| {
            let tree = trees.item(index).ok_or_else(|| format!("trees[{index}] is not an object"))?;
            let mut read = read_tree(tree, at(groups_of, index, "tree_info")? as usize, index, &mut sets)?;
            if let Some(weights) = weights {
                // DART: each tree's output scaled by its weight, in f32.
                let weight = at(weights, index, "weight_drop")? as f32;
                for node in &mut read.nodes {
                    if let TreeNode::Leaf(value) = node {
                        *value = f64::from(*value as f32 * weight);
                    }
                }
            }
            Ok(read)
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Ensemble { trees, base, link, sum: Sum::F32, features, kind: format!("xgboost {objective}"), sets })
}

/// Tree `index`, its categorical splits' bitsets appended to `sets`.
fn read_tree(tree: &Document, group: usize, index: usize, sets: &mut Vec<Vec<u32>>) -> Result<TreeNodes, String> {
    let list =
        |name: &str| -> Result<List<'_>, String> { array(field(tree, name)?, &format!("trees[{index}].{name}")) };
    let (lefts, rights, features, conditions, defaults) = (
        list("left_children")?,
        list("right_children")?,
        list("split_indices")?,
        list("split_conditions")?,
        list("default_left")?,
    );
    let count = lefts.len();
    if [rights.len(), features.len(), conditions.len(), defaults.len()].iter().any(|&n| n != count) {
        return Err(format!("tree {index}: its node arrays differ in length"));
    }
    if let Some(param) = tree.get("tree_param") {
        let leaf_size = param.get("size_leaf_vector").map(|v| number(v, "size_leaf_vector")).transpose()?;
        if leaf_size.is_some_and(|size| size > 1.0) {
            return Err(format!("tree {index} has vector leaves (multi-output trees), which are not supported"));
        }
    }
    let kinds = tree.get("split_type").map(|v| array(v, "split_type")).transpose()?;
    let categories = categories(tree, index)?;
    let mut nodes = Vec::with_capacity(count);
    for node in 0..count {
        let left = at(lefts, node, "left_children")?;
        let condition = at(conditions, node, "split_conditions")?;
        if left < 0.0 {
            nodes.push(TreeNode::Leaf(f64::from(condition as f32)));
            continue;
        }
        let right = at(rights, node, "right_children")?;
        let feature = at(features, node, "split_indices")?;
        if right < 0.0 || feature < 0.0 {
            return Err(format!("tree {index} node {node} has a negative child or feature index"));
        }
        let default_left = at(defaults, node, "default_left")? != 0.0;
        if kinds.filter(|kinds| node < kinds.len()).map(|kinds| at(kinds, node, "split_type")).transpose()? == Some(1.0)
        {
            let Some((_, listed)) = categories.iter().find(|(n, _)| *n == node) else {
                return Err(format!("tree {index} node {node} is a categorical split without categories"));
            };
            sets.push(bitset(listed).map_err(|e| format!("tree {index} node {node}: {e}"))?);
            let split = Split {
                feature: feature as usize,
                threshold: 0.0,
                nan_left: default_left,
                zero_missing: false,
                default_left,
                equal: false,
                set: Some(CategorySet { index: sets.len() - 1, in_set_left: false }),
            };
            nodes.push(TreeNode::Split { split, left: left as usize, right: right as usize });
            continue;
        }
        // `value < c` for an f32 value is `value ≤` the f32 just below c.
        let threshold = f64::from((condition as f32).next_down());
        let split = Split {
            feature: feature as usize,
            threshold,
            nan_left: default_left,
            zero_missing: false,
            default_left,
            equal: false,
            set: None,
        };
        nodes.push(TreeNode::Split { split, left: left as usize, right: right as usize });
    }
    // The hessian sums TreeSHAP weighs paths by (absent: no exact explanations).
    let covers = match tree.get("sum_hessian").map(|v| array(v, "sum_hessian")).transpose()? {
        Some(hessians) if hessians.len() == count => {
            (0..count).map(|node| at(hessians, node, "sum_hessian")).collect::<Result<Vec<f64>, String>>()?
        }
        _ => Vec::new(),
    };
    Ok(TreeNodes { nodes, group, covers })
}

/// A tree's categorical splits: each node's categories (those going right).
fn categories(tree: &Document, index: usize) -> Result<Vec<(usize, Vec<u32>)>, String> {
    let list = |name: &str| tree.get(name).map(|v| array(v, &format!("trees[{index}].{name}"))).transpose();
    let (Some(nodes), Some(starts), Some(sizes), Some(values)) =
        (list("categories_nodes")?, list("categories_segments")?, list("categories_sizes")?, list("categories")?)
    else {
        return Ok(Vec::new());
    };
    if starts.len() != nodes.len() || sizes.len() != nodes.len() {
        return Err(format!("tree {index}: its category arrays differ in length"));
    }
    (0..nodes.len())
        .map(|i| {
            let (start, size) = (at(starts, i, "categories_segments")? as usize, at(sizes, i, "categories_sizes")?);
            let listed = (start..start + size as usize)
                .map(|k| match values.number(k) {
                    Some(c) if c >= 0.0 && c.fract() == 0.0 => Ok(c as u32),
                    _ => Err(format!("tree {index}: `categories[{k}]` is not a category code")),
                })
                .collect::<Result<Vec<u32>, String>>()?;
            Ok((at(nodes, i, "categories_nodes")? as usize, listed))
        })
        .collect()
}

/// The `gradient_booster`'s trees (`model`), and for a DART booster the
/// weight of each tree (`weight_drop`).
fn trees_of(booster: &Document) -> Result<(&Document, Option<List<'_>>), String> {
    match text(field(booster, "name")?, "learner.gradient_booster.name")? {
        "gbtree" => Ok((field(booster, "model")?, None)),
        "dart" => {
            let weights = array(field(booster, "weight_drop")?, "weight_drop")?;
            Ok((field(field(booster, "gbtree")?, "model")?, Some(weights)))
        }
        other => Err(format!("booster `{other}` is not supported: train with booster `gbtree` or `dart`")),
    }
}

/// `base_score` as XGBoost writes it: `"5E-1"`, or since 3.0 `"[5E-1]"` (one per class).
fn base_score(value: &Document) -> Result<Vec<f32>, String> {
    let text = text(value, "base_score")?;
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|part| part.trim().parse::<f32>().map_err(|e| format!("base_score `{text}`: {e}")))
        .collect()
}

fn field<'a>(value: &'a Document, name: &str) -> Result<&'a Document, String> {
    value.get(name).ok_or_else(|| format!("not an XGBoost model: `{name}` is missing"))
}

fn text<'a>(value: &'a Document, name: &str) -> Result<&'a str, String> {
    value.as_str().ok_or_else(|| format!("`{name}` is not a string"))
}

fn array<'a>(value: &'a Document, name: &str) -> Result<List<'a>, String> {
    value.list().ok_or_else(|| format!("`{name}` is not an array"))
}

/// A number, or a number written as a string (XGBoost writes parameters as strings).
fn number(value: &Document, name: &str) -> Result<f64, String> {
    value.number().ok_or_else(|| format!("`{name}` is not a number: {value}"))
}

/// Element `index` of the array `name`, as a number.
fn at(list: List<'_>, index: usize, name: &str) -> Result<f64, String> {
    list.number(index).ok_or_else(|| format!("`{name}[{index}]` is not a number"))
}
