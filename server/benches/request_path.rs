//! What each piece of a one-row request's path costs in the server itself,
//! without the transport: the call context with its call metric, the
//! queue's metrics per job, drift sampling, and scoring one row through the
//! compute thread (the hand-off: two cross-thread wake-ups) against scoring
//! it inline (`--inline-lone-requests`) and against the forward pass alone.
//! Keeping the answer for `Feedback` is the `outcomes` bench. Issue 30's
//! per-request costs are read from here; the transport's from bench/profile.sh.
//! Run: `cargo bench -p candela-server --bench request_path`.

use candela_server::api::call::Call;
use candela_server::api::oip::tensors::InputFields;
use candela_server::core::batching::Overrides;
use candela_server::core::drift::{Drift, DriftSettings};
use candela_server::core::engine::Progress;
use candela_server::core::scoring::{self, Deadline, Rows};
use candela_server::core::served::{Compute, ServedModel};
use candela_server::model::repository;
use candela_server::observe::metrics::Metrics;
use candle_core::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The drift window the bench's models sample into.
const DRIFT: DriftSettings = DriftSettings { window: Duration::from_secs(60), min_rows: 100, max_rows: 10_000 };

fn served(inline_lone: bool, metrics: &Arc<Metrics>) -> ServedModel {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/retail/1");
    let loaded = repository::load_version("retail", 1, &dir, &Device::Cpu, "cpu", u64::MAX).unwrap();
    let overrides = Overrides { inline_lone, ..Overrides::default() };
    ServedModel::new(loaded, &overrides, Compute { workers: 1, threads: 1, drift: DRIFT }, metrics.clone()).unwrap()
}

fn request_path(c: &mut Criterion) {
    // As the server sets it for its default --compute-threads 1: candle
    // sizes its kernels' thread pool from it on every matrix multiply.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    let metrics = Arc::new(Metrics::new());
    let queued = served(false, &metrics);
    let inline = served(true, &metrics);
    let row = vec![0.5f32; queued.scorer.inputs()];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let rows = || Rows { fields: &InputFields, width: row.len(), values: row.clone(), max_rows: 1024 };
    let deadline = || Deadline { received: Instant::now(), at: None };

    let mut group = c.benchmark_group("request path, one row");
    group.throughput(Throughput::Elements(1));
    let headers = http::HeaderMap::new();
    group.bench_function("call context and its metric", |b| {
        b.iter(|| {
            let call = Call::new(&headers, "inference.GRPCInferenceService", "ModelInfer", b"salt", metrics.clone());
            call.routed(&queued.loaded);
            call.finished(Ok::<(), _>(()))
        })
    });
    let series = metrics.queue_series("retail", 1);
    group.bench_function("queue metrics per job", |b| {
        b.iter(|| {
            series.queued();
            series.dequeued(Duration::from_micros(20));
            series.pass(1, Duration::from_micros(30));
        })
    });
    let manifest = &queued.manifest;
    let drift = Drift::new(manifest.monitoring.as_ref(), &manifest.features, DRIFT).expect("retail is monitored");
    let probabilities = [0.9f32, 0.1];
    group.bench_function("drift sampling", |b| b.iter(|| drift.record(&row, row.len(), &probabilities, 2)));
    group.bench_function("forward pass alone", |b| b.iter(|| queued.scorer.forward(&row).unwrap()));
    group.bench_function("scored inline", |b| {
        b.iter(|| runtime.block_on(scoring::serve(&inline, rows(), deadline(), true)).unwrap())
    });
    group.bench_function("scored through the compute thread", |b| {
        b.iter(|| runtime.block_on(scoring::serve(&queued, rows(), deadline(), false)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, request_path);
criterion_main!(benches);
