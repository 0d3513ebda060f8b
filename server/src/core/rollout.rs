//! Release safety for one segment, as its rollout policy says
//! (`model::rollout`): requests that pin no version go to the canary for
//! its share, chosen by hashing a routing key so one customer stays on one
//! version, and to the stable version otherwise; a share of the rows the
//! stable version answers is scored again by the shadow version after the
//! caller has its answer, from a bounded queue, and the two are compared;
//! per window the guard compares the canary's error rate and p95 latency
//! with its limits and with the stable version's, and after enough breached
//! windows in a row sets the canary's share to 0 by itself.
//!
//! A policy's state (`PolicyState`: the canary's share, the guard's books,
//! the shadow's tally) lives as long as the policy file is unchanged, across
//! reloads; each published registry binds it to the served models
//! (`Rollout`).

use crate::core::batching::Outcome;
use crate::core::outcomes::{Outcomes, Recorded};
use crate::core::scores::Scores;
use crate::core::served::ServedModel;
use crate::core::stats::{Mark, Window};
use crate::model::rollout::Policy;
use crate::observe::metrics::Metrics;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};

/// The most rows waiting for (or being scored by) a segment's shadow; more
/// are dropped and counted, so shadowing never holds unbounded memory.
pub const SHADOW_QUEUE_ROWS: usize = 65_536;

/// Shadow batches scored at once per segment.
const SHADOW_CONCURRENCY: usize = 16;

/// A policy in force for one segment and what it has seen.
pub struct PolicyState {
    pub segment: String,
    pub policy: Policy,
    /// The policy file's text: a reload that reads the same text keeps this state.
    pub text: String,
    /// The canary's share now, in basis points: the policy's, or 0 once rolled back.
    canary_basis_points: AtomicU32,
    guard: Mutex<GuardBooks>,
    shadow: ShadowTally,
    metrics: Arc<Metrics>,
}

/// The guard's books: the current window and what the last one showed.
struct GuardBooks {
    started: Instant,
    /// Each version's counts when the window started, and which model they were read from.
    marks: BTreeMap<u64, (usize, Mark)>,
    /// Breached windows in a row.
    breaches: u32,
    rolled_back: Option<String>,
    /// The last complete window, by version.
    last: BTreeMap<u64, Window>,
}

/// What the shadow has done since the policy was read.
#[derive(Default)]
struct ShadowTally {
    rows: AtomicU64,
    agreed: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    /// Σ |Δp| of the positive class, in millionths.
    delta_micros: AtomicU64,
}

/// A segment's rollout as `rollout status` reports it.
#[derive(Debug, Clone)]
pub struct RolloutReport {
    pub policy: Policy,
    pub text: String,
    /// The canary's share now (0 once rolled back).
    pub canary_percent: f64,
    pub rolled_back: Option<String>,
    /// Breached windows in a row so far.
    pub breaches: u32,
    /// The last complete window of each version the policy names.
    pub windows: BTreeMap<u64, Window>,
    pub window_seconds: f64,
    pub shadow: ShadowReport,
}

/// The shadow's comparison with the stable version.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShadowReport {
    pub rows: u64,
    pub agreed: u64,
    pub dropped: u64,
    pub errors: u64,
    pub mean_abs_delta: f64,
}

impl PolicyState {
    /// The state of `policy` (read as `text`) for `segment`, starting now.
    pub fn new(segment: &str, policy: Policy, text: String, metrics: Arc<Metrics>) -> PolicyState {
        let basis_points = policy.canary.map_or(0, |canary| canary.basis_points());
        metrics.release.set_canary_percent(segment, f64::from(basis_points) / 100.0);
        PolicyState {
            segment: segment.to_string(),
            policy,
            text,
            canary_basis_points: AtomicU32::new(basis_points),
            guard: Mutex::new(GuardBooks {
                started: Instant::now(),
                marks: BTreeMap::new(),
                breaches: 0,
                rolled_back: None,
                last: BTreeMap::new(),
            }),
            shadow: ShadowTally::default(),
            metrics,
        }
    }

