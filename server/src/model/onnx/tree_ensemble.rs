//! `ai.onnx.ml.TreeEnsembleClassifier` and `TreeEnsembleRegressor` (what
//! skl2onnx and onnxmltools emit for random forests, gradient boosting,
//! LightGBM and XGBoost) lowered onto
//! the native forest, with onnxruntime's semantics: every BRANCH_* mode
//! resolved to "left when ≤ (or =) an f32 threshold" exactly, NaN to the
//! true branch where `nodes_missing_value_tracks_true` says so, leaf weights
//! summed per class or target (in f32, or f64 for double attributes) onto
//! `base_values`, then `post_transform` (a regressor: none, its one value). A leaf carrying weights for several
//! classes (a random forest's votes) becomes one tree per class. Branches
//! that several nodes share are unfolded into a tree, within a bound.

use super::constants::constant;
use super::prep::floats;
use super::{Walk, attribute, class_labels, refusal};
use crate::model::trees::{Ensemble, Link, Split, Sum, TreeNode, TreeNodes};
use onnx_schema::NodeProto;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// At most this many times the graph's node count after unfolding shared
/// branches (and never more than `MAX_NODES`): a cycle, or a DAG whose
/// unfolding explodes, is refused rather than grown without bound.
const UNFOLD_FACTOR: usize = 16;
pub(super) const MAX_NODES: usize = 1 << 24;

/// A node of one tree once unfolded: a split with its children, or a leaf
/// naming the graph node whose weights it carries.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Pending(usize),
    Split { split: Split, left: usize, right: usize },
    Leaf(usize),
}

/// The node arrays of the op (ml opsets 1–3), indexed alike.
#[derive(Default)]
pub(super) struct Nodes {
    pub(super) trees: Vec<i64>,
    pub(super) ids: Vec<i64>,
    pub(super) features: Vec<i64>,
    pub(super) modes: Vec<Vec<u8>>,
    pub(super) values: Vec<f64>,
    pub(super) trues: Vec<i64>,
    pub(super) falses: Vec<i64>,
    pub(super) tracks: Vec<i64>,
}

