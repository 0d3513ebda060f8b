//! How well one model version scores, measured live from joined outcomes
//! (a prediction and the true label that came back for it): AUC, log loss,
//! and precision/recall of the class the server predicted (a regressor: the
//! mean absolute and root mean squared error of its values), over a sliding
//! time window. Each outcome adds to fixed histograms of the scores (1,000
//! bins, uniform in log-odds so that scores crowded near 0 or 1 still
//! separate), never to a list of scores: constant cost per outcome, constant
//! memory per version. The window is `SLICES` slices of equal time; the
//! oldest slice is dropped whole as time moves on.

use std::time::{Duration, Instant};

/// Score histogram bins per class.
pub const BINS: usize = 1000;
/// The window's slices: its resolution in time.
const SLICES: usize = 12;
/// The log-odds the bins span; scores beyond fall in the end bins.
const LOGIT_SPAN: f64 = 14.0;
/// A probability's floor in the log loss (an answer of exactly 0 for the
/// true class would otherwise cost infinity).
const LOSS_FLOOR: f64 = 1e-15;

/// One slice of the window: per class, the histograms of that class's
/// probability over the rows whose true class it was (`positive`) and the
/// rows whose true class it was not (`negative`), and the decisions.
#[derive(Clone)]
struct Slice {
    started: Instant,
    positive: Vec<u32>,
    negative: Vec<u32>,
    /// Per class: rows predicted as it, and of those, rows truly of it; rows truly of it.
    predicted: Vec<u64>,
    correct: Vec<u64>,
    actual: Vec<u64>,
    loss: f64,
    /// A regressor's: Σ |value − truth| and Σ (value − truth)².
    absolute: f64,
    squared: f64,
    count: u64,
}

impl Slice {
    fn new(classes: usize, started: Instant) -> Slice {
        // A regressor (one "class") keeps only its error sums: no score histograms.
        let bins = if classes > 1 { classes * BINS } else { 0 };
        Slice {
            started,
            positive: vec![0; bins],
            negative: vec![0; bins],
            predicted: vec![0; classes],
            correct: vec![0; classes],
            actual: vec![0; classes],
            loss: 0.0,
            absolute: 0.0,
            squared: 0.0,
            count: 0,
        }
    }
}

/// A version's joined outcomes over the last `window`.
pub struct Quality {
    /// The classifier's classes; 1 for a regressor.
    classes: usize,
    slice_length: Duration,
    /// Oldest first; the last is the one being filled.
    slices: Vec<Slice>,
}

/// What `Quality::summary` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Joined outcomes in the window.
    pub outcomes: u64,
    /// AUC of the positive class (binary), else the mean of each class's
    /// one-vs-rest AUC over the classes that have both kinds of rows. None
    /// until both a positive and a negative row were joined.
    pub auc: Option<f64>,
    /// Mean negative log probability of the true class (classifiers).
    pub log_loss: Option<f64>,
    /// Of the rows predicted as the positive class (binary; the mean over
    /// classes for more), how many were; of the rows of it, how many were
    /// predicted. None when nothing was predicted as it / nothing was of it.
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// A regressor's mean |value − truth| and √(mean (value − truth)²).
    pub mean_absolute_error: Option<f64>,
    pub rmse: Option<f64>,
}

impl Quality {
    /// An empty window of `window` (at least one second) for `classes`
    /// classes (1: a regressor's values).
    pub fn new(classes: usize, window: Duration, now: Instant) -> Quality {
        let slice_length = (window / SLICES as u32).max(Duration::from_millis(100));
        Quality { classes, slice_length, slices: vec![Slice::new(classes, now)] }
    }

    /// Adds one outcome: the row's class `probabilities` and its true class.
    pub fn add(&mut self, probabilities: &[f32], truth: usize, predicted: usize, now: Instant) {
        debug_assert_eq!(probabilities.len(), self.classes);
        self.advance(now);
        let classes = self.classes;
        let slice = self.slices.last_mut().expect("a window has a current slice");
        for (class, p) in probabilities.iter().enumerate() {
            let bin = class * BINS + bin_of(*p as f64);
            if class == truth {
                slice.positive[bin] += 1;
            } else {
                slice.negative[bin] += 1;
            }
        }
        slice.predicted[predicted.min(classes - 1)] += 1;
        slice.actual[truth] += 1;
        if predicted == truth {
            slice.correct[truth] += 1;
        }
        slice.loss -= (probabilities[truth] as f64).max(LOSS_FLOOR).ln();
        slice.count += 1;
    }

    /// Adds one outcome of a regressor: its answered `value` and the true one.
    pub fn add_value(&mut self, value: f32, truth: f64, now: Instant) {
        self.advance(now);
        let slice = self.slices.last_mut().expect("a window has a current slice");
        let error = f64::from(value) - truth;
        slice.absolute += error.abs();
        slice.squared += error * error;
        slice.count += 1;
    }

