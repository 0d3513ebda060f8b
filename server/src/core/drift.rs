//! Drift: live rows and scores counted into the training statistics' bins
//! (`model::monitoring`) over a sliding window, per served version, and the
//! Population Stability Index of each feature and of the score, once the
//! window holds enough rows (PSI on small windows false-alarms). The compute
//! workers count each forward pass's rows (a local tally, then one short lock
//! per pass, never per row).

use crate::core::scores::Scores;
use crate::model::monitoring::{Bins, Monitoring};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The sliding window is this many slots; a slot older than the window is reset.
const SLOTS: u64 = 10;

/// Shares are floored here in the PSI, so an empty bin does not make it infinite.
const FLOOR: f64 = 1e-4;

/// How drift is measured (`--drift-window-seconds`, `--drift-min-rows`).
#[derive(Debug, Clone, Copy)]
pub struct DriftSettings {
    pub window: Duration,
    pub min_rows: u64,
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
    started: Instant,
    slots: Mutex<Vec<Slot>>,
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
            started: Instant::now(),
            slots: Mutex::new(vec![Slot::default(); SLOTS as usize]),
        })
    }

    /// Counts a forward pass: `values` row-major, `inputs` per row, and its
    /// `probabilities`, `classes` per row.
    pub fn record(&self, values: &[f32], inputs: usize, probabilities: &[f32], classes: usize) {
        let mut tally = vec![0u64; self.width];
        for row in values.chunks_exact(inputs) {
            for ((col, _, bins), offset) in self.columns.iter().zip(&self.offsets) {
                tally[offset + bins.bin(f64::from(row[*col]))] += 1;
            }
        }
        if let Some(bins) = &self.score {
            let offset = self.offsets[self.columns.len()];
            for row in probabilities.chunks_exact(classes) {
                tally[offset + bins.bin(f64::from(row[Scores::positive_class(row)]))] += 1;
            }
        }
        let index = self.slot_index();
        let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = &mut slots[(index % SLOTS) as usize];
        if slot.index != index || slot.counts.is_empty() {
            *slot = Slot { index, rows: 0, counts: vec![0; self.width] };
        }
        slot.rows += (values.len() / inputs.max(1)) as u64;
        for (count, add) in slot.counts.iter_mut().zip(tally) {
            *count += add;
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
            for slot in slots.iter().filter(|slot| !slot.counts.is_empty() && slot.index + SLOTS > now) {
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
    fn nothing_is_reported_below_the_minimum_and_old_rows_leave_the_window() {
        let features = vec!["a".to_string(), "b".to_string()];
        let monitoring = Monitoring {
            features: [("b".to_string(), Bins { edges: vec![0.0], shares: vec![0.5, 0.5] })].into(),
            score: Some(Bins { edges: vec![0.5], shares: vec![0.5, 0.5] }),
        };
        let settings = DriftSettings { window: Duration::from_millis(200), min_rows: 4 };
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