impl Walk<'_> {
    /// Lowers a TreeEnsembleClassifier reading the rows' `value`; the rows
    /// continue as its probability output (its second).
    pub(super) fn tree_ensemble_classifier(&mut self, node: &NodeProto, value: &str) -> Result<String, String> {
        let Some(probabilities) = node.output.get(1).filter(|o| !o.is_empty()).cloned() else {
            return Err(refusal(node, "a TreeEnsembleClassifier without its probability output"));
        };
        let (nodes, doubles) = tree_nodes(node, value)?;
        self.labels = class_labels(node);
        let labels = self.labels.as_ref().map_or(0, |l| l.names.len());
        let (leaves, weight_doubles) = leaves(node, "class")?;
        if let Some(bad) = leaves.iter().find(|l| !(0..labels as i64).contains(&l.class)) {
            return Err(refusal(
                node,
                &format!("a TreeEnsembleClassifier with a weight for class {} of {labels}", bad.class),
            ));
        }
        let (base, _) = numbers(node, "base_values")?;
        let transform = attribute(node, "post_transform").map_or(&b"NONE"[..], |a| a.s.as_slice());
        let classes: BTreeSet<i64> = leaves.iter().map(|l| l.class).collect();
        let all_positive = leaves.iter().all(|l| l.weight >= 0.0);
        // How onnxruntime turns the sums into its answer, where that answer is probabilities.
        let (groups, link, base) = match (labels, classes.len(), transform) {
            (2, 1, b"LOGISTIC") if classes.contains(&0) && base.len() <= 1 && !all_positive => {
                (1, Link::Sigmoid { scale: 1.0 }, vec![base.first().copied().unwrap_or(0.0)])
            }
            (2, 1, b"NONE") if classes.contains(&0) && base.len() <= 1 && all_positive => {
                (1, Link::Complement, vec![base.first().copied().unwrap_or(0.0)])
            }
            (n, _, b"NONE" | b"SOFTMAX") if n > 2 || (n == 2 && classes.len() == 2 && base.is_empty()) => {
                let link = if transform == b"NONE" { Link::Identity } else { Link::Softmax };
                let base = if base.is_empty() { vec![0.0; n] } else { base };
                if base.len() != n {
                    return Err(refusal(
                        node,
                        &format!("a TreeEnsembleClassifier with {} base_values for {n} classes", base.len()),
                    ));
                }
                (n, link, base)
            }
            _ => {
                return Err(refusal(
                    node,
                    &format!(
                        "a TreeEnsembleClassifier with post_transform {} over weights for classes {classes:?} of {labels} \
                         (base_values {base:?}{}), whose onnxruntime answer is not class probabilities; compiled: \
                         LOGISTIC over one margin for two labels (boosting), SOFTMAX over one margin per class, \
                         NONE over per-class votes or, for two labels, over non-negative votes for the second \
                         (random forests)",
                        String::from_utf8_lossy(transform),
                        if all_positive { ", every weight ≥ 0" } else { "" }
                    ),
                ));
            }
        };
        let trees = unfold_trees(node, &nodes, &leaves, groups)?;
        let sum = if doubles || weight_doubles { Sum::F64 } else { Sum::F32 };
        let kind = format!("onnx TreeEnsembleClassifier ({})", String::from_utf8_lossy(transform));
        self.forest = Some(Ensemble { trees, base, link, sum, features: self.width, kind, sets: Vec::new() });
        Ok(probabilities)
    }

    /// Lowers a TreeEnsembleRegressor of one target reading the rows'
    /// `value` (its leaf weights summed, or averaged over the trees, onto
    /// `base_values`); the rows continue as its output, the value.
    pub(super) fn tree_ensemble_regressor(&mut self, node: &NodeProto, value: &str) -> Result<String, String> {
        let out = node.output.first().cloned().unwrap_or_default();
        let (nodes, doubles) = tree_nodes(node, value)?;
        let (mut leaves, weight_doubles) = leaves(node, "target")?;
        let targets = attribute(node, "n_targets").map_or(1, |a| a.i);
        if targets != 1 || leaves.iter().any(|l| l.class != 0) {
            return Err(refusal(
                node,
                &format!("a TreeEnsembleRegressor of {targets} targets; Candela serves one value per row"),
            ));
        }
        let (base, _) = numbers(node, "base_values")?;
        let transform = attribute(node, "post_transform").map_or(&b"NONE"[..], |a| a.s.as_slice());
        let aggregate = attribute(node, "aggregate_function").map_or(&b"SUM"[..], |a| a.s.as_slice());
        if transform != b"NONE" || !matches!(aggregate, b"SUM" | b"AVERAGE") || base.len() > 1 {
            return Err(refusal(
                node,
                &format!(
                    "a TreeEnsembleRegressor with aggregate_function {}, post_transform {} and {} base_values; \
                     compiled: SUM or AVERAGE, NONE, at most one base value",
                    String::from_utf8_lossy(aggregate),
                    String::from_utf8_lossy(transform),
                    base.len()
                ),
            ));
        }
        if aggregate == b"AVERAGE" {
            let trees = by_tree(&nodes.trees).len() as f64;
            leaves.iter_mut().for_each(|l| l.weight /= trees);
        }
        let trees = unfold_trees(node, &nodes, &leaves, 1)?;
        let sum = if doubles || weight_doubles { Sum::F64 } else { Sum::F32 };
        let base = vec![base.first().copied().unwrap_or(0.0)];
        let kind = format!("onnx TreeEnsembleRegressor ({})", String::from_utf8_lossy(aggregate));
        self.forest =
            Some(Ensemble { trees, base, link: Link::Identity, sum, features: self.width, kind, sets: Vec::new() });
        self.value = true;
        Ok(out)
    }

    /// What may follow a tree ensemble's probabilities: output formatting
    /// only (ZipMap, Identity, a Cast to float, an L1 Normalizer of
    /// probabilities that already sum to one).
    pub(super) fn after_forest(&mut self, node: &NodeProto, out: String) -> Result<String, String> {
        let op = (node.domain.as_str(), node.op_type.as_str());
        // ml opset 5 has no base values: a regressor's is an Add after the op.
        let addend = node.input.iter().find_map(|v| self.constants.get(v)).and_then(|c| c.scalar());
        if let (("" | "ai.onnx", "Add"), Some(addend), true, Some(forest)) =
            (op, addend, self.value, self.forest.as_mut())
        {
            forest.base[0] += addend;
            return Ok(out);
        }
        let to_float = attribute(node, "to").is_some_and(|a| a.i == 1);
        let l1 = attribute(node, "norm").is_some_and(|a| a.s == b"L1");
        let identity = matches!(self.forest.as_ref().map(|f| f.link), Some(Link::Softmax | Link::Sigmoid { .. }));
        match op {
            ("" | "ai.onnx", "Identity") | ("ai.onnx.ml", "ZipMap") => Ok(out),
            ("" | "ai.onnx", "Cast") if to_float => Ok(out),
            ("ai.onnx.ml", "Normalizer") if l1 && identity => Ok(out),
            _ => Err(refusal(
                node,
                "a node after a tree ensemble's probabilities; compiled there: ZipMap, Identity, Cast to float, \
                 an L1 Normalizer after LOGISTIC or SOFTMAX, the Add of a constant to a regressor's value",
            )),
        }
    }
}

