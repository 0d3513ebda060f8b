//! Dynamic batching: each model version has a queue and its own compute
//! threads. Requests for the same version that arrive while it is busy are
//! merged into one forward pass (candle's per-operation cost is paid once per
//! pass, not once per request), then the probabilities are split back to each
//! caller in order. By default a worker takes whatever is queued the moment
//! it is free (greedy, no added delay); `max_queue_delay` lets it wait for more,
//! `max_batch_rows` caps a pass. A request is never split: one larger than the
//! cap runs alone. Work whose caller has gone (cancelled, or past its deadline)
//! is dropped before compute and counted. Compute runs on these threads,
//! with one exception (unless --inline-lone-requests off): a lone request
//! (the only one being scored, nothing queued for its model) whose pass is
//! small and quick runs where it already is (`Batcher::run_inline`),
//! saving the two cross-thread wake-ups of the hand-off, which cost some
//! hosts twenty times such a pass. A lone request has nothing to overlap
//! with, so the hand-off buys it nothing; requests that arrive together
//! still queue and merge.

use crate::core::error::MAX_VIOLATIONS;
use crate::core::stats::ModelStats;
use crate::model::LoadedModel;
use crate::model::manifest::BatchingSpec;
use crate::model::scorer::Pass;
use crate::observe::metrics::QueueMetrics;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Rows per forward pass when neither the model nor the server sets a cap.
pub const DEFAULT_MAX_BATCH_ROWS: usize = 1024;

/// The most rows a pass may have to run inline (see `Batcher::run_inline`).
const INLINE_MAX_ROWS: usize = 8;
/// The longest the model's last small pass may have taken for the next to
/// run inline: a longer one would hold a reactor thread (and the other
/// connections it serves) too long.
const INLINE_MAX_PASS: Duration = Duration::from_micros(200);

/// How one model version merges requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Whether requests are merged at all; off, every request is its own pass.
    pub enabled: bool,
    /// The most rows merged into one pass.
    pub max_batch_rows: usize,
    /// How long a pass may wait, after its first request, for more.
    pub max_queue_delay: Duration,
}

/// The server's settings that override every model's `batching` in model.json.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    pub disabled: bool,
    pub max_batch_rows: Option<usize>,
    pub max_queue_delay: Option<Duration>,
    /// Whether a lone request may be computed where it is (`Batcher::run_inline`).
    pub inline_lone: bool,
}

impl BatchPolicy {
    /// A model's policy: its model.json values under the server's overrides.
    pub fn resolve(spec: &BatchingSpec, overrides: &Overrides) -> BatchPolicy {
        BatchPolicy {
            enabled: !overrides.disabled,
            max_batch_rows: overrides.max_batch_rows.or(spec.max_batch_rows).unwrap_or(DEFAULT_MAX_BATCH_ROWS).max(1),
            max_queue_delay: overrides
                .max_queue_delay
                .or(spec.max_queue_delay_us.map(Duration::from_micros))
                .unwrap_or(Duration::ZERO),
        }
    }
}

/// What a caller gets back for its job: the outcome, and where its time went.
pub struct Reply {
    pub outcome: Computed,
    pub timing: Timing,
}

/// Where a job's time in the core went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// Waiting for a compute worker.
    pub queue: Duration,
    /// The forward pass the job was part of (zero when dropped).
    pub compute: Duration,
    /// The rows of that pass, the job's and any merged with them.
    pub batch_rows: usize,
}

/// What became of a job.
pub enum Computed {
    /// Row-major probabilities for exactly the job's rows.
    Scored(Vec<f32>),
    /// Some of the job's rows overflowed the model's arithmetic; nothing is
    /// answered for the job. The first `MAX_VIOLATIONS` rows are listed with
    /// the features to blame.
    Overflowed { rows: Vec<Blamed>, total: usize },
    /// Dropped uncomputed: the deadline passed while the job waited (a
    /// cancelled caller is no longer listening for it).
    Dropped,
    /// The forward pass failed (a bug path).
    Failed(String),
}

