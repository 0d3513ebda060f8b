//! Per-model-version statistics: request outcomes, queue and compute times,
//! and forward passes by batch size. The core records them on every request,
//! whichever API it came through; the Open Inference Protocol's
//! ModelStatistics reports them. Counters are atomics; the per-batch-size
//! table takes a short lock once per forward pass, never per row. (Work
//! dropped before compute is counted in the metrics, by reason.)

use crate::model::network::Stages;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count and the total time it took.
#[derive(Debug, Default)]
pub struct Counter {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Counter {
    fn add(&self, elapsed: Duration) {
        self.count.fetch_add(1, Relaxed);
        self.ns.fetch_add(elapsed.as_nanos() as u64, Relaxed);
    }

    /// (count, total nanoseconds).
    pub fn get(&self) -> (u64, u64) {
        (self.count.load(Relaxed), self.ns.load(Relaxed))
    }
}

/// The stage counters of forward passes of one batch size.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchCounters {
    pub executions: u64,
    pub input_ns: u64,
    pub infer_ns: u64,
    pub output_ns: u64,
}

/// The statistics of one model version.
#[derive(Debug, Default)]
pub struct ModelStats {
    /// Requests answered, and their time in the server from receipt to answer.
    pub success: Counter,
    /// Requests refused or failed after routing, and their time in the server.
    pub fail: Counter,
    /// Waits for a compute worker.
    pub queue: Counter,
    pub compute_input: Counter,
    pub compute_infer: Counter,
    pub compute_output: Counter,
    rows: AtomicU64,
    executions: AtomicU64,
    last_inference_ms: AtomicU64,
    by_batch_size: Mutex<BTreeMap<u64, BatchCounters>>,
}

impl ModelStats {
    /// Records one request's outcome and its time in the server.
    pub fn record_request(&self, elapsed: Duration, ok: bool) {
        if ok { self.success.add(elapsed) } else { self.fail.add(elapsed) }
    }

    /// Records one request's share of a forward pass: its wait for a worker,
    /// and the pass's stage times (as Triton reports them, each request of a
    /// merged pass is charged the whole pass).
    pub fn record_compute(&self, queue: Duration, stages: Stages) {
        self.queue.add(queue);
        self.compute_input.add(stages.input);
        self.compute_infer.add(stages.infer);
        self.compute_output.add(stages.output);
    }

    /// Records one forward pass over `rows` rows, however many requests they came from.
    pub fn record_pass(&self, rows: usize, stages: Stages) {
        self.rows.fetch_add(rows as u64, Relaxed);
        self.executions.fetch_add(1, Relaxed);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.last_inference_ms.store(now.as_millis() as u64, Relaxed);
        let mut table = self.by_batch_size.lock().expect("stats lock poisoned; this is a bug");
        let entry = table.entry(rows as u64).or_default();
        entry.executions += 1;
        entry.input_ns += stages.input.as_nanos() as u64;
        entry.infer_ns += stages.infer.as_nanos() as u64;
        entry.output_ns += stages.output.as_nanos() as u64;
    }

    /// Rows scored.
    pub fn rows(&self) -> u64 {
        self.rows.load(Relaxed)
    }

    /// Forward passes run.
    pub fn executions(&self) -> u64 {
        self.executions.load(Relaxed)
    }

    /// When the last forward pass ran, in milliseconds since the Unix epoch (0: never).
    pub fn last_inference_ms(&self) -> u64 {
        self.last_inference_ms.load(Relaxed)
    }

    /// Forward passes by batch size, smallest first.
    pub fn by_batch_size(&self) -> Vec<(u64, BatchCounters)> {
        let table = self.by_batch_size.lock().expect("stats lock poisoned; this is a bug");
        table.iter().map(|(size, counters)| (*size, *counters)).collect()
    }
}