/// The node arrays of a tree ensemble op reading the rows' `value`,
/// checked alike in length; true when its thresholds are doubles.
fn tree_nodes(node: &NodeProto, value: &str) -> Result<(Nodes, bool), String> {
    let op = &node.op_type;
    if node.input.first().map(String::as_str) != Some(value) {
        return Err(refusal(node, &format!("a {op} whose input is not the rows")));
    }
    let (thresholds, doubles) = numbers(node, "nodes_values")?;
    let nodes = Nodes {
        trees: ints(node, "nodes_treeids"),
        ids: ints(node, "nodes_nodeids"),
        features: ints(node, "nodes_featureids"),
        modes: attribute(node, "nodes_modes").map(|a| a.strings.clone()).unwrap_or_default(),
        values: thresholds,
        trues: ints(node, "nodes_truenodeids"),
        falses: ints(node, "nodes_falsenodeids"),
        tracks: ints(node, "nodes_missing_value_tracks_true"),
    };
    let count = nodes.ids.len();
    let lengths = [nodes.trees.len(), nodes.features.len(), nodes.modes.len(), nodes.values.len()];
    if count == 0 || lengths.iter().chain([&nodes.trues.len(), &nodes.falses.len()]).any(|l| *l != count) {
        return Err(refusal(node, &format!("a {op} whose node attributes differ in length")));
    }
    if !nodes.tracks.is_empty() && nodes.tracks.len() != count {
        return Err(refusal(node, &format!("a {op} whose nodes_missing_value_tracks_true is not per node")));
    }
    Ok((nodes, doubles))
}

/// One leaf weight of a tree ensemble op.
pub(super) struct Leaf {
    pub(super) tree: i64,
    pub(super) node: i64,
    /// The class (or a regressor's target) it weighs for.
    pub(super) class: i64,
    pub(super) weight: f64,
}

/// The leaf weights of a tree ensemble op, `{prefix}_treeids`,
/// `_nodeids`, `_ids` and `_weights` (prefix `class` or `target`); true
/// when the weights are doubles.
fn leaves(node: &NodeProto, prefix: &str) -> Result<(Vec<Leaf>, bool), String> {
    let (weights, doubles) = numbers(node, &format!("{prefix}_weights"))?;
    let [trees, nodes, ids] = ["treeids", "nodeids", "ids"].map(|name| ints(node, &format!("{prefix}_{name}")));
    if [trees.len(), nodes.len(), ids.len()].iter().any(|l| *l != weights.len()) {
        return Err(refusal(node, &format!("a {} whose {prefix} attributes differ in length", node.op_type)));
    }
    let leaves = trees.into_iter().zip(nodes).zip(ids).zip(weights);
    Ok((leaves.map(|(((tree, node), class), weight)| Leaf { tree, node, class, weight }).collect(), doubles))
}