/// A row (numbered within its job) that overflowed, and the features that
/// made it with their values (empty when no subset could be singled out).
#[derive(Debug, Clone, PartialEq)]
pub struct Blamed {
    pub row: usize,
    pub features: Vec<(usize, f32)>,
}

/// One caller's rows waiting for a forward pass.
struct Job {
    values: Vec<f32>,
    rows: usize,
    queued: Instant,
    give_up_at: Option<Instant>,
    reply: oneshot::Sender<Reply>,
}

/// Why a job left the queue without being computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its deadline had passed.
    Expired,
    /// Its caller had gone (cancelled the call, closed the stream).
    Cancelled,
}

impl DropReason {
    /// The reason as the metrics label it.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Expired => "deadline",
            DropReason::Cancelled => "cancelled",
        }
    }
}

impl Job {
    fn dropped(&self, now: Instant) -> Option<DropReason> {
        if self.give_up_at.is_some_and(|at| now >= at) {
            Some(DropReason::Expired)
        } else if self.reply.is_closed() {
            Some(DropReason::Cancelled)
        } else {
            None
        }
    }
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
    /// Workers waiting on `arrived`: a submission wakes one only when one
    /// waits (a notify is a syscall even when nobody listens, and under
    /// load the workers are mostly busy computing).
    waiting: usize,
}

/// A model version's request queue and merge policy.
pub struct Batcher {
    policy: BatchPolicy,
    queue: Mutex<Queue>,
    arrived: Condvar,
    /// Where queue depth, waits, passes and drops are reported.
    metrics: QueueMetrics,
    /// Whether a lone request may run inline: a CPU model under a policy
    /// with no batching window (a window asks for requests to be merged).
    inline: bool,
    /// Requests queued or being computed, by the workers or inline.
    outstanding: AtomicUsize,
    /// How long the last pass of at most `INLINE_MAX_ROWS` rows took, in
    /// nanoseconds (0 before the first).
    small_pass_ns: AtomicU64,
}

impl Batcher {
    /// A queue under `policy`; `inline`: a lone request's quick pass may run
    /// where it is (not turned off, and the model computes on the CPU).
    pub fn new(policy: BatchPolicy, inline: bool, metrics: QueueMetrics) -> Batcher {
        Batcher {
            policy,
            queue: Mutex::new(Queue { jobs: VecDeque::new(), closed: false, waiting: 0 }),
            arrived: Condvar::new(),
            metrics,
            inline: inline && policy.max_queue_delay.is_zero(),
            outstanding: AtomicUsize::new(0),
            small_pass_ns: AtomicU64::new(0),
        }
    }

    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    /// The model's compute series (explanations count their rows there too).
    pub fn metrics(&self) -> &QueueMetrics {
        &self.metrics
    }

    /// Queues `values` (validated, `rows` rows) for a forward pass; the receiver
    /// answers once it ran, or once the job was dropped because `give_up_at`
    /// had passed or the receiver was gone. `None` when the server has
    /// stopped computing.
    pub fn submit(
        &self,
        values: Vec<f32>,
        rows: usize,
        give_up_at: Option<Instant>,
    ) -> Option<oneshot::Receiver<Reply>> {
        let (reply, answer) = oneshot::channel();
        let job = Job { values, rows, queued: Instant::now(), give_up_at, reply };
        let mut queue = self.lock();
        if queue.closed {
            return None;
        }
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        queue.jobs.push_back(job);
        let wake = queue.waiting > 0;
        drop(queue);
        self.metrics.queued();
        if wake {
            self.arrived.notify_one();
        }
        Some(answer)
    }

