//! The forward pass alone, without transport: a demo model at batch 1, 64 and
//! 1000 rows, with candle's CPU kernels on 1 and on 2 threads
//! (`--compute-threads`). Separates compute from gRPC in bench/RESULTS.md.
//! Run: `cargo bench -p candela-server --bench forward`.

use candela_server::model::repository;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::path::Path;

fn forward(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let models = repository::load(&root, &candle_core::Device::Cpu, "cpu", repository::DEFAULT_MAX_MODEL_BYTES)
        .expect("the demo models load");
    let model = models.iter().find(|m| m.segment == "retail").expect("the retail demo model");
    let features = model.scorer.inputs();
    for threads in [1, 2] {
        // candle reads RAYON_NUM_THREADS on every matrix multiply; this
        // benchmark is single-threaded apart from candle's own pool.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
        let mut group = c.benchmark_group(format!("forward/retail/threads-{threads}"));
        for rows in [1usize, 64, 1000] {
            let values: Vec<f32> = (0..rows * features).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect();
            group.throughput(Throughput::Elements(rows as u64));
            group.bench_with_input(BenchmarkId::from_parameter(rows), &values, |b, values| {
                b.iter(|| model.scorer.forward(values).expect("forward pass"))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, forward);
criterion_main!(benches);
