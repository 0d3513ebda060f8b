//! Per-model-version statistics: request outcomes, queue and compute times,
//! and forward passes by batch size. The core records them on every request,
//! whichever API it came through; the Open Inference Protocol's
//! ModelStatistics reports them. Counters are atomics; the per-batch-size
//! table takes a short lock once per forward pass, never per row. (Work
//! dropped before compute is counted in the metrics, by reason.) Request
//! outcomes and latencies are also kept as cumulative counts that a reader
//! marks and subtracts (`mark`, `Window::between`): the rollout guard's
//! windows, with no per-request clock. Drift histograms live here too.

use crate::core::drift::Drift;
use crate::model::scorer::Stages;
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

/// Latency buckets for windowed quantiles: bucket `i` holds times up to
/// 10 µs × 1.25^i (the last, anything longer), so a quantile is reported
/// within 25 % of its value.
const LATENCY_BUCKETS: usize = 64;
const LATENCY_BASE_SECONDS: f64 = 10e-6;
const LATENCY_GROWTH: f64 = 1.25;

fn latency_bucket(elapsed: Duration) -> usize {
    let ratio = elapsed.as_secs_f64() / LATENCY_BASE_SECONDS;
    if ratio <= 1.0 { 0 } else { (ratio.ln() / LATENCY_GROWTH.ln()).ceil() as usize }.min(LATENCY_BUCKETS - 1)
}

/// The cumulative request counts at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mark {
    pub ok: u64,
    pub failed: u64,
    latency: Vec<u64>,
}

/// Requests between two marks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub requests: u64,
    pub errors: u64,
    /// Latency quantiles (bucket upper bounds); none without requests.
    pub p50: Option<Duration>,
    pub p95: Option<Duration>,
}

impl Window {
    /// What happened between `earlier` and `later` (of the same model).
    pub fn between(earlier: &Mark, later: &Mark) -> Window {
        let counts: Vec<u64> = later
            .latency
            .iter()
            .enumerate()
            .map(|(i, &c)| c.saturating_sub(earlier.latency.get(i).copied().unwrap_or(0)))
            .collect();
        let quantile = |q: f64| -> Option<Duration> {
            let total: u64 = counts.iter().sum();
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            counts
                .iter()
                .position(|&c| {
                    seen += c;
                    total > 0 && seen >= rank
                })
                .map(|i| Duration::from_secs_f64(LATENCY_BASE_SECONDS * LATENCY_GROWTH.powi(i as i32)))
        };
        let ok = later.ok.saturating_sub(earlier.ok);
        let errors = later.failed.saturating_sub(earlier.failed);
        Window { requests: ok + errors, errors, p50: quantile(0.5), p95: quantile(0.95) }
    }

    /// Errors per request (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }
}

/// The statistics of one model version.
#[derive(Debug)]
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
    latency: Vec<AtomicU64>,
    /// Live rows against the training statistics, when the model has them.
    pub drift: Option<Drift>,
}

impl ModelStats {
    /// Empty statistics; `drift` counts rows for drift when given.
    pub fn new(drift: Option<Drift>) -> ModelStats {
        ModelStats {
            success: Counter::default(),
            fail: Counter::default(),
            queue: Counter::default(),
            compute_input: Counter::default(),
            compute_infer: Counter::default(),
            compute_output: Counter::default(),
            rows: AtomicU64::default(),
            executions: AtomicU64::default(),
            last_inference_ms: AtomicU64::default(),
            by_batch_size: Mutex::default(),
            latency: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            drift,
        }
    }

    /// Records one request's outcome and its time in the server.
    pub fn record_request(&self, elapsed: Duration, ok: bool) {
        if ok {
            self.success.add(elapsed)
        } else {
            self.fail.add(elapsed)
        }
        self.latency[latency_bucket(elapsed)].fetch_add(1, Relaxed);
    }

    /// The cumulative request counts now.
    pub fn mark(&self) -> Mark {
        Mark {
            ok: self.success.get().0,
            failed: self.fail.get().0,
            latency: self.latency.iter().map(|c| c.load(Relaxed)).collect(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_what_happened_between_two_marks() {
        let stats = ModelStats::new(None);
        stats.record_request(Duration::from_millis(1), true);
        let start = stats.mark();
        for _ in 0..94 {
            stats.record_request(Duration::from_micros(100), true);
        }
        for _ in 0..6 {
            stats.record_request(Duration::from_millis(300), false);
        }
        let window = Window::between(&start, &stats.mark());
        assert_eq!((window.requests, window.errors), (100, 6));
        let (p50, p95) = (window.p50.unwrap(), window.p95.unwrap());
        assert!(p50 >= Duration::from_micros(100) && p50 < Duration::from_micros(125), "{p50:?}");
        assert!(p95 >= Duration::from_millis(300) && p95 < Duration::from_millis(375), "{p95:?}");
        assert_eq!(Window::between(&stats.mark(), &stats.mark()).p95, None);
    }
}