/// The op's trees unfolded, one per tree and class (or target) its leaves
/// weigh, the class's margins summed in group `class` (all in group 0 when
/// `groups` is 1).
pub(super) fn unfold_trees(
    node: &NodeProto,
    nodes: &Nodes,
    leaves: &[Leaf],
    groups: usize,
) -> Result<Vec<TreeNodes>, String> {
    // The weights of each leaf, by (tree, node), per class.
    let mut leaf_weights: HashMap<(i64, i64), BTreeMap<i64, f64>> = HashMap::new();
    for leaf in leaves {
        *leaf_weights.entry((leaf.tree, leaf.node)).or_default().entry(leaf.class).or_default() += leaf.weight;
    }
    let mut trees = Vec::new();
    let mut budget = (nodes.ids.len() * UNFOLD_FACTOR).clamp(1 << 16, MAX_NODES);
    for members in by_tree(&nodes.trees) {
        let shape = unfold(node, nodes, &members, &mut budget)?;
        let tree = nodes.trees[members[0]];
        let mut touched = BTreeSet::new();
        for s in &shape {
            if let Shape::Leaf(at) = s {
                touched.extend(leaf_weights.get(&(tree, nodes.ids[*at])).into_iter().flat_map(|w| w.keys()));
            }
        }
        for class in touched {
            let weight = |at: usize| leaf_weights.get(&(tree, nodes.ids[at])).and_then(|w| w.get(&class)).copied();
            let nodes = shape
                .iter()
                .map(|s| match *s {
                    Shape::Split { split, left, right } => TreeNode::Split { split, left, right },
                    Shape::Leaf(at) => TreeNode::Leaf(weight(at).unwrap_or(0.0)),
                    Shape::Pending(_) => unreachable!("unfold expands every node"),
                })
                .collect();
            trees.push(TreeNodes { nodes, group: if groups == 1 { 0 } else { class as usize }, covers: Vec::new() });
        }
    }
    Ok(trees)
}

/// Each tree's node positions, trees in the order they first appear.
fn by_tree(trees: &[i64]) -> Vec<Vec<usize>> {
    let mut order: Vec<i64> = Vec::new();
    let mut members: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, t) in trees.iter().enumerate() {
        let list = members.entry(*t).or_default();
        if list.is_empty() {
            order.push(*t);
        }
        list.push(i);
    }
    order.into_iter().map(|t| members.remove(&t).unwrap_or_default()).collect()
}

/// One tree (`members`: its node positions) from its root, each node
/// expanded anew wherever it is reached, so shared branches are copied.
fn unfold(node: &NodeProto, nodes: &Nodes, members: &[usize], budget: &mut usize) -> Result<Vec<Shape>, String> {
    let tree = nodes.trees[members[0]];
    let position: HashMap<i64, usize> = members.iter().map(|&i| (nodes.ids[i], i)).collect();
    let children: BTreeSet<i64> = members
        .iter()
        .filter(|&&i| nodes.modes[i] != b"LEAF")
        .flat_map(|&i| [nodes.trues[i], nodes.falses[i]])
        .collect();
    let roots: Vec<usize> = members.iter().copied().filter(|&i| !children.contains(&nodes.ids[i])).collect();
    let [root] = roots[..] else {
        return Err(refusal(
            node,
            &format!("a tree ({tree}) with {} roots (nodes no other node leads to)", roots.len()),
        ));
    };
    let mut shape = vec![Shape::Pending(root)];
    let mut next = 0;
    while next < shape.len() {
        let Shape::Pending(at) = shape[next] else { unreachable!("only pending nodes lie ahead") };
        if nodes.modes[at] == b"LEAF" {
            shape[next] = Shape::Leaf(at);
        } else {
            let child = |id: i64| {
                position.get(&id).copied().ok_or_else(|| {
                    refusal(
                        node,
                        &format!("a tree ({tree}) whose node {} leads to node {id}, which it lacks", nodes.ids[at]),
                    )
                })
            };
            let (split, left, right) = split(node, nodes, at, child(nodes.trues[at])?, child(nodes.falses[at])?)?;
            if *budget < 2 {
                return Err(refusal(
                    node,
                    "a tree ensemble whose shared branches unfold beyond the node bound (or form a cycle)",
                ));
            }
            *budget -= 2;
            shape.push(Shape::Pending(left));
            shape.push(Shape::Pending(right));
            shape[next] = Shape::Split { split, left: shape.len() - 2, right: shape.len() - 1 };
        }
        next += 1;
    }
    Ok(shape)
}

