//! Why a model without exact explanations of its own (a network, an ONNX
//! pipeline, an INT8 graph) scored a row as it did: interventional Shapley
//! values of what it answers against a background. A coalition S of
//! features is scored as the row with the features outside S replaced by
//! each background row's (a "hybrid" row), and v(S) is the mean of the
//! explained output over the background; a feature's contribution is its
//! Shapley value in the game v, so a row's contributions sum exactly to
//! v(all) − v(none): its output minus the base (efficiency). Up to
//! `EXACT_FEATURES` features every coalition is scored; above, v is walked
//! along `PERMUTATIONS` seeded permutations (each followed by its reverse,
//! the antithetic pair), each keeping efficiency exactly. The explained
//! output (`explained`) is the positive label's log-odds `ln(p1/p0)` for
//! two labels, each class's centred log-probability for more, a
//! regressor's value. A category feature is one column (its code), so it
//! is explained as one feature. This module plans the hybrid rows and
//! reads their answers; the core scores them through the model's batcher
//! with every other request's rows.

use super::manifest::Manifest;

/// The most features explained exactly, over all 2^M coalitions.
pub const EXACT_FEATURES: usize = 12;
/// Permutations walked above `EXACT_FEATURES` (half of them the reverse of the other half).
pub const PERMUTATIONS: usize = 64;
/// The most background rows model.json may give (each multiplies the work).
pub const MAX_BACKGROUND_ROWS: usize = 16;
/// The smallest probability a log-odds is taken of: a network's f32
/// probability of exactly 0 still gives a finite contribution.
const SMALLEST_PROBABILITY: f64 = f32::MIN_POSITIVE as f64;

/// The coalitions scored to explain one row, the same for every row of a
/// model (the permutations are seeded).
pub struct Design {
    inputs: usize,
    /// `None`: every coalition (bit `i` of coalition `c`: feature `i` is the row's).
    permutations: Option<Vec<Vec<usize>>>,
}

impl Design {
    /// The design for a model of `inputs` features.
    pub fn new(inputs: usize) -> Design {
        if inputs <= EXACT_FEATURES {
            return Design { inputs, permutations: None };
        }
        let mut random = SplitMix(0x5eed_cafe_f00d_d00d);
        let mut permutations = Vec::with_capacity(PERMUTATIONS);
        for _ in 0..PERMUTATIONS / 2 {
            let mut order: Vec<usize> = (0..inputs).collect();
            for i in (1..inputs).rev() {
                order.swap(i, (random.next() % (i as u64 + 1)) as usize);
            }
            let reverse = order.iter().rev().copied().collect();
            permutations.push(order);
            permutations.push(reverse);
        }
        Design { inputs, permutations: Some(permutations) }
    }

    /// Whether every coalition is scored (the values are exact).
    pub fn exact(&self) -> bool {
        self.permutations.is_none()
    }

    /// Coalitions scored per explained row (each against every background row).
    pub fn coalitions(&self) -> usize {
        match &self.permutations {
            None => 1 << self.inputs,
            // The empty and the full coalition, then each permutation's proper prefixes.
            Some(permutations) => 2 + permutations.len() * (self.inputs - 1),
        }
    }

    /// Appends to `out` the hybrid rows explaining `row`: coalition by
    /// coalition, each against every row of `background`.
    pub fn hybrids(&self, row: &[f32], background: &[f32], out: &mut Vec<f32>) {
        let mut push = |has: &dyn Fn(usize) -> bool| {
            for base in background.chunks_exact(self.inputs) {
                out.extend((0..self.inputs).map(|i| if has(i) { row[i] } else { base[i] }));
            }
        };
        match &self.permutations {
            None => (0..1usize << self.inputs).for_each(|c| push(&|i| c >> i & 1 == 1)),
            Some(permutations) => {
                push(&|_| false);
                push(&|_| true);
                let mut member = vec![false; self.inputs];
                for order in permutations {
                    member.iter_mut().for_each(|m| *m = false);
                    for &feature in &order[..self.inputs - 1] {
                        member[feature] = true;
                        push(&|i| member[i]);
                    }
                }
            }
        }
    }

