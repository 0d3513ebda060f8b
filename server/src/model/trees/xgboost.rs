//! XGBoost's model format (what `Booster.save_model` writes: JSON, or UBJSON
//! for a `.ubj` file), read into a `Forest` with XGBoost's own rules: a
//! split goes left when `value < split_condition` (both f32), a missing
//! value (NaN) follows the node's `default_left`, margins are summed in f32
//! from the base score (a probability for `binary:logistic`, turned into a
//! margin as XGBoost does; margins per class for `multi:softprob`), then the
//! objective's transform. Categorical splits, vector leaves and DART boosters
//! are refused, naming where they are.

use super::document::{Document, List};
use super::{Ensemble, Forest, Link, Split, Sum, TreeNode, TreeNodes, ubjson};
use crate::model::scorer::Answers;

/// Reads an XGBoost model (`ubj`: UBJSON, else JSON) for `inputs` features
/// answering `answers`.
pub fn parse(bytes: &[u8], ubj: bool, inputs: usize, answers: Answers) -> Result<Forest, String> {
    forest(read(bytes, ubj)?, inputs, answers)
}

/// The document of an XGBoost model file (`ubj`: UBJSON, else JSON). Apart
/// from `forest`, so a loader can let go of the file's bytes first.
pub fn read(bytes: &[u8], ubj: bool) -> Result<Document, String> {
    if ubj {
        ubjson::decode(bytes)
    } else {
        serde_json::from_slice(bytes).map_err(|e| format!("not XGBoost JSON: {e}"))
    }
}

/// The forest an XGBoost model's `document` describes, for `inputs` features
/// answering `answers`; the document is let go of before the forest is laid out.
pub fn forest(document: Document, inputs: usize, answers: Answers) -> Result<Forest, String> {
    let ensemble = ensemble(&document)?;
    drop(document);
    Forest::build(ensemble, inputs, answers)
}

fn ensemble(model: &Document) -> Result<Ensemble, String> {
    let learner = field(model, "learner")?;
    let params = field(learner, "learner_model_param")?;
    let objective = text(field(field(learner, "objective")?, "name")?, "learner.objective.name")?;
    let booster = field(learner, "gradient_booster")?;
    let booster_name = text(field(booster, "name")?, "learner.gradient_booster.name")?;
    if booster_name != "gbtree" {
        return Err(format!("booster `{booster_name}` is not supported: train with booster `gbtree`"));
    }
    let features = number(field(params, "num_feature")?, "num_feature")? as usize;
    let num_class = number(field(params, "num_class")?, "num_class")? as usize;
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
    let gbtree = field(booster, "model")?;
    let trees = array(field(gbtree, "trees")?, "trees")?;
    let groups_of = array(field(gbtree, "tree_info")?, "tree_info")?;
    if groups_of.len() != trees.len() {
        return Err(format!("tree_info lists {} trees but the model has {}", groups_of.len(), trees.len()));
    }
    let trees = (0..trees.len())
        .map(|index| {
            let tree = trees.item(index).ok_or_else(|| format!("trees[{index}] is not an object"))?;
            read_tree(tree, at(groups_of, index, "tree_info")? as usize, index)
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Ensemble { trees, base, link, sum: Sum::F32, features, kind: format!("xgboost {objective}") })
}

fn read_tree(tree: &Document, group: usize, index: usize) -> Result<TreeNodes, String> {
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
    let mut nodes = Vec::with_capacity(count);
    for node in 0..count {
        let left = at(lefts, node, "left_children")?;
        let condition = at(conditions, node, "split_conditions")?;
        if left < 0.0 {
            nodes.push(TreeNode::Leaf(f64::from(condition as f32)));
            continue;
        }
        if kinds.filter(|kinds| node < kinds.len()).map(|kinds| at(kinds, node, "split_type")).transpose()? == Some(1.0)
        {
            return Err(format!(
                "tree {index} node {node} is a categorical split, which Candela does not evaluate: train with numerical (for example one-hot) features"
            ));
        }
        let right = at(rights, node, "right_children")?;
        let feature = at(features, node, "split_indices")?;
        if right < 0.0 || feature < 0.0 {
            return Err(format!("tree {index} node {node} has a negative child or feature index"));
        }
        let default_left = at(defaults, node, "default_left")? != 0.0;
        // `value < c` for an f32 value is `value ≤` the f32 just below c.
        let threshold = f64::from((condition as f32).next_down());
        let split = Split {
            feature: feature as usize,
            threshold,
            nan_left: default_left,
            zero_missing: false,
            default_left,
            equal: false,
        };
        nodes.push(TreeNode::Split { split, left: left as usize, right: right as usize });
    }
    Ok(TreeNodes { nodes, group })
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