/// Node `at`'s rule as a split going left when ≤ (or =) a threshold, with
/// its true and false children placed left and right accordingly.
fn split(node: &NodeProto, nodes: &Nodes, at: usize, yes: usize, no: usize) -> Result<(Split, usize, usize), String> {
    let feature = usize::try_from(nodes.features[at]).map_err(|_| refusal(node, "a split on a negative feature"))?;
    let value = nodes.values[at];
    let tracks = nodes.tracks.get(at).is_some_and(|t| *t != 0);
    let rule = |threshold: f64, equal: bool, nan_left: bool| Split {
        feature,
        threshold,
        nan_left,
        zero_missing: false,
        default_left: false,
        equal,
        set: None,
    };
    // NaN compares false: it goes to the false branch unless tracked to the true one
    // (BRANCH_NEQ's `NaN ≠ v` is true).
    Ok(match nodes.modes[at].as_slice() {
        b"BRANCH_LEQ" => (rule(value, false, tracks), yes, no),
        b"BRANCH_LT" => (rule(below(value), false, tracks), yes, no),
        b"BRANCH_GT" => (rule(value, false, !tracks), no, yes),
        b"BRANCH_GTE" => (rule(below(value), false, !tracks), no, yes),
        b"BRANCH_EQ" => (rule(value, true, tracks), yes, no),
        b"BRANCH_NEQ" => (rule(value, true, false), no, yes),
        other => {
            return Err(refusal(node, &format!("a tree node of mode `{}`", String::from_utf8_lossy(other))));
        }
    })
}

/// The largest f32 strictly below `value`: an f32 `x < value` exactly when `x ≤` it.
fn below(value: f64) -> f64 {
    let nearest = value as f32;
    f64::from(if f64::from(nearest) >= value { nearest.next_down() } else { nearest })
}

/// `node`'s integer-list attribute `name` (empty when absent).
pub(super) fn ints(node: &NodeProto, name: &str) -> Vec<i64> {
    attribute(node, name).map(|a| a.ints.clone()).unwrap_or_default()
}

/// `node`'s float-list attribute `name`, or its double tensor `{name}_as_tensor`
/// (ml opset 3); true when the values are doubles.
fn numbers(node: &NodeProto, name: &str) -> Result<(Vec<f64>, bool), String> {
    if let Some(tensor) = attribute(node, &format!("{name}_as_tensor")).and_then(|a| a.t.as_ref()) {
        return Ok((constant(tensor)?.values, true));
    }
    Ok((floats(node, name), false))
}

#[cfg(test)]
mod tests {
    use super::super::{Lowered, import};
    use crate::model::scorer::Answers;
    use crate::model::scorer::Scorer;
    use crate::model::trees::Forest;
    use onnx_schema as proto;