    /// Stops the workers once the queue is empty; later submissions are refused.
    pub fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The loop of one compute worker for `model`: takes batches until the
    /// queue is closed and empty. A panic answers that batch's callers
    /// (their replies are dropped: INTERNAL) and does not leave the queue
    /// unserved.
    pub fn work(&self, model: &LoadedModel, stats: &ModelStats) {
        while let Some(batch) = self.next_batch() {
            let jobs = batch.len();
            self.run_caught(model, stats, batch);
            self.outstanding.fetch_sub(jobs, Ordering::AcqRel);
        }
    }

    /// Computes `values` (validated, `rows` rows) right here, on the
    /// caller's thread, when the request is alone: the only one being scored
    /// by the models that may inline (`lone`: where requests arrive together, merging them
    /// is worth more than saving a hand-off, and a reactor thread busy with
    /// one would delay the others), nothing queued or being computed for the
    /// model, at most `INLINE_MAX_ROWS` rows, the model's last small pass no
    /// longer than `INLINE_MAX_PASS`, a CPU model with no batching window. The receiver is answered before this returns. Gives
    /// the values back when the request must be queued (`submit`) instead.
    pub fn run_inline(
        &self,
        model: &LoadedModel,
        stats: &ModelStats,
        values: Vec<f32>,
        rows: usize,
        give_up_at: Option<Instant>,
        lone: bool,
    ) -> Result<oneshot::Receiver<Reply>, Vec<f32>> {
        let quick = self.small_pass_ns.load(Ordering::Relaxed) <= INLINE_MAX_PASS.as_nanos() as u64;
        let alone = || self.outstanding.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed).is_ok();
        if !lone || !self.inline || rows > INLINE_MAX_ROWS || !quick || !alone() {
            return Err(values);
        }
        if self.lock().closed {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            return Err(values);
        }
        let (reply, answer) = oneshot::channel();
        self.metrics.queued();
        self.run_caught(model, stats, vec![Job { values, rows, queued: Instant::now(), give_up_at, reply }]);
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        Ok(answer)
    }

    /// Whether a lone request may run inline at all (see `run_inline`).
    pub fn inlines(&self) -> bool {
        self.inline
    }

    /// `run`, with a panic answering the batch's callers (their replies are
    /// dropped: INTERNAL) instead of unwinding into the worker or the caller.
    fn run_caught(&self, model: &LoadedModel, stats: &ModelStats, batch: Vec<Job>) {
        if std::panic::catch_unwind(AssertUnwindSafe(|| self.run(model, stats, batch))).is_err() {
            tracing::error!(
                segment = model.segment,
                version = model.version,
                "a forward pass panicked; its callers were answered INTERNAL"
            );
        }
    }

    /// Blocks until there is work, then takes the next batch under the policy;
    /// `None` once closed and empty.
    fn next_batch(&self) -> Option<Vec<Job>> {
        let mut queue = self.lock();
        let mut batch = Vec::new();
        let mut rows = 0;
        let mut wait_until: Option<Instant> = None;
        loop {
            while let Some(front) = queue.jobs.front() {
                let full =
                    !batch.is_empty() && (!self.policy.enabled || rows + front.rows > self.policy.max_batch_rows);
                if full {
                    return Some(batch);
                }
                let job = queue.jobs.pop_front().expect("front exists");
                rows += job.rows;
                wait_until.get_or_insert(job.queued + self.policy.max_queue_delay);
                batch.push(job);
            }
            // The queue is empty.
            let now = Instant::now();
            match wait_until {
                Some(until) if !self.policy.enabled || rows >= self.policy.max_batch_rows || now >= until => {
                    return Some(batch);
                }
                Some(until) => {
                    queue.waiting += 1;
                    queue = self
                        .arrived
                        .wait_timeout(queue, until - now)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0;
                    queue.waiting -= 1;
                }
                None if queue.closed => return None,
                None => {
                    queue.waiting += 1;
                    queue = self.arrived.wait(queue).unwrap_or_else(|poisoned| poisoned.into_inner());
                    queue.waiting -= 1;
                }
            }
        }
    }
}

