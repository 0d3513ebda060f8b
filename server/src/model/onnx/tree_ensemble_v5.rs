//! ml opset 5's `TreeEnsemble` (interior nodes and leaves in separate
//! arrays, trees named by their roots, BRANCH_MEMBER set splits, no base
//! values), rewritten into the opset 1–3 node tables `tree_ensemble` lowers
//! onto the native forest, as onnxruntime itself reads it: each tree's
//! nodes from its root, its leaves as LEAF nodes, a set split as a chain of
//! BRANCH_EQ splits (NaN to the true branch at once where tracked), and a
//! root whose true and false children are the same as a one-leaf tree.
//! `post_transform` is read with onnxruntime's numbering (0 NONE,
//! 1 LOGISTIC, 2 SOFTMAX), which the operator's documentation (SOFTMAX 1,
//! LOGISTIC 2) contradicts: the answers match what the model's authors
//! validated it with.

use super::constants::constant;
use super::tree_ensemble::{Leaf, MAX_NODES, Nodes, ints, unfold_trees};
use super::{Walk, attribute, refusal};
use crate::model::trees::{Ensemble, Link, Sum};
use onnx_schema::NodeProto;
use std::collections::HashMap;

/// The comparison modes by their number; 6 is BRANCH_MEMBER.
const MODES: [&[u8]; 6] = [b"BRANCH_LEQ", b"BRANCH_LT", b"BRANCH_GTE", b"BRANCH_GT", b"BRANCH_EQ", b"BRANCH_NEQ"];
const MEMBER: usize = 6;

/// What an entry of the rewritten tables is: interior node `index` (its
/// `k`-th set member for a set split), or leaf `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Entry {
    Node { index: usize, k: usize },
    Leaf(usize),
}

/// The op's arrays, checked alike in length.
struct Arrays {
    modes: Vec<usize>,
    splits: Vec<f64>,
    features: Vec<i64>,
    trues: Vec<i64>,
    falses: Vec<i64>,
    true_leafs: Vec<i64>,
    false_leafs: Vec<i64>,
    tracks: Vec<i64>,
    targets: Vec<i64>,
    weights: Vec<f64>,
    /// Per node, its set when it is a set split.
    sets: Vec<Vec<f64>>,
}

impl Walk<'_> {
    /// Lowers a TreeEnsemble reading the rows' `value`: one target under no
    /// post_transform is a regressor's value; SOFTMAX over several, or
    /// LOGISTIC over one (two labels), class probabilities. The rows
    /// continue as its output.
    pub(super) fn tree_ensemble(&mut self, node: &NodeProto, value: &str) -> Result<String, String> {
        if node.input.first().map(String::as_str) != Some(value) {
            return Err(refusal(node, "a TreeEnsemble whose input is not the rows"));
        }
        let out = node.output.first().cloned().unwrap_or_default();
        let (arrays, doubles) = arrays(node)?;
        let roots = ints(node, "tree_roots");
        let targets = attribute(node, "n_targets").map_or(0, |a| a.i);
        let integer = |name: &str, default: i64| attribute(node, name).map_or(default, |a| a.i);
        let (aggregate, transform) = (integer("aggregate_function", 1), integer("post_transform", 0));
        let (groups, link) = match (transform, targets) {
            (0, 1) => (1, Link::Identity),
            (1, 1) => (1, Link::Sigmoid { scale: 1.0 }),
            (2, t) if t >= 2 => (t as usize, Link::Softmax),
            _ => {
                return Err(refusal(
                    node,
                    &format!(
                        "a TreeEnsemble with post_transform {transform} over {targets} targets; compiled (onnxruntime's \
                         numbering): 0 (NONE) over one target, a regressor's value; 1 (LOGISTIC) over one, two labels; \
                         2 (SOFTMAX) over one per label"
                    ),
                ));
            }
        };
        if let Some(bad) = arrays.targets.iter().find(|t| !(0..targets).contains(*t)) {
            return Err(refusal(node, &format!("a TreeEnsemble with a leaf for target {bad} of {targets}")));
        }
        let (nodes, mut leaves) = rewrite(node, &arrays, &roots)?;
        match aggregate {
            1 => {}
            0 => leaves.iter_mut().for_each(|l| l.weight /= roots.len() as f64),
            other => {
                let problem = format!("a TreeEnsemble with aggregate_function {other}; compiled: 1 (SUM), 0 (AVERAGE)");
                return Err(refusal(node, &problem));
            }
        }
        let trees = unfold_trees(node, &nodes, &leaves, groups)?;
        let sum = if doubles { Sum::F64 } else { Sum::F32 };
        let kind = format!("onnx TreeEnsemble (ml opset 5, post_transform {transform})");
        let base = vec![0.0; groups];
        self.forest = Some(Ensemble { trees, base, link, sum, features: self.width, kind, sets: Vec::new() });
        self.value = link == Link::Identity;
        Ok(out)
    }
}

