//! Dynamic batching: each model version has a queue and its own compute
//! threads. Requests for the same version that arrive while it is busy are
//! merged into one forward pass (candle's per-operation cost is paid once per
//! pass, not once per request), then the probabilities are split back to each
//! caller in order. By default a worker takes whatever is queued the moment
//! it is free (greedy, no added delay); `max_queue_delay` lets it wait for more,
//! `max_batch_rows` caps a pass. A request is never split: one larger than the
//! cap runs alone. Work whose caller has gone (cancelled, or past its deadline)
//! is dropped before compute and counted. Compute runs on these threads only,
//! never on tokio's reactor threads.

use crate::error::MAX_VIOLATIONS;
use crate::inference::Call;
use crate::model::Pass;
use crate::repository::Model;
use crate::repository::manifest::BatchingSpec;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Rows per forward pass when neither the model nor the server sets a cap.
pub const DEFAULT_MAX_BATCH_ROWS: usize = 1024;

/// How one model version merges requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
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
}

impl Policy {
    /// A model's policy: its model.json values under the server's overrides.
    pub fn resolve(spec: &BatchingSpec, overrides: &Overrides) -> Policy {
        Policy {
            enabled: !overrides.disabled,
            max_batch_rows: overrides.max_batch_rows.or(spec.max_batch_rows).unwrap_or(DEFAULT_MAX_BATCH_ROWS).max(1),
            max_queue_delay: overrides
                .max_queue_delay
                .or(spec.max_queue_delay_us.map(Duration::from_micros))
                .unwrap_or(Duration::ZERO),
        }
    }
}

/// What a caller gets back for its job.
pub enum Outcome {
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
    call: Call,
    queued: Instant,
    give_up_at: Option<Instant>,
    reply: oneshot::Sender<Outcome>,
}

/// Why a job left the queue without being computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its deadline had passed.
    Expired,
    /// Its caller had gone (cancelled the call, closed the stream).
    Cancelled,
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
}

/// A model version's request queue and merge policy.
pub struct Batcher {
    policy: Policy,
    queue: Mutex<Queue>,
    arrived: Condvar,
}

impl Batcher {
    pub fn new(policy: Policy) -> Batcher {
        Batcher { policy, queue: Mutex::new(Queue { jobs: VecDeque::new(), closed: false }), arrived: Condvar::new() }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Queues `values` (validated, `rows` rows) for a forward pass; the receiver
    /// answers once it ran. `None` when the server has stopped computing.
    pub fn submit(&self, values: Vec<f32>, rows: usize, call: &Call) -> Option<oneshot::Receiver<Outcome>> {
        let (reply, answer) = oneshot::channel();
        let job =
            Job { values, rows, call: call.clone(), queued: Instant::now(), give_up_at: call.give_up_at(), reply };
        let mut queue = self.lock();
        if queue.closed {
            return None;
        }
        queue.jobs.push_back(job);
        drop(queue);
        call.metrics.queued();
        self.arrived.notify_one();
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
                    queue =
                        self.arrived.wait_timeout(queue, until - now).unwrap_or_else(|poisoned| poisoned.into_inner()).0
                }
                None if queue.closed => return None,
                None => queue = self.arrived.wait(queue).unwrap_or_else(|poisoned| poisoned.into_inner()),
            }
        }
    }
}

/// The compute threads of every served model. Each worker is a small rayon
/// pool (`threads` threads) running the worker loop on one of its threads:
/// candle's parallel kernels (softmax, large matrix multiplies) then run on
/// the worker itself and its pool, instead of handing every operation to
/// rayon's global pool and waiting for it. Dropping this closes the models'
/// queues: the workers finish what is queued, then their threads exit.
pub struct Workers {
    models: Vec<Arc<Model>>,
    _pools: Vec<rayon::ThreadPool>,
}