impl Batcher {
    /// Computes one batch and answers its callers. Jobs whose caller has gone
    /// or whose deadline has passed (perhaps while the batch waited for more)
    /// are dropped here, just before compute.
    fn run(&self, model: &LoadedModel, stats: &ModelStats, batch: Vec<Job>) {
        let now = Instant::now();
        let mut jobs = Vec::with_capacity(batch.len());
        for job in batch {
            match job.dropped(now) {
                Some(reason) => {
                    let queue = now - job.queued;
                    self.metrics.dequeued(queue);
                    self.metrics.dropped(reason.label());
                    let timing = Timing { queue, ..Timing::default() };
                    let _ = job.reply.send(Reply { outcome: Computed::Dropped, timing });
                }
                None => jobs.push(job),
            }
        }
        if jobs.is_empty() {
            return;
        }
        let rows: usize = jobs.iter().map(|job| job.rows).sum();
        let merged: Vec<f32>;
        let values: &[f32] = match &jobs[..] {
            [only] => &only.values,
            jobs => {
                let mut values = Vec::with_capacity(rows * model.scorer.inputs());
                for job in jobs {
                    values.extend_from_slice(&job.values);
                }
                merged = values;
                &merged
            }
        };
        let result = model.scorer.forward(values);
        if let (Ok(pass), Some(drift)) = (&result, &stats.drift) {
            drift.record(values, model.scorer.inputs(), &pass.probabilities, model.scorer.outputs());
        }
        let stages = result.as_ref().map(|pass| pass.stages).unwrap_or_default();
        if rows <= INLINE_MAX_ROWS {
            self.small_pass_ns.store(stages.total().as_nanos() as u64, Ordering::Relaxed);
        }

        stats.record_pass(rows, stages);
        self.metrics.pass(rows, stages.total());
        let computed = |job: &Job| {
            let queue = now - job.queued;
            self.metrics.dequeued(queue);
            stats.record_compute(queue, stages);
            Timing { queue, compute: stages.total(), batch_rows: rows }
        };
        match result {
            Ok(pass) => answer(model, jobs, pass, rows, computed),
            Err(error) => {
                for job in jobs {
                    let timing = computed(&job);
                    let outcome = Computed::Failed(format!("forward pass failed: {error}"));
                    let _ = job.reply.send(Reply { outcome, timing });
                }
            }
        }
    }
}

/// Splits a pass's probabilities back to its jobs: each gets the slice of
/// its own rows. Taken from the end, so every split moves only that job's
/// part and the first job (the only one, for an unmerged pass) keeps the buffer.
/// A job with an overflowed row gets the rows named instead; the other jobs
/// of the pass are answered as usual (rows never affect each other).
/// `computed` records a job's share of the pass and says its timing.
fn answer(model: &LoadedModel, jobs: Vec<Job>, pass: Pass, rows: usize, computed: impl Fn(&Job) -> Timing) {
    let classes = model.scorer.outputs();
    let Pass { mut probabilities, stages: _, overflowed } = pass;
    let mut end_row = rows;
    for job in jobs.into_iter().rev() {
        let first_row = end_row - job.rows;
        let mine = probabilities.split_off(first_row * classes);
        let timing = computed(&job);
        let start = overflowed.partition_point(|&row| row < first_row);
        let end = overflowed.partition_point(|&row| row < end_row);
        let outcome = if start == end {
            Computed::Scored(mine)
        } else {
            let rows = overflowed[start..end]
                .iter()
                .take(MAX_VIOLATIONS)
                .map(|&row| {
                    let row = row - first_row;
                    let inputs = model.scorer.inputs();
                    let values = &job.values[row * inputs..(row + 1) * inputs];
                    let features = model.scorer.blame(values);
                    Blamed { row, features: features.into_iter().map(|col| (col, values[col])).collect() }
                })
                .collect();
            Computed::Overflowed { rows, total: end - start }
        };
        let _ = job.reply.send(Reply { outcome, timing });
        end_row = first_row;
    }
}

#[cfg(test)]
mod tests;