    /// Starts a new slice when the current one is full, dropping those that
    /// left the window.
    fn advance(&mut self, now: Instant) {
        let current = self.slices.last().expect("a window has a current slice").started;
        if now.saturating_duration_since(current) < self.slice_length {
            return;
        }
        let window = self.slice_length * SLICES as u32;
        self.slices.retain(|slice| now.saturating_duration_since(slice.started) < window);
        self.slices.push(Slice::new(self.classes, now));
    }

    /// The window's measures as of `now`.
    pub fn summary(&mut self, now: Instant) -> Summary {
        self.advance(now);
        let classes = self.classes;
        let mut total = Slice::new(classes, now);
        for slice in &self.slices {
            let add = |into: &mut [u32], from: &[u32]| into.iter_mut().zip(from).for_each(|(a, b)| *a += b);
            add(&mut total.positive, &slice.positive);
            add(&mut total.negative, &slice.negative);
            for class in 0..classes {
                total.predicted[class] += slice.predicted[class];
                total.correct[class] += slice.correct[class];
                total.actual[class] += slice.actual[class];
            }
            total.loss += slice.loss;
            total.absolute += slice.absolute;
            total.squared += slice.squared;
            total.count += slice.count;
        }
        let per_outcome = |sum: f64| (total.count > 0).then(|| sum / total.count as f64);
        if classes == 1 {
            return Summary {
                outcomes: total.count,
                auc: None,
                log_loss: None,
                precision: None,
                recall: None,
                mean_absolute_error: per_outcome(total.absolute),
                rmse: per_outcome(total.squared).map(f64::sqrt),
            };
        }
        // Binary: the second label is the positive class; more: each class against the rest.
        let measured: Vec<usize> = if classes == 2 { vec![1] } else { (0..classes).collect() };
        let mean = |values: Vec<f64>| (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
        let auc = mean(
            measured
                .iter()
                .filter_map(|&c| auc(&total.positive[c * BINS..][..BINS], &total.negative[c * BINS..][..BINS]))
                .collect(),
        );
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let precision = mean(measured.iter().filter_map(|&c| ratio(total.correct[c], total.predicted[c])).collect());
        let recall = mean(measured.iter().filter_map(|&c| ratio(total.correct[c], total.actual[c])).collect());
        Summary {
            outcomes: total.count,
            auc,
            log_loss: per_outcome(total.loss),
            precision,
            recall,
            mean_absolute_error: None,
            rmse: None,
        }
    }
}

/// The bin of probability `p`: its log-odds over [-LOGIT_SPAN, LOGIT_SPAN]
/// in `BINS` equal steps (the end bins take everything beyond).
fn bin_of(p: f64) -> usize {
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let logit = (p / (1.0 - p)).ln();
    let position = (logit + LOGIT_SPAN) / (2.0 * LOGIT_SPAN) * BINS as f64;
    (position.max(0.0) as usize).min(BINS - 1)
}

/// The area under the ROC curve from the scores' histograms over rows of
/// the class (`positive`) and rows of others (`negative`): the chance that
/// a random positive row scores above a random negative one, a tie (same
/// bin) counting half. None without rows of both kinds.
fn auc(positive: &[u32], negative: &[u32]) -> Option<f64> {
    let (p_total, n_total) =
        (positive.iter().map(|&c| c as f64).sum::<f64>(), negative.iter().map(|&c| c as f64).sum::<f64>());
    if p_total == 0.0 || n_total == 0.0 {
        return None;
    }
    let mut below = 0.0;
    let mut area = 0.0;
    for (p, n) in positive.iter().zip(negative) {
        let (p, n) = (*p as f64, *n as f64);
        area += p * (below + n / 2.0);
        below += n;
    }
    Some(area / (p_total * n_total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::scorer::predicted_class;

    /// A small deterministic generator (xorshift), uniform in (0, 1).
    struct Uniform(u64);
    impl Uniform {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
    }

    /// The exact AUC of scored rows (score, positive?), ties counting half.
    fn exact_auc(rows: &[(f64, bool)]) -> f64 {
        let positives: Vec<f64> = rows.iter().filter(|r| r.1).map(|r| r.0).collect();
        let mut negatives: Vec<f64> = rows.iter().filter(|r| !r.1).map(|r| r.0).collect();
        negatives.sort_by(f64::total_cmp);
        let mut area = 0.0;
        for p in &positives {
            let below = negatives.partition_point(|n| n < p) as f64;
            let ties = negatives.partition_point(|n| n <= p) as f64 - below;
            area += below + ties / 2.0;
        }
        area / (positives.len() as f64 * negatives.len() as f64)
    }

    #[test]
    fn the_histogram_auc_is_within_0_005_of_the_exact_one_even_for_scores_crowded_near_zero() {
        let now = Instant::now();
        // A rare positive class (5 %) and a model whose scores are mostly tiny,
        // as a fraud model's are, at three levels of skill.
        for skill in [0.5, 1.5, 3.0] {
            let mut random = Uniform(0x9e37_79b9_7f4a_7c15);
            let mut quality = Quality::new(2, Duration::from_secs(3600), now);
            let mut rows = Vec::new();
            for _ in 0..20_000 {
                let positive = random.next() < 0.05;
                // Log-odds: a logistic spread around -6, shifted up for positives.
                let u = random.next();
                let noise = (u / (1.0 - u)).ln();
                let logit = -6.0 + if positive { skill } else { 0.0 } + noise;
                let p = 1.0 / (1.0 + (-logit).exp());
                let probabilities = [(1.0 - p) as f32, p as f32];
                let predicted = predicted_class(&probabilities);
                quality.add(&probabilities, usize::from(positive), predicted, now);
                rows.push((p as f32 as f64, positive));
            }
            let summary = quality.summary(now);
            let exact = exact_auc(&rows);
            let measured = summary.auc.expect("both classes were seen");
            assert!((measured - exact).abs() < 0.005, "skill {skill}: histogram {measured:.5}, exact {exact:.5}");
            assert_eq!(summary.outcomes, 20_000);
        }
    }

    #[test]
    fn log_loss_precision_and_recall_are_those_of_the_rows() {
        let now = Instant::now();
        let mut quality = Quality::new(2, Duration::from_secs(60), now);
        // (P(positive), truth): predicted positive when P > 0.5.
        let rows = [(0.9f32, 1), (0.8, 0), (0.3, 1), (0.1, 0), (0.6, 1)];
        for (p, truth) in rows {
            let probabilities = [1.0 - p, p];
            quality.add(&probabilities, truth, usize::from(p > 0.5), now);
        }
        let summary = quality.summary(now);
        // Predicted positive: 0.9 (yes), 0.8 (no), 0.6 (yes) → precision 2/3; positives 3, found 2 → recall 2/3.
        assert_eq!(summary.precision, Some(2.0 / 3.0));
        assert_eq!(summary.recall, Some(2.0 / 3.0));
        let expected: f64 =
            rows.iter().map(|&(p, truth)| -(if truth == 1 { p } else { 1.0 - p } as f64).ln()).sum::<f64>()
                / rows.len() as f64;
        assert!((summary.log_loss.unwrap() - expected).abs() < 1e-9);
        assert_eq!((summary.mean_absolute_error, summary.rmse), (None, None));
        // Positives score 0.9, 0.3, 0.6 against negatives 0.8, 0.1: pairs won 2 + 1 + 1 of 6.
        assert!((summary.auc.unwrap() - 4.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn a_regressor_is_measured_by_its_errors() {
        let now = Instant::now();
        let mut quality = Quality::new(1, Duration::from_secs(60), now);
        assert_eq!(quality.summary(now).mean_absolute_error, None);
        // Errors +1, −3, 0: |e| mean 4/3, e² mean 10/3.
        for (value, truth) in [(2.0f32, 1.0), (0.5, 3.5), (7.25, 7.25)] {
            quality.add_value(value, truth, now);
        }
        let summary = quality.summary(now);
        assert_eq!(summary.outcomes, 3);
        assert!((summary.mean_absolute_error.unwrap() - 4.0 / 3.0).abs() < 1e-12);
        assert!((summary.rmse.unwrap() - (10.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!((summary.auc, summary.log_loss, summary.precision), (None, None, None));
    }

    #[test]
    fn outcomes_leave_the_window_as_time_passes() {
        let start = Instant::now();
        let window = Duration::from_secs(120);
        let mut quality = Quality::new(2, window, start);
        quality.add(&[0.2, 0.8], 1, 1, start);
        quality.add(&[0.7, 0.3], 0, 0, start + Duration::from_secs(60));
        assert_eq!(quality.summary(start + Duration::from_secs(61)).outcomes, 2);
        assert_eq!(quality.summary(start + Duration::from_secs(125)).outcomes, 1, "the first left the window");
        assert_eq!(quality.summary(start + Duration::from_secs(200)).outcomes, 0);
    }

    #[test]
    fn no_auc_without_both_kinds_of_rows_and_one_vs_rest_for_more_classes() {
        let now = Instant::now();
        let mut quality = Quality::new(2, Duration::from_secs(60), now);
        quality.add(&[0.2, 0.8], 1, 1, now);
        assert_eq!(quality.summary(now).auc, None);

        let mut three = Quality::new(3, Duration::from_secs(60), now);
        // A perfect model over three classes: each class's one-vs-rest AUC is 1.
        for truth in 0..3 {
            let mut p = [0.1f32; 3];
            p[truth] = 0.8;
            three.add(&p, truth, truth, now);
        }
        let summary = three.summary(now);
        assert_eq!(summary.auc, Some(1.0));
        assert_eq!(summary.precision, Some(1.0));
    }
}
