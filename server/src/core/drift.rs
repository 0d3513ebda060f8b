//! Drift: live rows and scores counted into the training statistics' bins
//! (`model::monitoring`) over a sliding window, per served version, and the
//! Population Stability Index of each feature and of the score, once the
//! window holds enough rows (PSI on small windows false-alarms). The compute
//! workers count each forward pass's rows (a local tally, then one short lock
//! per pass, never per row). Above a budget of rows per window they count a
//! random sample (gaps drawn uniformly around a mean `stride` that follows
//! the rate each second, so no batch layout can alias with it), so drift costs
//! the same at any request rate: a pass with no sampled row costs two
//! atomic operations.

use crate::model::monitoring::{Bins, Monitoring};
use crate::model::scorer::scored_class;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The sliding window is this many slots; a slot older than the window is reset.
const SLOTS: u64 = 10;

/// Shares are floored here in the PSI, so an empty bin does not make it infinite.
const FLOOR: f64 = 1e-4;

/// How often the sampling stride follows the rate.
const RATE_EVERY: Duration = Duration::from_secs(1);

/// How drift is measured (`--drift-window-seconds`, `--drift-min-rows`,
/// `--drift-max-rows`).
#[derive(Debug, Clone, Copy)]
pub struct DriftSettings {
    pub window: Duration,
    pub min_rows: u64,
    /// About how many rows a window counts at most (at least twice
    /// `min_rows`); above it, a sample.
    pub max_rows: u64,
}

/// One served version's live histograms.
pub struct Drift {
    /// (feature column, its name, its training bins), then the score's bins.
    columns: Vec<(usize, String, Bins)>,
    score: Option<Bins>,
    /// Where each histogram starts in a slot's counts.
    offsets: Vec<usize>,
    width: usize,
    slot: Duration,
    min_rows: u64,
    max_rows: u64,
    started: Instant,
    /// Rows served since start, and the index of the next row to count (a
    /// copy of `Slots::next`, read without the lock).
    seen: AtomicU64,
    next: AtomicU64,
    slots: Mutex<Slots>,
}

/// The window's slots, and the sampling.
struct Slots {
    slots: Vec<Slot>,
    /// When the stride was last set, and the rows seen then.
    rated_at: (Instant, u64),
    /// One row in about `stride` is counted.
    stride: u64,
    /// The index (in rows served) of the next row to count.
    next: u64,
    /// The sampling's random state (xorshift).
    random: u64,
}

impl Slots {
    /// The gap to the next counted row: uniform in 1..=2·stride−1, mean `stride`.
    fn gap(&mut self) -> u64 {
        if self.stride <= 1 {
            return 1;
        }
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        1 + self.random % (2 * self.stride - 1)
    }
}

#[derive(Clone, Default)]
struct Slot {
    /// Which slot of time since start these counts are from.
    index: u64,
    rows: u64,
    counts: Vec<u64>,
}

/// The PSI of each feature with statistics, and of the score, over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftReport {
    /// Rows counted (all rows served, or the sample above the budget).
    pub rows: u64,
    /// Feature name and PSI, in the model's feature order.
    pub features: Vec<(String, f64)>,
    pub score: Option<f64>,
}

impl Drift {
    /// Live histograms for a model whose `features` carry `monitoring`; none
    /// when it carries no statistics.
    pub fn new(monitoring: Option<&Monitoring>, features: &[String], settings: DriftSettings) -> Option<Drift> {
        let monitoring = monitoring?;
        let columns: Vec<(usize, String, Bins)> = features
            .iter()
            .enumerate()
            .filter_map(|(col, name)| monitoring.features.get(name).map(|bins| (col, name.clone(), bins.clone())))
            .collect();
        let score = monitoring.score.clone();
        if columns.is_empty() && score.is_none() {
            return None;
        }
        let mut offsets = Vec::new();
        let mut width = 0;
        for bins in columns.iter().map(|(_, _, bins)| bins).chain(score.as_ref()) {
            offsets.push(width);
            width += bins.shares.len();
        }
        let slot = (settings.window / SLOTS as u32).max(Duration::from_millis(10));
        Some(Drift {
            columns,
            score,
            offsets,
            width,
            slot,
            min_rows: settings.min_rows,
            max_rows: settings.max_rows.max(2 * settings.min_rows),
            started: Instant::now(),
            seen: AtomicU64::new(0),
            next: AtomicU64::new(0),
            slots: Mutex::new(Slots {
                slots: vec![Slot::default(); SLOTS as usize],
                rated_at: (Instant::now(), 0),
                stride: 1,
                next: 0,
                random: 0x9e37_79b9_7f4a_7c15,
            }),
        })
    }

