//! Why a forest scored a row as it did: path-dependent TreeSHAP (Lundberg,
//! Erion and Lee, "Consistent Individualized Feature Attribution for Tree
//! Ensembles", 2018, Algorithm 2), the exact Shapley values of the margin
//! when a feature left out of a coalition follows the training rows' split
//! (each node's cover) instead of the row's value. It is what XGBoost's
//! `pred_contribs` and LightGBM's `pred_contrib` compute: per output group,
//! each feature's contribution in margin space, then the bias (the base
//! margin plus each tree's cover-weighted mean leaf); a row's values sum to
//! its margin. A row goes down a split exactly as scoring sends it
//! (`goes_left`: thresholds, missing values, category sets).

use super::{FEATURE, Forest, LEAF, goes_left};
use rayon::prelude::*;

/// Rows explained together on one thread.
const CHUNK_ROWS: usize = 16;

/// One feature on the path from the root to the node being visited: the
/// fraction of coalitions without it (`zero`: the covers' share) and with it
/// (`one`: 1 when the row goes this way, else 0) that reach here, and the
/// weight of the path's subsets of its size.
#[derive(Debug, Clone, Copy, Default)]
struct Step {
    feature: u32,
    zero: f64,
    one: f64,
    weight: f64,
}

/// Each row's contributions (`groups × (inputs + 1)` per row: a group's
/// features then its bias), or `None` when the forest keeps no covers.
pub(super) fn contributions(forest: &Forest, values: &[f32]) -> Option<Vec<f32>> {
    if forest.covers.is_empty() {
        return None;
    }
    let width = forest.base.len() * (forest.inputs + 1);
    let rows = values.len() / forest.inputs;
    let mut out = vec![0.0f32; rows * width];
    let bias = biases(forest);
    let explain = |(rows, out): (&[f32], &mut [f32])| {
        let mut phi = vec![0.0f64; width];
        // Each level's copy of the path: at most depth + 2 steps (the root's placeholder included).
        let depth = forest.trees.iter().map(|t| t.depth as usize).max().unwrap_or(0) + 2;
        let mut path = vec![Step::default(); depth * (depth + 1) / 2];
        for (row, out) in rows.chunks_exact(forest.inputs).zip(out.chunks_exact_mut(width)) {
            phi.iter_mut().for_each(|p| *p = 0.0);
            for tree in &forest.trees {
                let group = tree.group as usize * (forest.inputs + 1);
                let phi = &mut phi[group..group + forest.inputs];
                walk(forest, row, tree.root, &mut path, 0, 1.0, 1.0, u32::MAX, phi);
            }
            for (group, bias) in bias.iter().enumerate() {
                phi[group * (forest.inputs + 1) + forest.inputs] = *bias;
            }
            for (out, phi) in out.iter_mut().zip(&phi) {
                *out = *phi as f32;
            }
        }
    };
    values.par_chunks(CHUNK_ROWS * forest.inputs).zip(out.par_chunks_mut(CHUNK_ROWS * width)).for_each(explain);
    Some(out)
}

/// Per output group, the margin of an average training row: the base plus
/// each tree's leaves weighted by their covers.
fn biases(forest: &Forest) -> Vec<f64> {
    let mut bias = forest.base.clone();
    for tree in &forest.trees {
        bias[tree.group as usize] += mean_leaf(forest, tree.root);
    }
    bias
}

/// The cover-weighted mean of the leaves under `node`.
fn mean_leaf(forest: &Forest, node: u32) -> f64 {
    let n = forest.nodes[node as usize];
    if n.feature & LEAF != 0 {
        return forest.leaves[node as usize];
    }
    let cover = |child: u32| forest.covers[child as usize];
    (cover(n.left) * mean_leaf(forest, n.left) + cover(n.right) * mean_leaf(forest, n.right)) / cover(node)
}

/// Visits `node`, reached through a split on `feature` that passes on the
/// fractions `zero` and `one`. `buffer` starts with the parent's path
/// (`parent` steps); this node's path is built right after it, and its
/// children's after that. Each leaf adds its share to `phi`.
#[allow(clippy::too_many_arguments)]
fn walk(
    forest: &Forest,
    row: &[f32],
    node: u32,
    buffer: &mut [Step],
    parent: usize,
    zero: f64,
    one: f64,
    feature: u32,
    phi: &mut [f64],
) {
    let (above, buffer) = buffer.split_at_mut(parent);
    buffer[..parent].copy_from_slice(above);
    let mut len = extend(buffer, parent, zero, one, feature);
    let n = forest.nodes[node as usize];
    if n.feature & LEAF != 0 {
        let leaf = forest.leaves[node as usize];
        for i in 1..len {
            let step = buffer[i];
            phi[step.feature as usize] += unwound_sum(&buffer[..len], i) * (step.one - step.zero) * leaf;
        }
        return;
    }
    let split = n.feature & FEATURE;
    let (hot, cold) = if goes_left::<true>(n.threshold, n.feature, row, 0, &forest.sets) {
        (n.left, n.right)
    } else {
        (n.right, n.left)
    };
    // A feature split on again above: its earlier step is taken out, its fractions carried on.
    let (mut zero, mut one) = (1.0, 1.0);
    if let Some(k) = (1..len).find(|&k| buffer[k].feature == split) {
        (zero, one) = (buffer[k].zero, buffer[k].one);
        unwind(&mut buffer[..len], k);
        len -= 1;
    }
    let cover = forest.covers[node as usize];
    let share = |child: u32| forest.covers[child as usize] / cover;
    walk(forest, row, hot, buffer, len, zero * share(hot), one, split, phi);
    walk(forest, row, cold, buffer, len, zero * share(cold), 0.0, split, phi);
}