    fn books(&self) -> MutexGuard<'_, GuardBooks> {
        self.guard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the canary's share to 0 until the policy file changes. Fails when
    /// there is no canary, or it is already rolled back.
    pub fn roll_back(&self, reason: &str, by: &'static str) -> Result<(), String> {
        let Some(canary) = self.policy.canary else {
            return Err(format!("segment `{}` has no canary in its rollout policy", self.segment));
        };
        let mut books = self.books();
        if let Some(earlier) = &books.rolled_back {
            return Err(format!("segment `{}`'s canary is already rolled back: {earlier}", self.segment));
        }
        self.canary_basis_points.store(0, Relaxed);
        books.rolled_back = Some(reason.to_string());
        self.metrics.release.set_canary_percent(&self.segment, 0.0);
        self.metrics.release.rolled_back(&self.segment, by);
        tracing::warn!(
            segment = self.segment,
            canary = canary.version,
            stable = self.policy.stable,
            reason,
            "canary rolled back: requests that pin no version go to the stable version until rollout.json changes"
        );
        Ok(())
    }

    /// What the policy has done so far.
    pub fn report(&self) -> RolloutReport {
        let books = self.books();
        let tally = &self.shadow;
        let rows = tally.rows.load(Relaxed);
        RolloutReport {
            policy: self.policy.clone(),
            text: self.text.clone(),
            canary_percent: f64::from(self.canary_basis_points.load(Relaxed)) / 100.0,
            rolled_back: books.rolled_back.clone(),
            breaches: books.breaches,
            windows: books.last.clone(),
            window_seconds: self.policy.window_seconds(),
            shadow: ShadowReport {
                rows,
                agreed: tally.agreed.load(Relaxed),
                dropped: tally.dropped.load(Relaxed),
                errors: tally.errors.load(Relaxed),
                mean_abs_delta: if rows == 0 {
                    0.0
                } else {
                    tally.delta_micros.load(Relaxed) as f64 / 1e6 / rows as f64
                },
            },
        }
    }
}

/// Which of 10,000 buckets `key` falls in for a draw named `draw`: the same
/// key always lands in the same bucket, on every replica.
fn bucket(draw: &[u8], key: &str) -> u32 {
    let digest = Sha256::new().chain_update(draw).chain_update(key.as_bytes()).finalize();
    let head: [u8; 8] = digest[..8].try_into().expect("a SHA-256 has 32 bytes");
    (u64::from_le_bytes(head) % 10_000) as u32
}

/// Whether `key` is drawn into a share of `basis_points` (of 10,000) by the
/// draw named `draw`; no hashing for a share of none or all.
fn drawn(basis_points: u32, draw: &[u8], key: &str) -> bool {
    basis_points >= 10_000 || (basis_points > 0 && bucket(draw, key) < basis_points)
}

/// A segment's policy bound to the models a registry serves.
pub struct Rollout {
    pub state: Arc<PolicyState>,
    pub stable: Arc<ServedModel>,
    pub canary: Option<Arc<ServedModel>>,
    shadow: Option<Shadow>,
}

/// Where a request goes: the model that answers it, and the shadow that
/// scores its rows again afterwards, when it was drawn for one.
pub struct Route {
    pub model: Arc<ServedModel>,
    pub shadow: Option<Shadow>,
}

impl Route {
    /// A route to `model` alone.
    pub fn to(model: Arc<ServedModel>) -> Route {
        Route { model, shadow: None }
    }
}

/// A segment's shadow: its model and the bounded queue in front of it.
#[derive(Clone)]
pub struct Shadow {
    lane: Arc<Lane>,
    jobs: mpsc::Sender<ShadowJob>,
}

