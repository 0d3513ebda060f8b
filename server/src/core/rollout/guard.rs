//! The rollout guard: per window of the policy's length it closes each
//! version's window of requests, judges the canary against the policy's
//! limits and the stable version (`judge`, a pure function of what the
//! window showed), and after enough breached windows in a row rolls the
//! canary back by itself.

use super::{PolicyState, Rollout};
use crate::core::outcomes::Outcomes;
use crate::core::served::ServedModel;
use crate::core::stats::{Mark, Window};
use crate::model::rollout_policy::Guard;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// The guard's books: the current window and what the last one showed.
pub(super) struct GuardBooks {
    started: Instant,
    /// Each version's counts when the window started, and which model they were read from.
    marks: BTreeMap<u64, (usize, Mark)>,
    /// Breached windows in a row.
    pub(super) breaches: u32,
    pub(super) rolled_back: Option<String>,
    /// The last complete window, by version.
    pub(super) last: BTreeMap<u64, Window>,
}

/// One version's live quality over the quality window: its AUC (a
/// classifier's) or mean absolute error (a regressor's), and how many
/// joined outcomes it rests on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveQuality {
    pub auc: Option<f64>,
    pub mean_absolute_error: Option<f64>,
    pub outcomes: u64,
}

/// What one closed window showed the guard.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    pub canary: Window,
    pub stable: Window,
    /// Both versions' quality (canary, stable), when each has enough outcomes.
    pub quality: Option<(LiveQuality, LiveQuality)>,
}

impl GuardBooks {
    pub(super) fn new() -> GuardBooks {
        GuardBooks {
            started: Instant::now(),
            marks: BTreeMap::new(),
            breaches: 0,
            rolled_back: None,
            last: BTreeMap::new(),
        }
    }

    /// Starts counting `models`' requests from now, unless their counts are
    /// already read from the same model (a reload that kept it).
    pub(super) fn watch<'a>(&mut self, models: impl Iterator<Item = &'a Arc<ServedModel>>) {
        for model in models {
            let key = Arc::as_ptr(model) as usize;
            if self.marks.get(&model.version).is_none_or(|(read_from, _)| *read_from != key) {
                self.marks.insert(model.version, (key, model.stats.mark()));
            }
        }
    }
}

/// The guard's judgement of one window: `None` when there was too little to
/// judge (the breach count stands); else each limit the canary breached, in
/// words (none: it held, and the count starts again).
pub fn judge(guard: &Guard, seen: &Seen) -> Option<Vec<String>> {
    let (ours, theirs) = (&seen.canary, &seen.stable);
    let served = ours.requests >= guard.min_requests;
    let pair = |measure: fn(&LiveQuality) -> Option<f64>| {
        let (canary, stable) = seen.quality?;
        Some((measure(&canary)?, measure(&stable)?, canary.outcomes, stable.outcomes))
    };
    let auc = guard.min_auc_delta.zip(pair(|q| q.auc));
    let mae = guard.max_mae_ratio.zip(pair(|q| q.mean_absolute_error));
    if !served && auc.is_none() && mae.is_none() {
        return None;
    }
    let mut breached = Vec::new();
    if let Some((limit, (canary, stable, ours, theirs))) = auc
        && canary - stable < limit
    {
        breached.push(format!(
            "AUC {canary:.4} ({ours} outcomes) minus the stable version's {stable:.4} ({theirs}) is {:+.4}, below the limit {limit:+.4}",
            canary - stable
        ));
    }
    if let Some((limit, (canary, stable, ours, theirs))) = mae
        && canary > stable * limit
    {
        breached.push(format!(
            "mean absolute error {canary:.6} ({ours} outcomes) is {:.3}× the stable version's {stable:.6} ({theirs}), over the limit {limit}×",
            canary / stable
        ));
    }
    if let Some(max) = guard.max_error_rate
        && served
        && ours.error_rate() > max
        && ours.error_rate() > theirs.error_rate()
    {
        breached.push(format!(
            "error rate {:.1} % ({} of {}) over the limit {:.1} % and the stable version's {:.1} %",
            ours.error_rate() * 100.0,
            ours.errors,
            ours.requests,
            max * 100.0,
            theirs.error_rate() * 100.0
        ));
    }
    if let (Some(max_ms), Some(p95), true) = (guard.max_p95_ms, ours.p95, served) {
        let ms = p95.as_secs_f64() * 1e3;
        if ms > max_ms && theirs.p95.is_none_or(|stable| p95 > stable) {
            breached.push(format!("p95 {ms:.1} ms over the limit {max_ms} ms and the stable version's"));
        }
    }
    Some(breached)
}