    /// Counts a forward pass (its sampled rows): `values` row-major,
    /// `inputs` per row, and its `probabilities`, `classes` per row.
    pub fn record(&self, values: &[f32], inputs: usize, probabilities: &[f32], classes: usize) {
        let rows = (values.len() / inputs.max(1)) as u64;
        let before = self.seen.fetch_add(rows, Relaxed);
        if self.next.load(Relaxed) >= before + rows {
            return;
        }
        let index = self.slot_index();
        let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (rated_at, rated_seen) = slots.rated_at;
        let since = rated_at.elapsed();
        let budget = (self.max_rows / SLOTS).max(1);
        if since >= RATE_EVERY.min(self.slot) {
            // The stride that keeps a slot at this rate within its share of the budget.
            let seen = self.seen.load(Relaxed);
            let per_slot = (seen - rated_seen) as f64 * self.slot.as_secs_f64() / since.as_secs_f64();
            slots.stride = ((per_slot / budget as f64) as u64).max(1);
            slots.rated_at = (Instant::now(), seen);
        }
        let mut sampled = Vec::new();
        slots.next = slots.next.max(before);
        while slots.next < before + rows {
            sampled.push((slots.next - before) as usize);
            slots.next += slots.gap();
        }
        self.next.store(slots.next, Relaxed);
        let mut tally = vec![0u64; self.width];
        for &row in &sampled {
            let values = &values[row * inputs..(row + 1) * inputs];
            for ((col, _, bins), offset) in self.columns.iter().zip(&self.offsets) {
                tally[offset + bins.bin(f64::from(values[*col]))] += 1;
            }
            if let Some(bins) = &self.score {
                let scores = &probabilities[row * classes..(row + 1) * classes];
                let offset = self.offsets[self.columns.len()];
                tally[offset + bins.bin(f64::from(scores[scored_class(scores)]))] += 1;
            }
        }
        let slot = &mut slots.slots[(index % SLOTS) as usize];
        if slot.index != index || slot.counts.is_empty() {
            *slot = Slot { index, rows: 0, counts: vec![0; self.width] };
        }
        slot.rows += sampled.len() as u64;
        for (count, add) in slot.counts.iter_mut().zip(tally) {
            *count += add;
        }
        // Over its share before the rate caught up (a burst after a quiet
        // spell): sample half as often at once, so a slot never counts much
        // more than its share.
        let over = slot.rows > budget;
        if over {
            slots.stride = slots.stride.saturating_mul(2);
            slots.rated_at = (Instant::now(), self.seen.load(Relaxed));
        }
    }

    fn slot_index(&self) -> u64 {
        (self.started.elapsed().as_nanos() / self.slot.as_nanos()) as u64
    }

    /// The PSI over the window, or `None` while it holds fewer rows than the minimum.
    pub fn report(&self) -> Option<DriftReport> {
        let now = self.slot_index();
        let mut counts = vec![0u64; self.width];
        let mut rows = 0;
        {
            let slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for slot in slots.slots.iter().filter(|slot| !slot.counts.is_empty() && slot.index + SLOTS > now) {
                rows += slot.rows;
                for (count, add) in counts.iter_mut().zip(&slot.counts) {
                    *count += add;
                }
            }
        }
        if rows < self.min_rows.max(1) {
            return None;
        }
        let psi_at = |index: usize, bins: &Bins| psi(&bins.shares, &counts[self.offsets[index]..][..bins.shares.len()]);
        let features =
            self.columns.iter().enumerate().map(|(i, (_, name, bins))| (name.clone(), psi_at(i, bins))).collect();
        let score = self.score.as_ref().map(|bins| psi_at(self.columns.len(), bins));
        Some(DriftReport { rows, features, score })
    }
}

