//! The batcher's unit tests: how batches are taken from the queue, and when
//! a lone request runs inline.

use super::{BatchPolicy, Batcher, Computed, INLINE_MAX_PASS};
use crate::core::stats::ModelStats;
use crate::model::{LoadedModel, repository};
use crate::observe::metrics::Metrics;
use candle_core::Device;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn batcher(enabled: bool, max_batch_rows: usize, max_queue_delay: Duration) -> Batcher {
    Batcher::new(BatchPolicy { enabled, max_batch_rows, max_queue_delay }, true, Metrics::new().queue_series("test", 1))
}

/// The row counts of the next batch's jobs.
fn next(batcher: &Batcher) -> Option<Vec<usize>> {
    batcher.next_batch().map(|batch| batch.iter().map(|job| job.rows).collect())
}

#[test]
fn a_free_worker_takes_everything_queued_up_to_the_cap_never_splitting_a_request() {
    let batcher = batcher(true, 4, Duration::ZERO);
    let mut answers = Vec::new();
    for rows in [2, 2, 2, 9, 1] {
        answers.push(batcher.submit(vec![0.0; rows], rows, None).unwrap());
    }
    assert_eq!(next(&batcher), Some(vec![2, 2]), "the cap of 4 rows");
    assert_eq!(next(&batcher), Some(vec![2]), "the next job would pass the cap");
    assert_eq!(next(&batcher), Some(vec![9]), "larger than the cap: alone, whole");
    assert_eq!(next(&batcher), Some(vec![1]));
    batcher.close();
    assert_eq!(next(&batcher), None, "closed and empty");
    assert!(batcher.submit(vec![0.0], 1, None).is_none(), "a closed queue takes nothing");
}

#[test]
fn without_batching_every_request_is_a_pass_of_its_own() {
    let batcher = batcher(false, 1024, Duration::from_secs(10));
    let _answers: Vec<_> = (0..3).map(|_| batcher.submit(vec![0.0; 2], 2, None).unwrap()).collect();
    for _ in 0..3 {
        assert_eq!(next(&batcher), Some(vec![2]), "no merging, no waiting for the window");
    }
}

#[test]
fn a_batch_waits_in_its_window_for_more_until_it_is_full() {
    // A window far longer than the test: the batch closes because it is full.
    let batcher = Arc::new(batcher(true, 2, Duration::from_secs(60)));
    let first = batcher.submit(vec![0.0], 1, None).unwrap();
    let later = std::thread::spawn({
        let batcher = batcher.clone();
        move || batcher.submit(vec![0.0], 1, None).unwrap()
    });
    assert_eq!(next(&batcher), Some(vec![1, 1]), "the second request joined the first's pass");
    drop((first, later.join().unwrap()));
}

fn demo() -> LoadedModel {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/retail/1");
    repository::load_version("retail", 1, &dir, &Device::Cpu, "cpu", u64::MAX).unwrap()
}

fn cpu_batcher(max_queue_delay: Duration, on_cpu: bool) -> Batcher {
    let policy = BatchPolicy { enabled: true, max_batch_rows: 1024, max_queue_delay };
    Batcher::new(policy, on_cpu, Metrics::new().queue_series("test", 1))
}

#[test]
fn a_lone_small_request_is_answered_before_run_inline_returns() {
    let (model, stats) = (demo(), ModelStats::new(None));
    let batcher = cpu_batcher(Duration::ZERO, true);
    let mut answer = batcher.run_inline(&model, &stats, vec![0.5; 30], 1, None, true).unwrap();
    let reply = answer.try_recv().expect("answered inline");
    let Computed::Scored(probabilities) = reply.outcome else { panic!("not scored") };
    assert_eq!(probabilities.len(), 2);
    assert_eq!((reply.timing.batch_rows, stats.executions()), (1, 1));
    assert_eq!(batcher.outstanding.load(Ordering::Relaxed), 0, "nothing left outstanding");
    // A model whose small passes are slow keeps them off the caller's thread.
    batcher.small_pass_ns.store(INLINE_MAX_PASS.as_nanos() as u64 + 1, Ordering::Relaxed);
    assert!(batcher.run_inline(&model, &stats, vec![0.5; 30], 1, None, true).is_err(), "the last small pass was slow");
    // Another request in the server: this one is queued, to be merged.
    batcher.small_pass_ns.store(0, Ordering::Relaxed);
    assert!(batcher.run_inline(&model, &stats, vec![0.5; 30], 1, None, false).is_err(), "not alone in the server");
}

#[test]
fn requests_that_are_not_alone_small_or_on_the_cpu_are_queued() {
    let (model, stats) = (demo(), ModelStats::new(None));
    let queued = cpu_batcher(Duration::ZERO, true);
    let _waiting = queued.submit(vec![0.5; 30], 1, None).unwrap();
    assert!(queued.run_inline(&model, &stats, vec![0.5; 30], 1, None, true).is_err(), "another is queued");
    let idle = cpu_batcher(Duration::ZERO, true);
    assert!(idle.run_inline(&model, &stats, vec![0.5; 9 * 30], 9, None, true).is_err(), "more than 8 rows");
    let windowed = cpu_batcher(Duration::from_millis(5), true);
    assert!(windowed.run_inline(&model, &stats, vec![0.5; 30], 1, None, true).is_err(), "a window asks to merge");
    let on_gpu = cpu_batcher(Duration::ZERO, false);
    assert!(on_gpu.run_inline(&model, &stats, vec![0.5; 30], 1, None, true).is_err(), "not a CPU model");
    let closed = cpu_batcher(Duration::ZERO, true);
    closed.close();
    let Err(values) = closed.run_inline(&model, &stats, vec![0.5; 30], 1, None, true) else { panic!("closed") };
    assert_eq!(values.len(), 30, "the values come back for the caller to refuse");
    assert_eq!(stats.executions(), 0);
}