struct Lane {
    model: Arc<ServedModel>,
    state: Arc<PolicyState>,
    basis_points: u32,
    /// Rows queued or being scored.
    held_rows: AtomicUsize,
}

/// Rows the stable version answered, to be scored by the shadow.
struct ShadowJob {
    rows: usize,
    values: Vec<f32>,
    width: usize,
    stable: Vec<f32>,
    classes: usize,
    /// Where the shadow's answer is kept for outcomes: the store, the request's id and the rows' first.
    record: Option<Recorded>,
}

impl Rollout {
    /// Binds `state` to the served `stable`, `canary` and `shadow` models;
    /// the shadow's queue is served by a task on the current runtime.
    pub fn new(
        state: Arc<PolicyState>,
        stable: Arc<ServedModel>,
        canary: Option<Arc<ServedModel>>,
        shadow: Option<Arc<ServedModel>>,
    ) -> Rollout {
        {
            let mut books = state.books();
            for model in std::iter::once(&stable).chain(&canary) {
                let key = Arc::as_ptr(model) as usize;
                if books.marks.get(&model.version).is_none_or(|(read_from, _)| *read_from != key) {
                    books.marks.insert(model.version, (key, model.stats.mark()));
                }
            }
        }
        let shadow = shadow.zip(state.policy.shadow).and_then(|(model, share)| {
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            let lane = Arc::new(Lane {
                model,
                state: state.clone(),
                basis_points: share.basis_points(),
                held_rows: AtomicUsize::new(0),
            });
            let (jobs, queue) = mpsc::channel(1024);
            runtime.spawn(lane.clone().run(queue));
            Some(Shadow { lane, jobs })
        });
        Rollout { state, stable, canary, shadow }
    }

    /// Routes a request that pins no version, drawn by `key`.
    pub fn route(&self, key: &str) -> Route {
        if let Some(canary) = &self.canary
            && drawn(self.state.canary_basis_points.load(Relaxed), b"canary", key)
        {
            return Route::to(canary.clone());
        }
        let shadow = self.shadow.as_ref().filter(|shadow| drawn(shadow.lane.basis_points, b"shadow", key)).cloned();
        Route { model: self.stable.clone(), shadow }
    }