impl std::fmt::Debug for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drift").field("columns", &self.columns.len()).field("window_slot", &self.slot).finish()
    }
}

/// The Population Stability Index of live `counts` against training `expected` shares:
/// Σ (a − e) · ln(a / e), shares floored at 1e-4.
pub fn psi(expected: &[f64], counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    expected
        .iter()
        .zip(counts)
        .map(|(&e, &c)| {
            let (a, e) = ((c as f64 / total as f64).max(FLOOR), e.max(FLOOR));
            (a - e) * (a / e).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_is_zero_for_the_training_distribution_and_grows_with_a_shift() {
        let expected = [0.25, 0.25, 0.25, 0.25];
        assert!(psi(&expected, &[250, 250, 250, 250]).abs() < 1e-12);
        let shifted = psi(&expected, &[0, 250, 250, 500]);
        assert!(shifted > 0.25, "{shifted}");
    }

    #[test]
    fn above_the_budget_an_evenly_spaced_sample_is_counted() {
        let features = vec!["a".to_string()];
        let monitoring = Monitoring {
            features: [("a".to_string(), Bins { edges: vec![0.0], shares: vec![0.5, 0.5] })].into(),
            score: None,
        };
        let settings = DriftSettings { window: Duration::from_millis(500), min_rows: 10, max_rows: 2_000 };
        let drift = Drift::new(Some(&monitoring), &features, settings).unwrap();
        // Alternating rows below and above the edge (a layout an evenly spaced
        // sample of even stride would alias with), far more than the budget.
        let pass: Vec<f32> = (0..1000).map(|i| if i % 2 == 0 { -1.0 } else { 1.0 }).collect();
        let probabilities = vec![0.5; 2000];
        let until = Instant::now() + Duration::from_millis(300);
        let mut served = 0;
        while Instant::now() < until {
            drift.record(&pass, 1, &probabilities, 2);
            served += 1000;
        }
        let report = drift.report().unwrap();
        assert!(report.rows <= served, "{} counted of {served}", report.rows);
        assert!(report.rows <= 2 * 2_000 + 2 * 1_000, "about --drift-max-rows counted: {} of {served}", report.rows);
        assert!(report.features[0].1 < 0.01, "an unbiased sample of a 50/50 feature: {report:?}");
    }

    #[test]
    fn nothing_is_reported_below_the_minimum_and_old_rows_leave_the_window() {
        let features = vec!["a".to_string(), "b".to_string()];
        let monitoring = Monitoring {
            features: [("b".to_string(), Bins { edges: vec![0.0], shares: vec![0.5, 0.5] })].into(),
            score: Some(Bins { edges: vec![0.5], shares: vec![0.5, 0.5] }),
        };
        let settings = DriftSettings { window: Duration::from_millis(200), min_rows: 4, max_rows: 1_000 };
        let drift = Drift::new(Some(&monitoring), &features, settings).unwrap();
        drift.record(&[9.0, -1.0, 9.0, 1.0], 2, &[0.9, 0.1, 0.2, 0.8], 2);
        assert_eq!(drift.report(), None, "2 rows < the minimum of 4");
        drift.record(&[9.0, 1.0, 9.0, 1.0], 2, &[0.1, 0.9, 0.1, 0.9], 2);
        let report = drift.report().unwrap();
        assert_eq!(report.rows, 4);
        assert_eq!(report.features[0].0, "b");
        assert!(report.features[0].1 > 0.1, "3 of 4 above 0 against half: {report:?}");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(drift.report(), None, "the window has passed");
    }
}