    /// One explained output's contributions (each feature's, then the
    /// base) from `values`: v of each coalition, in `hybrids`' order.
    pub fn contributions(&self, values: &[f64]) -> Vec<f64> {
        let m = self.inputs;
        let mut phi = vec![0.0; m + 1];
        match &self.permutations {
            None => {
                // |S|!(M − |S| − 1)!/M! for each coalition size |S|.
                let factorial = |n: usize| (1..=n).map(|k| k as f64).product::<f64>();
                let weight: Vec<f64> = (0..m).map(|s| factorial(s) * factorial(m - s - 1) / factorial(m)).collect();
                for (coalition, v) in values.iter().enumerate() {
                    for (i, phi) in phi[..m].iter_mut().enumerate() {
                        if coalition >> i & 1 == 0 {
                            *phi += weight[coalition.count_ones() as usize] * (values[coalition | 1 << i] - v);
                        }
                    }
                }
                phi[m] = values[0];
            }
            Some(permutations) => {
                for (p, order) in permutations.iter().enumerate() {
                    self.walk(p, order, values, |feature, step| phi[feature] += step);
                }
                phi[..m].iter_mut().for_each(|phi| *phi /= permutations.len() as f64);
                phi[m] = values[0];
            }
        }
        phi
    }

    /// Walks permutation `p` (`order`), telling `step` each feature's
    /// marginal contribution in it.
    fn walk(&self, p: usize, order: &[usize], values: &[f64], mut step: impl FnMut(usize, f64)) {
        let mut before = values[0];
        for (j, &feature) in order.iter().enumerate() {
            let after = if j + 1 == self.inputs { values[1] } else { values[2 + p * (self.inputs - 1) + j] };
            step(feature, after - before);
            before = after;
        }
    }
}

/// The outputs an explanation explains from one row's answer
/// (`probabilities`, as the model answers them): a regressor's value; the
/// positive label's log-odds for two labels; each class's log-probability
/// less their mean for more.
pub fn explained(probabilities: &[f32], out: &mut Vec<f64>) {
    let log = |p: f32| f64::from(p).max(SMALLEST_PROBABILITY).ln();
    match probabilities {
        [value] => out.push(f64::from(*value)),
        [no, yes] => out.push(log(*yes) - log(*no)),
        classes => {
            let start = out.len();
            out.extend(classes.iter().map(|p| log(*p)));
            let mean = out[start..].iter().sum::<f64>() / classes.len() as f64;
            out[start..].iter_mut().for_each(|v| *v -= mean);
        }
    }
}

/// What a model without exact explanations of its own is explained
/// against, prepared once at load: its background rows and the coalitions
/// scored for each explained row.
pub struct Baseline {
    /// Row-major background rows.
    pub background: Vec<f32>,
    pub design: Design,
}

impl Baseline {
    /// `manifest`'s baseline, or why its model cannot be explained (see `background`).
    pub fn of(manifest: &Manifest) -> Result<Baseline, String> {
        Ok(Baseline { background: background(manifest)?, design: Design::new(manifest.features.len()) })
    }
}

/// The background rows `manifest` explains against (row-major): its
/// `background` rows, or else each feature's training median from its
/// `monitoring` statistics (one row); an error saying what to add when it
/// has neither for every feature.
fn background(manifest: &Manifest) -> Result<Vec<f32>, String> {
    if !manifest.background.is_empty() {
        let missing = |v: &Option<f64>| v.map_or(f32::NAN, |v| v as f32);
        return Ok(manifest.background.iter().flat_map(|row| row.iter().map(missing)).collect());
    }
    let medians = manifest.features.iter().map(|name| {
        let bins = manifest.monitoring.as_ref().and_then(|m| m.features.get(name));
        bins.map(|bins| bins.median() as f32).ok_or(name)
    });
    medians.collect::<Result<Vec<f32>, &String>>().map_err(|name| {
        format!(
            "the model has no background to explain against: feature `{name}` has no training statistics \
             (`monitoring.features`) and model.json gives no `background` rows"
        )
    })
}

/// Checks model.json's `background` rows: at most `MAX_BACKGROUND_ROWS`,
/// each a value (finite, or null for missing) per feature.
pub fn check_background(manifest: &Manifest) -> Result<(), String> {
    let rows = &manifest.background;
    if rows.len() > MAX_BACKGROUND_ROWS {
        return Err(format!(
            "`background` has {} rows; give at most {MAX_BACKGROUND_ROWS} (each multiplies an explanation's work)",
            rows.len()
        ));
    }
    for (r, row) in rows.iter().enumerate() {
        if row.len() != manifest.features.len() {
            return Err(format!("`background[{r}]` has {} values for {} features", row.len(), manifest.features.len()));
        }
        if let Some(c) = row.iter().position(|v| v.is_some_and(|v| !v.is_finite() || v.abs() > f64::from(f32::MAX))) {
            return Err(format!("`background[{r}][{c}]` is not a finite f32 (null means missing)"));
        }
    }
    Ok(())
}