impl Rollout {
    /// Closes the guard's window when it has run its length: records each
    /// version's window, judges the canary (its requests in the window, its
    /// live quality in `outcomes`) and rolls it back after enough breaches.
    pub fn tick(&self, now: Instant, outcomes: &Outcomes) {
        let state: &PolicyState = &self.state;
        let length = Duration::from_secs_f64(state.policy.window_seconds());
        let mut books = state.books();
        if now.duration_since(books.started) < length {
            return;
        }
        books.started = now;
        for model in std::iter::once(&self.stable).chain(&self.canary) {
            let key = Arc::as_ptr(model) as usize;
            let mark = model.stats.mark();
            let window = match books.marks.get(&model.version) {
                Some((read_from, earlier)) if *read_from == key => Window::between(earlier, &mark),
                _ => Window::default(),
            };
            books.last.insert(model.version, window);
            books.marks.insert(model.version, (key, mark));
        }
        let (Some(canary), Some(guard)) = (&self.canary, state.policy.guard) else { return };
        if books.rolled_back.is_some() || state.canary_basis_points.load(Relaxed) == 0 {
            return;
        }
        let measured = |version: u64| {
            let summary =
                outcomes.summary(&state.segment, version, now).filter(|s| s.outcomes >= guard.min_outcomes)?;
            Some(LiveQuality {
                auc: summary.auc,
                mean_absolute_error: summary.mean_absolute_error,
                outcomes: summary.outcomes,
            })
        };
        let seen = |version: u64| books.last.get(&version).copied().unwrap_or_default();
        let seen = Seen {
            canary: seen(canary.version),
            stable: seen(self.stable.version),
            quality: (guard.min_auc_delta.is_some() || guard.max_mae_ratio.is_some())
                .then(|| Some((measured(canary.version)?, measured(self.stable.version)?)))
                .flatten(),
        };
        let Some(breached) = judge(&guard, &seen) else { return };
        if breached.is_empty() {
            books.breaches = 0;
            return;
        }
        books.breaches += 1;
        state.metrics.release.guard_breached(&state.segment);
        let what = format!("canary version {}: {}", canary.version, breached.join("; "));
        tracing::warn!(segment = state.segment, breaches = books.breaches, "rollout guard breached: {what}");
        if books.breaches >= guard.breaches_to_rollback {
            let reason = format!(
                "{} breached {}-second windows in a row; the last: {what}",
                books.breaches, guard.window_seconds
            );
            drop(books);
            let _ = state.roll_back(&reason, "guard");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{LiveQuality, Seen, judge};
    use crate::core::stats::Window;
    use crate::model::rollout_policy::Guard;
    use std::time::Duration;

    fn guard() -> Guard {
        Guard {
            window_seconds: 10.0,
            min_requests: 100,
            max_error_rate: Some(0.05),
            max_p95_ms: Some(50.0),
            breaches_to_rollback: 2,
            min_auc_delta: Some(-0.02),
            max_mae_ratio: Some(1.1),
            min_outcomes: 50,
        }
    }

    fn window(requests: u64, errors: u64, p95_ms: u64) -> Window {
        let p95 = Some(Duration::from_millis(p95_ms));
        Window { requests, errors, p50: p95, p95 }
    }

    #[test]
    fn too_few_requests_and_no_quality_leave_nothing_to_judge() {
        let seen = Seen { canary: window(99, 99, 900), stable: window(1000, 0, 1), quality: None };
        assert_eq!(judge(&guard(), &seen), None);
    }

    #[test]
    fn a_canary_within_its_limits_holds() {
        let seen = Seen { canary: window(200, 2, 20), stable: window(2000, 10, 15), quality: None };
        assert_eq!(judge(&guard(), &seen), Some(Vec::new()));
    }

    #[test]
    fn errors_and_latency_breach_only_when_worse_than_the_stable_version_too() {
        let slow_and_failing = Seen { canary: window(200, 40, 80), stable: window(2000, 20, 10), quality: None };
        let breached = judge(&guard(), &slow_and_failing).unwrap();
        assert_eq!(breached.len(), 2, "{breached:?}");
        assert!(breached[0].starts_with("error rate 20.0 % (40 of 200)"), "{breached:?}");
        assert!(breached[1].starts_with("p95 80.0 ms over the limit 50 ms"), "{breached:?}");
        // The stable version is as bad: the canary is not to blame.
        let both_bad = Seen { canary: window(200, 40, 80), stable: window(2000, 800, 90), quality: None };
        assert_eq!(judge(&guard(), &both_bad), Some(Vec::new()));
    }

    #[test]
    fn quality_is_judged_without_enough_requests_and_against_the_limit() {
        let auc = |auc: f64, outcomes: u64| LiveQuality { auc: Some(auc), mean_absolute_error: None, outcomes };
        let (worse, stable) = (auc(0.80, 60), auc(0.85, 500));
        let seen = Seen { canary: window(3, 0, 1), stable: window(3, 0, 1), quality: Some((worse, stable)) };
        let breached = judge(&guard(), &seen).unwrap();
        assert_eq!(breached.len(), 1, "{breached:?}");
        assert!(breached[0].contains("is -0.0500, below the limit -0.0200"), "{breached:?}");
        let close = Seen { quality: Some((auc(0.84, 60), stable)), ..seen };
        assert_eq!(judge(&guard(), &close), Some(Vec::new()));
        let unguarded = Guard { min_auc_delta: None, ..guard() };
        assert_eq!(judge(&unguarded, &seen), None, "quality alone counts only where the policy sets a limit");
    }

    #[test]
    fn a_regressors_canary_breaches_when_its_error_grows_past_the_ratio() {
        let mae = |mae: f64| LiveQuality { auc: None, mean_absolute_error: Some(mae), outcomes: 80 };
        let seen = Seen { canary: window(3, 0, 1), stable: window(3, 0, 1), quality: Some((mae(2.4), mae(2.0))) };
        let breached = judge(&guard(), &seen).unwrap();
        assert_eq!(breached.len(), 1, "{breached:?}");
        assert!(
            breached[0].contains("is 1.200× the stable version's 2.000000 (80), over the limit 1.1×"),
            "{breached:?}"
        );
        let close = Seen { quality: Some((mae(2.1), mae(2.0))), ..seen };
        assert_eq!(judge(&guard(), &close), Some(Vec::new()));
        let auc_only = Guard { max_mae_ratio: None, ..guard() };
        assert_eq!(judge(&auc_only, &seen), None, "an AUC limit has nothing to judge in a regressor");
    }
}