/// 1/n for the path lengths of all but absurdly deep trees: the weights'
/// updates multiply instead of dividing, the walk's dearest step.
const RECIPROCALS: [f64; 256] = {
    let mut table = [0.0; 256];
    let mut n = 1;
    while n < 256 {
        table[n] = 1.0 / n as f64;
        n += 1;
    }
    table
};

/// 1/n.
#[inline(always)]
fn reciprocal(n: usize) -> f64 {
    RECIPROCALS.get(n).copied().unwrap_or(1.0 / n as f64)
}

/// Adds a step to the path's first `len` steps; returns the new length.
fn extend(path: &mut [Step], len: usize, zero: f64, one: f64, feature: u32) -> usize {
    path[len] = Step { feature, zero, one, weight: if len == 0 { 1.0 } else { 0.0 } };
    let share = reciprocal(len + 1);
    for i in (0..len).rev() {
        path[i + 1].weight += one * path[i].weight * (i + 1) as f64 * share;
        path[i].weight = zero * path[i].weight * (len - i) as f64 * share;
    }
    len + 1
}

// A step's `one` fraction is 1 (the row goes this way) or 0, so where the
// paper's unwinding divides by it (when it is not 0) it divides by 1, left out.

/// Takes step `i` out of `path` (the weights as if it had never been added).
fn unwind(path: &mut [Step], i: usize) {
    let last = path.len() - 1;
    let (zero, one) = (path[i].zero, path[i].one);
    let total = (last + 1) as f64;
    let mut next = path[last].weight;
    for j in (0..last).rev() {
        if one != 0.0 {
            let weight = path[j].weight;
            path[j].weight = next * total * reciprocal(j + 1);
            next = weight - path[j].weight * zero * (last - j) as f64 * reciprocal(last + 1);
        } else {
            path[j].weight = path[j].weight * total * reciprocal(last - j) / zero;
        }
    }
    for j in i..last {
        let after = path[j + 1];
        path[j] = Step { weight: path[j].weight, ..after };
    }
}

/// The total weight of `path` with step `i` taken out (`unwind`'s weights
/// summed, without changing the path).
fn unwound_sum(path: &[Step], i: usize) -> f64 {
    let last = path.len() - 1;
    let (zero, one) = (path[i].zero, path[i].one);
    let total = (last + 1) as f64;
    let mut sum = 0.0;
    if one != 0.0 {
        let (mut next, share) = (path[last].weight, zero * reciprocal(last + 1));
        for j in (0..last).rev() {
            let weight = next * total * reciprocal(j + 1);
            sum += weight;
            next = path[j].weight - weight * (last - j) as f64 * share;
        }
    } else {
        let scale = total / zero;
        for j in (0..last).rev() {
            sum += path[j].weight * scale * reciprocal(last - j);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use crate::model::repository;
    use candle_core::Device;
    use serde_json::Value;
    use std::path::Path;

    /// The fixture's rows (null: missing) and the library's contributions.
    fn fixture(segment: &str) -> (Vec<f32>, Vec<f64>) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/formats/repo").join(segment);
        let read = |file: &str| -> Value { serde_json::from_slice(&std::fs::read(dir.join(file)).unwrap()).unwrap() };
        let (expected, contributions) = (read("expected.json"), read("contributions.json"));
        let cells = |doc: &Value, key: &str| -> Vec<Option<f64>> {
            doc[key]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|row| row.as_array().unwrap().iter().map(Value::as_f64))
                .collect()
        };
        let rows = cells(&expected, "rows").into_iter().map(|v| v.map_or(f32::NAN, |v| v as f32)).collect();
        (rows, cells(&contributions, "contributions").into_iter().map(Option::unwrap).collect())
    }

    #[test]
    fn contributions_equal_the_libraries_own_tree_shap() {
        for segment in ["xgboost-binary", "xgboost-multi", "lightgbm-binary", "lightgbm-multi", "lightgbm-zero"] {
            let dir =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/formats/repo").join(segment).join("1");
            let model = repository::load_version(segment, 1, &dir, &Device::Cpu, "cpu", u64::MAX).unwrap();
            let (rows, expected) = fixture(segment);
            let got = model.scorer.contributions(&rows).expect("a booster with covers explains exactly");
            assert_eq!(got.len(), expected.len(), "{segment}");
            let worst = got.iter().zip(&expected).map(|(g, e)| (f64::from(*g) - e).abs()).fold(0.0, f64::max);
            assert!(worst <= 1e-4, "{segment}: off by {worst}");
        }
    }
}