/// A small seeded generator (SplitMix64) for the permutations: the same
/// design on every server, so an explanation is reproducible.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::{Design, explained};

    /// v of each coalition in `design`'s order, for `f` of `row` against `background`.
    fn values(design: &Design, f: impl Fn(&[f32]) -> f64, row: &[f32], background: &[f32]) -> Vec<f64> {
        let mut hybrids = Vec::new();
        design.hybrids(row, background, &mut hybrids);
        let per = background.len() / row.len();
        let scored: Vec<f64> = hybrids.chunks_exact(row.len()).map(f).collect();
        scored.chunks_exact(per).map(|c| c.iter().sum::<f64>() / per as f64).collect()
    }

    #[test]
    fn every_coalition_gives_the_shapley_values_of_known_games() {
        // A linear model's value is its weight times the distance from the background.
        let design = Design::new(3);
        assert!(design.exact());
        let linear = |x: &[f32]| f64::from(2.0 * x[0] - x[1] + 0.5 * x[2]);
        let phi = design.contributions(&values(&design, linear, &[1.0, 2.0, 3.0], &[0.0, 1.0, 1.0]));
        assert_eq!(phi, [2.0, -1.0, 1.0, linear(&[0.0, 1.0, 1.0])]);
        // A product's interaction is shared equally, averaged over two background rows.
        let product = |x: &[f32]| f64::from(x[0] * x[1]);
        let phi = design.contributions(&values(&design, product, &[2.0, 3.0, 9.0], &[0.0, 0.0, 0.0, 0.0, 0.0, 5.0]));
        assert_eq!(phi, [3.0, 3.0, 0.0, 0.0]);
    }

    #[test]
    fn sampled_values_keep_efficiency_and_fall_within_four_standard_errors_of_the_exact() {
        let inputs = 14;
        let f = |x: &[f32]| {
            let x: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
            (x[0] * x[1]).tanh()
                + x[2].max(x[3])
                + 0.3 * x[4] * x[5] * x[6]
                + x[7..].iter().map(|v| v.sin()).sum::<f64>()
        };
        let row: Vec<f32> = (0..inputs).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
        let background: Vec<f32> = (0..inputs * 3).map(|i| (i as f32 * 0.61).cos()).collect();
        let sampled = Design::new(inputs);
        assert!(!sampled.exact());
        let (v, all) = (values(&sampled, f, &row, &background), Design { inputs, permutations: None });
        let estimate = sampled.contributions(&v);
        let exact = all.contributions(&values(&all, f, &row, &background));
        let output = f(&row);
        let total: f64 = estimate[..inputs].iter().sum();
        assert!((total + estimate[inputs] - output).abs() < 1e-9, "efficiency: {total} + base ≠ {output}");
        // Each antithetic pair's mean is one independent draw; their spread bounds the error.
        let permutations = sampled.permutations.as_ref().unwrap();
        let mut draws = vec![vec![0.0; permutations.len() / 2]; inputs];
        for (p, order) in permutations.iter().enumerate() {
            sampled.walk(p, order, &v, |feature, step| draws[feature][p / 2] += step / 2.0);
        }
        for feature in 0..inputs {
            let n = draws[feature].len() as f64;
            let mean = draws[feature].iter().sum::<f64>() / n;
            let sd = (draws[feature].iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            let error = (estimate[feature] - exact[feature]).abs();
            assert!(
                error <= 4.0 * sd / n.sqrt() + 1e-9,
                "feature {feature}: off by {error}, standard error {}",
                sd / n.sqrt()
            );
        }
    }

    #[test]
    fn outputs_are_a_value_the_positive_log_odds_or_centred_log_probabilities() {
        let mut out = Vec::new();
        explained(&[7.5], &mut out);
        explained(&[0.2, 0.8], &mut out);
        explained(&[0.5, 0.25, 0.25], &mut out);
        explained(&[1.0, 0.0], &mut out);
        let mean = (0.5f64.ln() + 2.0 * 0.25f64.ln()) / 3.0;
        let expected = [7.5, 4.0f64.ln(), 0.5f64.ln() - mean, 0.25f64.ln() - mean, 0.25f64.ln() - mean];
        for (got, want) in out.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert!(out[5].is_finite() && out[5] < -80.0, "a zero probability stays finite: {}", out[5]);
    }
}