/// The op's attributes, checked; true when its splits or weights are doubles.
fn arrays(node: &NodeProto) -> Result<(Arrays, bool), String> {
    let tensor = |name: &str| -> Result<(Vec<f64>, bool), String> {
        match attribute(node, name).and_then(|a| a.t.as_ref()) {
            Some(t) => Ok((constant(t)?.values, t.data_type == 11)),
            None => Ok((Vec::new(), false)),
        }
    };
    let (modes, _) = tensor("nodes_modes")?;
    let (splits, split_doubles) = tensor("nodes_splits")?;
    let (weights, weight_doubles) = tensor("leaf_weights")?;
    let (members, _) = tensor("membership_values")?;
    let count = modes.len();
    let modes: Vec<usize> = modes.iter().map(|m| *m as usize).collect();
    let mut arrays = Arrays {
        features: ints(node, "nodes_featureids"),
        trues: ints(node, "nodes_truenodeids"),
        falses: ints(node, "nodes_falsenodeids"),
        true_leafs: ints(node, "nodes_trueleafs"),
        false_leafs: ints(node, "nodes_falseleafs"),
        tracks: ints(node, "nodes_missing_value_tracks_true"),
        targets: ints(node, "leaf_targetids"),
        sets: vec![Vec::new(); count],
        modes,
        splits,
        weights,
    };
    let a = &arrays;
    let lengths = [a.splits.len(), a.features.len(), a.trues.len(), a.falses.len(), a.true_leafs.len()];
    if count == 0 || lengths.iter().chain([&a.false_leafs.len()]).any(|l| *l != count) {
        return Err(refusal(node, "a TreeEnsemble whose node attributes differ in length"));
    }
    if (!a.tracks.is_empty() && a.tracks.len() != count) || a.targets.len() != a.weights.len() {
        return Err(refusal(node, "a TreeEnsemble whose missing-value or leaf attributes differ in length"));
    }
    // Each set split's members, in node order, delimited by NaN.
    let mut sets = members.split(|v| v.is_nan());
    for (index, mode) in arrays.modes.iter().enumerate() {
        if *mode == MEMBER {
            arrays.sets[index] = sets.next().unwrap_or_default().to_vec();
            if arrays.sets[index].is_empty() {
                return Err(refusal(node, &format!("a TreeEnsemble whose set split {index} has no members")));
            }
        }
    }
    Ok((arrays, split_doubles || weight_doubles))
}

/// The opset 1–3 tables of the trees from `roots`: each tree's entries
/// reached from its root, numbered as first met, leaves with their weights.
fn rewrite(node: &NodeProto, a: &Arrays, roots: &[i64]) -> Result<(Nodes, Vec<Leaf>), String> {
    let mut nodes = Nodes::default();
    let mut leaves = Vec::new();
    let index = |at: i64, leaf: bool| -> Result<Entry, String> {
        let within = if leaf { a.weights.len() } else { a.modes.len() };
        match usize::try_from(at) {
            Ok(at) if at < within => Ok(if leaf { Entry::Leaf(at) } else { Entry::Node { index: at, k: 0 } }),
            _ => Err(refusal(
                node,
                &format!("a TreeEnsemble naming {} {at}, which it lacks", ["node", "leaf"][usize::from(leaf)]),
            )),
        }
    };
    for (tree, &root) in roots.iter().enumerate() {
        let at = usize::try_from(root).ok().filter(|r| *r < a.modes.len());
        let at = at.ok_or_else(|| {
            refusal(node, &format!("a TreeEnsemble whose tree {tree} has root {root}, which it lacks"))
        })?;
        // A root whose branches are the same is a one-leaf tree, the leaf at the root's index.
        let first = if a.trues[at] == a.falses[at] { index(root, true)? } else { Entry::Node { index: at, k: 0 } };
        let mut ids: HashMap<Entry, i64> = HashMap::from([(first, 0)]);
        let mut work = vec![first];
        while let Some(entry) = work.pop() {
            if nodes.ids.len() >= MAX_NODES {
                return Err(refusal(node, "a TreeEnsemble beyond the node bound"));
            }
            let id = ids[&entry];
            let mut child = |entry: Entry| {
                let next = ids.len() as i64;
                *ids.entry(entry).or_insert_with(|| {
                    work.push(entry);
                    next
                })
            };
            let (mode, value, feature, yes, no, track) = match entry {
                Entry::Leaf(leaf) => {
                    leaves.push(Leaf { tree: tree as i64, node: id, class: a.targets[leaf], weight: a.weights[leaf] });
                    (&b"LEAF"[..], 0.0, 0, 0, 0, 0)
                }
                Entry::Node { index: i, k } => {
                    let yes = child(index(a.trues[i], a.true_leafs[i] != 0)?);
                    let set = &a.sets[i];
                    let no = match a.modes[i] {
                        MEMBER if k + 1 < set.len() => child(Entry::Node { index: i, k: k + 1 }),
                        _ => child(index(a.falses[i], a.false_leafs[i] != 0)?),
                    };
                    let (mode, value) = match a.modes[i] {
                        MEMBER => (MODES[4], set[k]),
                        m if m < MEMBER => (MODES[m], a.splits[i]),
                        m => return Err(refusal(node, &format!("a TreeEnsemble node of mode {m}"))),
                    };
                    (mode, value, a.features[i], yes, no, a.tracks.get(i).copied().unwrap_or(0))
                }
            };
            nodes.trees.push(tree as i64);
            nodes.ids.push(id);
            nodes.features.push(feature);
            nodes.modes.push(mode.to_vec());
            nodes.values.push(value);
            nodes.trues.push(yes);
            nodes.falses.push(no);
            nodes.tracks.push(track);
        }
    }
    Ok((nodes, leaves))
}