    /// A two-label TreeEnsembleClassifier over 2 features whose nodes are
    /// `(mode, feature, threshold, true, false)` (leaves: mode "LEAF"), with
    /// per-class votes `(node, class, weight)` and post_transform NONE.
    fn ensemble(nodes: &[(&str, i64, f32, i64, i64)], votes: &[(i64, i64, f32)]) -> Vec<u8> {
        let ints = |name: &str, ints: Vec<i64>| proto::AttributeProto { name: name.into(), ints, ..Default::default() };
        let floats =
            |name: &str, floats: Vec<f32>| proto::AttributeProto { name: name.into(), floats, ..Default::default() };
        let modes = nodes.iter().map(|n| n.0.as_bytes().to_vec()).collect();
        let node = proto::NodeProto {
            op_type: "TreeEnsembleClassifier".into(),
            domain: "ai.onnx.ml".into(),
            input: vec!["x".into()],
            output: vec!["label".into(), "y".into()],
            attribute: vec![
                ints("nodes_treeids", vec![0; nodes.len()]),
                ints("nodes_nodeids", (0..nodes.len() as i64).collect()),
                ints("nodes_featureids", nodes.iter().map(|n| n.1).collect()),
                floats("nodes_values", nodes.iter().map(|n| n.2).collect()),
                ints("nodes_truenodeids", nodes.iter().map(|n| n.3).collect()),
                ints("nodes_falsenodeids", nodes.iter().map(|n| n.4).collect()),
                proto::AttributeProto { name: "nodes_modes".into(), strings: modes, ..Default::default() },
                ints("class_treeids", vec![0; votes.len()]),
                ints("class_nodeids", votes.iter().map(|v| v.0).collect()),
                ints("class_ids", votes.iter().map(|v| v.1).collect()),
                floats("class_weights", votes.iter().map(|v| v.2).collect()),
                ints("classlabels_int64s", vec![0, 1]),
            ],
            ..Default::default()
        };
        super::super::refusals::tests::graph(vec![node])
    }

    fn forest(bytes: &[u8]) -> Result<Forest, String> {
        match import(bytes, &["f0".into(), "f1".into()], None)?.model {
            Lowered::Forest(ensemble) => Forest::build(ensemble, 2, Answers::Classes(2)),
            Lowered::Network { .. } => panic!("a tree ensemble became a network"),
        }
    }

    const VOTES: [(i64, i64, f32); 4] = [(2, 0, 0.25), (2, 1, 0.75), (3, 0, 1.0), (3, 1, 0.0)];

    #[test]
    fn a_branch_two_nodes_share_is_scored_from_both() {
        // 0: f0 ≤ 0 → 1 : 2;  1: f1 ≤ 0 → 3 : 2 (leaf 2 reached from both).
        let nodes = [
            ("BRANCH_LEQ", 0, 0.0, 1, 2),
            ("BRANCH_LEQ", 1, 0.0, 3, 2),
            ("LEAF", 0, 0.0, 0, 0),
            ("LEAF", 0, 0.0, 0, 0),
        ];
        let forest = forest(&ensemble(&nodes, &VOTES)).unwrap();
        let pass = forest.forward(&[1.0, 0.0, -1.0, 1.0, -1.0, -1.0]).unwrap();
        assert_eq!(pass.probabilities, [0.25, 0.75, 0.25, 0.75, 1.0, 0.0]);
    }

    #[test]
    fn cycles_and_missing_roots_are_refused() {
        let to_root = [
            ("BRANCH_LEQ", 0, 0.0, 1, 2),
            ("BRANCH_LEQ", 1, 0.0, 3, 0),
            ("LEAF", 0, 0.0, 0, 0),
            ("LEAF", 0, 0.0, 0, 0),
        ];
        let error = forest(&ensemble(&to_root, &VOTES)).err().unwrap();
        assert!(error.contains("a tree (0) with 0 roots"), "{error}");
        let self_loop = [
            ("BRANCH_LEQ", 0, 0.0, 1, 2),
            ("BRANCH_LEQ", 1, 0.0, 3, 1),
            ("LEAF", 0, 0.0, 0, 0),
            ("LEAF", 0, 0.0, 0, 0),
        ];
        let error = forest(&ensemble(&self_loop, &VOTES)).err().unwrap();
        assert!(error.contains("unfold beyond the node bound (or form a cycle)"), "{error}");
        let dangling = [("BRANCH_LEQ", 0, 0.0, 1, 7), ("LEAF", 0, 0.0, 0, 0)];
        let error = forest(&ensemble(&dangling, &VOTES)).err().unwrap();
        assert!(error.contains("leads to node 7, which it lacks"), "{error}");
    }
}
