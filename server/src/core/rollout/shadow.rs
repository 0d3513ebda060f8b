//! A segment's shadow: a share of the rows the stable version answered is
//! scored again by the shadow version after the caller has its answer, from
//! a bounded queue (full: dropped and counted, never waited for), and the two
//! answers are compared; the shadow's own answer is kept for outcomes, so
//! its live quality is measured on the same rows.

use super::PolicyState;
use crate::core::batching::Computed;
use crate::core::outcomes::AnswerKey;
use crate::core::scores::Scores;
use crate::core::served::ServedModel;
use crate::model::rollout_policy::Share;
use crate::model::scorer::scored_class;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc};

/// The most rows waiting for (or being scored by) a segment's shadow; more
/// are dropped and counted, so shadowing never holds unbounded memory.
pub const SHADOW_QUEUE_ROWS: usize = 65_536;

/// Shadow batches scored at once per segment.
const SHADOW_CONCURRENCY: usize = 16;

/// What the shadow has done since the policy was read.
#[derive(Default)]
pub(super) struct ShadowTally {
    rows: AtomicU64,
    agreed: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    /// Σ |Δp| of the positive class (a regressor: |Δ| of its value), in millionths.
    delta_micros: AtomicU64,
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

impl ShadowTally {
    /// The comparison so far.
    pub(super) fn report(&self) -> ShadowReport {
        let rows = self.rows.load(Relaxed);
        ShadowReport {
            rows,
            agreed: self.agreed.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            errors: self.errors.load(Relaxed),
            mean_abs_delta: if rows == 0 { 0.0 } else { self.delta_micros.load(Relaxed) as f64 / 1e6 / rows as f64 },
        }
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
    record: Option<AnswerKey>,
}
impl Shadow {
    /// The shadow `model` for `state`'s policy, scoring `share` of the
    /// stable version's rows; its queue is served by a task on `runtime`
    /// until the last handle to it goes.
    pub fn new(runtime: &Handle, model: Arc<ServedModel>, state: &Arc<PolicyState>, share: Share) -> Shadow {
        let lane = Arc::new(Lane {
            model,
            state: state.clone(),
            basis_points: share.basis_points(),
            held_rows: AtomicUsize::new(0),
        });
        let (jobs, queue) = mpsc::channel(1024);
        runtime.spawn(lane.clone().run(queue));
        Shadow { lane, jobs }
    }

    /// The shadow's share of the stable version's rows, in basis points.
    pub fn basis_points(&self) -> u32 {
        self.lane.basis_points
    }

    /// Queues rows the stable version answered (`values`, `width` features
    /// per row, and its `scores`) for the shadow, or drops them (counted)
    /// when its queue is full. Never waits. With `record`, the shadow's
    /// answer is kept for outcomes under that request id.
    pub fn offer(&self, values: Vec<f32>, width: usize, scores: &Scores, record: Option<AnswerKey>) {
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
            Ok(Computed::Scored(probabilities)) => probabilities,
            _ => return failed("the shadow's forward pass failed"),
        };
        if model.scorer.outputs() != job.classes {
            return failed("the shadow has another number of classes");
        }
        let mut agreed = 0;
        let mut deltas = Vec::with_capacity(rows);
        for (stable, shadow) in job.stable.chunks_exact(job.classes).zip(probabilities.chunks_exact(job.classes)) {
            agreed += usize::from(Scores::agree(stable, shadow));
            let class = scored_class(stable);
            deltas.push(f64::from((stable[class] - shadow[class]).abs()));
        }
        let tally = &state.shadow;
        tally.rows.fetch_add(rows as u64, Relaxed);
        tally.agreed.fetch_add(agreed as u64, Relaxed);
        tally.delta_micros.fetch_add(deltas.iter().map(|d| (d * 1e6).round() as u64).sum(), Relaxed);
        state.metrics.release.shadow_scored(&state.segment, model.version, agreed, &deltas, started.elapsed());
        if let Some(key) = job.record {
            key.keep(model, &Scores { probabilities, classes: job.classes });
        }
    }
}