#[cfg(test)]
mod tests {
    use super::super::{Lowered, import};
    use onnx_schema as proto;

    /// A one-tree TreeEnsemble over 2 features: node 0 `f0 ∈ {1, 2}` (NaN
    /// tracked true) → leaf 0 : leaf 1, each leaf for target 0, under
    /// `post_transform` over `targets` targets.
    fn graph(transform: i64, targets: i64, members: Vec<f32>) -> Vec<u8> {
        let ints = |name: &str, ints: Vec<i64>| proto::AttributeProto { name: name.into(), ints, ..Default::default() };
        let int = |name: &str, i: i64| proto::AttributeProto { name: name.into(), i, ..Default::default() };
        let tensor = |name: &str, data_type: i32, float_data: Vec<f32>, int32_data: Vec<i32>| proto::AttributeProto {
            name: name.into(),
            t: Some(proto::TensorProto {
                dims: vec![(float_data.len() + int32_data.len()) as i64],
                data_type,
                float_data,
                int32_data,
                ..Default::default()
            }),
            ..Default::default()
        };
        let node = proto::NodeProto {
            op_type: "TreeEnsemble".into(),
            domain: "ai.onnx.ml".into(),
            input: vec!["x".into()],
            output: vec!["y".into()],
            attribute: vec![
                ints("tree_roots", vec![0]),
                ints("nodes_featureids", vec![0]),
                tensor("nodes_modes", 2, Vec::new(), vec![6]),
                tensor("nodes_splits", 1, vec![0.0], Vec::new()),
                ints("nodes_truenodeids", vec![0]),
                ints("nodes_trueleafs", vec![1]),
                ints("nodes_falsenodeids", vec![1]),
                ints("nodes_falseleafs", vec![1]),
                ints("nodes_missing_value_tracks_true", vec![1]),
                tensor("membership_values", 1, members, Vec::new()),
                ints("leaf_targetids", vec![0, 0]),
                tensor("leaf_weights", 1, vec![2.5, -1.0], Vec::new()),
                int("n_targets", targets),
                int("post_transform", transform),
            ],
            ..Default::default()
        };
        super::super::refusals::tests::graph(vec![node])
    }

    #[test]
    fn a_set_split_is_a_chain_of_equalities_with_nan_tracked_at_once() {
        let imported = import(&graph(0, 1, vec![1.0, 2.0, f32::NAN]), &["a".into(), "b".into()], None).unwrap();
        let Lowered::Forest(ensemble) = imported.model else { panic!("a tree ensemble became a network") };
        let forest = crate::model::trees::Forest::build(ensemble, 2, imported.answers).unwrap();
        let rows = [1.0, 0.0, 2.0, 0.0, 3.0, 0.0, f32::NAN, 0.0, 1.5, 0.0];
        let pass = crate::model::scorer::Scorer::forward(&forest, &rows).unwrap();
        assert_eq!(pass.probabilities, [2.5, 2.5, -1.0, 2.5, -1.0]);
    }

    #[test]
    fn what_is_not_a_probability_or_a_value_is_refused() {
        let names = ["a".to_string(), "b".to_string()];
        let error = import(&graph(1, 3, vec![1.0]), &names, None).err().unwrap();
        assert!(error.contains("post_transform 1 over 3 targets; compiled (onnxruntime's numbering)"), "{error}");
        let error = import(&graph(0, 1, vec![f32::NAN]), &names, None).err().unwrap();
        assert!(error.contains("set split 0 has no members"), "{error}");
    }
}
