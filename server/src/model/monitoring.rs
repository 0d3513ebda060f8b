//! The training statistics a `model.json` may carry (`"monitoring"`), against
//! which the server measures drift: per feature, and for the predicted score,
//! bin edges (e.g. the training deciles) and the share of training rows in
//! each bin. A value falls in bin `i` when exactly `i` edges are below it
//! (numpy's `searchsorted(edges, x, side="left")`), so `k` edges make `k + 1`
//! bins and a 0/1 feature needs one edge, 0. A missing value (NaN, which
//! tree models accept) has no edge below it and counts in the first bin, so
//! statistics of features with missing values must count them there too.
//! Checked at load, never on the request path.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Training statistics of a model's inputs and score.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// By feature name (any subset of `features`).
    #[serde(default)]
    pub features: BTreeMap<String, Bins>,
    /// Of the predicted score: the positive class's probability for two
    /// labels, the top class's probability for more, a regressor's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<Bins>,
}

/// A histogram of training values: `edges` ascending, `shares` one per bin
/// (`edges.len() + 1`), summing to 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bins {
    pub edges: Vec<f64>,
    pub shares: Vec<f64>,
}

/// The most edges one histogram may have.
pub const MAX_EDGES: usize = 100;

impl Bins {
    /// The histogram of `values` over `edges` (ascending, no repeats).
    pub fn of(values: impl Iterator<Item = f64>, edges: Vec<f64>) -> Bins {
        let mut counts = vec![0u64; edges.len() + 1];
        let mut total = 0u64;
        for value in values {
            counts[bin(&edges, value)] += 1;
            total += 1;
        }
        let shares = counts.iter().map(|&c| c as f64 / total.max(1) as f64).collect();
        Bins { edges, shares }
    }

    /// The median as the histogram places it: the upper edge of the bin
    /// where the shares reach one half (the middle edge of deciles); in the
    /// top bin, the last edge.
    pub fn median(&self) -> f64 {
        let mut below = 0.0;
        let bin = self.shares.iter().position(|share| {
            below += share;
            below >= 0.5
        });
        let last = self.edges.len() - 1;
        self.edges[bin.unwrap_or(last).min(last)]
    }

    /// The decile histogram of `values` (at least one), as `candela-train`
    /// and `candela model init` write it: six significant digits keep
    /// model.json readable, and the shares still sum to 1 within 1e-5.
    pub fn deciles(mut values: Vec<f64>) -> Bins {
        let edges = decile_edges(&mut values);
        let bins = Bins::of(values.into_iter(), edges);
        let round = |v: f64| format!("{v:.6e}").parse::<f64>().unwrap_or(v);
        Bins {
            edges: bins.edges.into_iter().map(round).collect(),
            shares: bins.shares.into_iter().map(round).collect(),
        }
    }

    /// The bin `value` falls in.
    pub fn bin(&self, value: f64) -> usize {
        bin(&self.edges, value)
    }

    fn check(&self, what: &str) -> Result<(), String> {
        if self.edges.is_empty() || self.edges.len() > MAX_EDGES {
            return Err(format!("`{what}.edges` has {} edges: give 1 to {MAX_EDGES}", self.edges.len()));
        }
        if !self.edges.iter().all(|e| e.is_finite()) || !self.edges.windows(2).all(|w| w[0] < w[1]) {
            return Err(format!("`{what}.edges` must be finite and strictly ascending"));
        }
        if self.shares.len() != self.edges.len() + 1 {
            return Err(format!(
                "`{what}.shares` has {} entries: {} edges make {} bins",
                self.shares.len(),
                self.edges.len(),
                self.edges.len() + 1
            ));
        }
        let sum: f64 = self.shares.iter().sum();
        if !self.shares.iter().all(|s| s.is_finite() && *s >= 0.0) || (sum - 1.0).abs() > 1e-3 {
            return Err(format!("`{what}.shares` must be non-negative and sum to 1 (they sum to {sum})"));
        }
        Ok(())
    }
}

/// How many of `edges` are below `value`.
fn bin(edges: &[f64], value: f64) -> usize {
    edges.partition_point(|&edge| edge < value)
}

impl Monitoring {
    /// Checks the statistics against the model's `features`.
    pub fn check(&self, features: &[String]) -> Result<(), String> {
        for (name, bins) in &self.features {
            if !features.contains(name) {
                return Err(format!("`monitoring.features` names `{name}`, which is not one of `features`"));
            }
            bins.check(&format!("monitoring.features.{name}"))?;
        }
        if let Some(score) = &self.score {
            score.check("monitoring.score")?;
        }
        Ok(())
    }
}

/// The edges of the deciles of `values` (repeats removed, so a 0/1 feature
/// gets one edge), as `candela-train` writes them.
pub fn decile_edges(values: &mut [f64]) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> = (1..10).map(|d| values[(values.len() * d / 10).min(values.len() - 1)]).collect();
    edges.dedup();
    // A value equal to the largest edge falls below it; when that edge is the
    // maximum, the last bin would always be empty: drop such an edge.
    if edges.len() > 1 && edges.last() == values.last() {
        edges.pop();
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_the_bin_of_the_edges_below_them() {
        let bins = Bins { edges: vec![0.0, 1.0], shares: vec![0.2, 0.3, 0.5] };
        assert_eq!(bins.bin(-1.0), 0);
        assert_eq!(bins.bin(0.0), 0, "an edge's own value is in the bin below it (numpy's side=left)");
        assert_eq!(bins.bin(0.5), 1);
        assert_eq!(bins.bin(1.0), 1);
        assert_eq!(bins.bin(7.0), 2);
        assert!(bins.check("x").is_ok());
    }

    #[test]
    fn bad_statistics_say_what_to_fix() {
        let features = vec!["a".to_string()];
        let unknown = Monitoring {
            features: [("b".into(), Bins { edges: vec![0.0], shares: vec![0.5, 0.5] })].into(),
            score: None,
        };
        assert!(unknown.check(&features).unwrap_err().contains("`b`"));
        let unsorted = Bins { edges: vec![1.0, 0.0], shares: vec![0.3, 0.3, 0.4] };
        assert!(unsorted.check("s").unwrap_err().contains("ascending"));
        let short = Bins { edges: vec![0.0], shares: vec![1.0] };
        assert!(short.check("s").unwrap_err().contains("2 bins"));
        let sum = Bins { edges: vec![0.0], shares: vec![0.5, 0.6] };
        assert!(sum.check("s").unwrap_err().contains("sum to 1"));
    }

    #[test]
    fn a_binary_feature_gets_one_edge_and_two_bins() {
        let mut values: Vec<f64> = (0..100).map(|i| if i < 70 { 0.0 } else { 1.0 }).collect();
        let edges = decile_edges(&mut values);
        assert_eq!(edges, vec![0.0]);
        let bins = Bins::of(values.iter().copied(), edges);
        assert_eq!(bins.shares, vec![0.7, 0.3]);
    }
}