impl Workers {
    /// Starts `per_model` workers of `threads` threads for each of `models`.
    pub fn start<'a>(
        models: impl Iterator<Item = &'a Arc<Model>>,
        per_model: usize,
        threads: usize,
    ) -> Result<Workers, rayon::ThreadPoolBuildError> {
        let models: Vec<Arc<Model>> = models.cloned().collect();
        let mut pools = Vec::new();
        for model in &models {
            for index in 0..per_model.max(1) {
                let name = format!("compute-{}-{}-{index}", model.segment, model.version);
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads.max(1))
                    .thread_name(move |thread| format!("{name}.{thread}"))
                    .build()?;
                let model = model.clone();
                pool.spawn(move || {
                    while let Some(batch) = model.batcher.next_batch() {
                        // A panic answers this batch's callers (their replies are
                        // dropped: INTERNAL) and must not leave the queue unserved.
                        if std::panic::catch_unwind(AssertUnwindSafe(|| run(&model, batch))).is_err() {
                            tracing::error!(
                                segment = model.segment,
                                version = model.version,
                                "a forward pass panicked; its callers were answered INTERNAL"
                            );
                        }
                    }
                });
                pools.push(pool);
            }
        }
        Ok(Workers { models, _pools: pools })
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for model in &self.models {
            model.batcher.close();
        }
    }
}

/// Computes one batch and answers its callers. Jobs whose caller has gone
/// or whose deadline has passed (perhaps while the batch waited for more) are
/// dropped here, just before compute.
fn run(model: &Model, batch: Vec<Job>) {
    let now = Instant::now();
    let mut jobs = Vec::with_capacity(batch.len());
    for job in batch {
        match job.dropped(now) {
            Some(reason) => {
                job.call.dropped(model, now - job.queued, reason);
                let _ = job.reply.send(Outcome::Dropped);
            }
            None => jobs.push(job),
        }
    }
    if jobs.is_empty() {
        return;
    }
    let rows: usize = jobs.iter().map(|job| job.rows).sum();
    let result = match &jobs[..] {
        [only] => model.network.forward(&only.values),
        jobs => {
            let mut values = Vec::with_capacity(rows * model.network.inputs());
            for job in jobs {
                values.extend_from_slice(&job.values);
            }
            model.network.forward(&values)
        }
    };
    let stages = result.as_ref().map(|pass| pass.stages).unwrap_or_default();
    model.stats.record_pass(rows, stages);
    jobs[0].call.metrics.pass(&model.segment, model.version, rows, stages.total());
    match result {
        Ok(pass) => answer(model, jobs, pass, now, rows),
        Err(error) => {
            for job in jobs {
                job.call.computed(model, job.rows, now - job.queued, stages, rows);
                let _ = job.reply.send(Outcome::Failed(format!("forward pass failed: {error}")));
            }
        }
    }
}

/// Splits a pass's probabilities back to its jobs: each gets the slice of
/// its own rows. Taken from the end, so every split moves only that job's
/// part and the first job (the only one, for an unmerged pass) keeps the buffer.
/// A job with an overflowed row gets the rows named instead; the other jobs
/// of the pass are answered as usual (rows never affect each other).
fn answer(model: &Model, jobs: Vec<Job>, pass: Pass, started: Instant, rows: usize) {
    let classes = model.network.classes();
    let Pass { mut probabilities, stages, overflowed } = pass;
    let mut end_row = rows;
    for job in jobs.into_iter().rev() {
        let first_row = end_row - job.rows;
        let mine = probabilities.split_off(first_row * classes);
        job.call.computed(model, job.rows, started - job.queued, stages, rows);
        let start = overflowed.partition_point(|&row| row < first_row);
        let end = overflowed.partition_point(|&row| row < end_row);
        let outcome = if start == end {
            Outcome::Scored(mine)
        } else {
            let rows = overflowed[start..end]
                .iter()
                .take(MAX_VIOLATIONS)
                .map(|&row| {
                    let row = row - first_row;
                    let inputs = model.network.inputs();
                    let values = &job.values[row * inputs..(row + 1) * inputs];
                    let features = model.network.blame(values).unwrap_or_default();
                    Blamed { row, features: features.into_iter().map(|col| (col, values[col])).collect() }
                })
                .collect();
            Outcome::Overflowed { rows, total: end - start }
        };
        let _ = job.reply.send(outcome);
        end_row = first_row;
    }
}