    /// Closes the guard's window when it has run its length: records each
    /// version's window, judges the canary (its requests in the window, its
    /// live quality in `outcomes`) and rolls it back after enough breaches.
    pub fn tick(&self, now: Instant, outcomes: &Outcomes) {
        let state = &self.state;
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
        let seen = |version: u64| books.last.get(&version).copied().unwrap_or_default();
        let (ours, theirs) = (seen(canary.version), seen(self.stable.version));
        let mut breached = Vec::new();
        let served = ours.requests >= guard.min_requests;
        // Quality: both versions' AUC over the same quality window, each with enough outcomes.
        let quality = guard.min_auc_delta.and_then(|limit| {
            let enough = |version: u64| {
                outcomes
                    .summary(&state.segment, version, now)
                    .filter(|s| s.outcomes >= guard.min_outcomes)
                    .and_then(|s| Some((s.auc?, s.outcomes)))
            };
            Some((limit, enough(canary.version)?, enough(self.stable.version)?))
        });
        if !served && quality.is_none() {
            return;
        }
        if let Some((limit, (auc, n), (stable_auc, stable_n))) = quality
            && auc - stable_auc < limit
        {
            breached.push(format!(
                "AUC {auc:.4} ({n} outcomes) minus the stable version's {stable_auc:.4} ({stable_n}) is {:+.4}, below the limit {limit:+.4}",
                auc - stable_auc
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

impl Shadow {
    /// Queues rows the stable version answered (`values`, `width` features
    /// per row, and its `scores`) for the shadow, or drops them (counted)
    /// when its queue is full. Never waits. With `record`, the shadow's
    /// answer is kept for outcomes under that request id.
    pub fn offer(&self, values: Vec<f32>, width: usize, scores: &Scores, record: Option<Recorded>) {
        let lane = &self.lane;
        let rows = scores.rows().len();
        let held = lane.held_rows.fetch_add(rows, Relaxed) + rows;
        let job =
            ShadowJob { rows, values, width, stable: scores.probabilities.clone(), classes: scores.classes, record };
        if held > SHADOW_QUEUE_ROWS || self.jobs.try_send(job).is_err() {
            lane.held_rows.fetch_sub(rows, Relaxed);
            lane.dropped(rows);
        }
    }
}

impl Lane {
    /// Scores queued jobs, a few at a time, until the registry that owns the
    /// queue is gone and the queue is empty.
    async fn run(self: Arc<Self>, mut jobs: mpsc::Receiver<ShadowJob>) {
        let running = Arc::new(Semaphore::new(SHADOW_CONCURRENCY));
        while let Some(job) = jobs.recv().await {
            let Ok(permit) = running.clone().acquire_owned().await else { return };
            let lane = self.clone();
            tokio::spawn(async move {
                let rows = job.rows;
                lane.score(job).await;
                lane.held_rows.fetch_sub(rows, Relaxed);
                drop(permit);
            });
        }
    }

    fn dropped(&self, rows: usize) {
        self.state.shadow.dropped.fetch_add(rows as u64, Relaxed);
        self.state.metrics.release.shadow_dropped(&self.state.segment, self.model.version, rows);
    }

    /// Scores one job with the shadow model and compares it with the stable answer.
    async fn score(&self, job: ShadowJob) {
        let (model, state) = (&self.model, &self.state);
        let rows = job.rows;
        let failed = |reason: &str| {
            state.shadow.errors.fetch_add(rows as u64, Relaxed);
            state.metrics.release.shadow_failed(&state.segment, model.version, rows);
            tracing::debug!(segment = state.segment, version = model.version, reason, "shadow scoring failed");
        };
        if job.width != model.scorer.inputs() {
            return failed("the shadow expects another number of features");
        }
        let started = Instant::now();
        let Some(answer) = model.batcher.submit(job.values, rows, None) else {
            return failed("the shadow no longer computes");
        };
        let probabilities = match answer.await.map(|answer| answer.outcome) {
            Ok(Outcome::Scored(probabilities)) => probabilities,
            _ => return failed("the shadow's forward pass failed"),
        };
        if model.scorer.classes() != job.classes {
            return failed("the shadow has another number of classes");
        }
        let mut agreed = 0;
        let mut deltas = Vec::with_capacity(rows);
        for (stable, shadow) in job.stable.chunks_exact(job.classes).zip(probabilities.chunks_exact(job.classes)) {
            agreed += usize::from(Scores::class_of(stable) == Scores::class_of(shadow));
            let class = Scores::positive_class(stable);
            deltas.push(f64::from((stable[class] - shadow[class]).abs()));
        }
        let tally = &state.shadow;
        tally.rows.fetch_add(rows as u64, Relaxed);
        tally.agreed.fetch_add(agreed as u64, Relaxed);
        tally.delta_micros.fetch_add(deltas.iter().map(|d| (d * 1e6).round() as u64).sum(), Relaxed);
        state.metrics.release.shadow_scored(&state.segment, model.version, agreed, &deltas, started.elapsed());
        if let Some((outcomes, request_id, first_row)) = job.record {
            let scores = Scores { probabilities, classes: job.classes };
            outcomes.record(&request_id, first_row, (&model.segment, model.version, &model.manifest.labels), &scores);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn draws_are_stable_per_key_and_spread_evenly() {
        assert_eq!(bucket(b"canary", "customer-42"), bucket(b"canary", "customer-42"));
        let under: usize = (0..20_000).filter(|i| bucket(b"canary", &format!("key-{i}")) < 2_000).count();
        let share = under as f64 / 20_000.0;
        assert!((share - 0.2).abs() < 0.01, "{share}");
    }
}
