//! What keeping answers for `Feedback` costs: recording a one-row answer
//! into a full store (the oldest dropped for it, as under steady traffic),
//! and joining an outcome to a kept answer (the quality window updated).
//! Run: `cargo bench -p candela-server --bench outcomes`.

use candela_server::core::outcomes::{Outcome, OutcomeSettings, Outcomes};
use candela_server::core::scores::Scores;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::time::Duration;

const HELD: usize = 250_000;

fn outcomes(c: &mut Criterion) {
    let labels = vec!["legit".to_string(), "fraud".to_string()];
    let settings = OutcomeSettings {
        retention: Duration::from_secs(7 * 86_400),
        max_records: HELD,
        quality_window: Duration::from_secs(3_600),
        min_outcomes: 100,
    };
    let store = Outcomes::new(settings);
    let answer = |p: f32| Scores { probabilities: vec![1.0 - p, p], classes: 2 };
    for i in 0..HELD {
        store.record(&format!("request-{i}"), 0, ("retail", 1, &labels), &answer((i % 1000) as f32 / 1000.0));
    }
    let mut group = c.benchmark_group("outcomes");
    group.throughput(Throughput::Elements(1));
    let mut next = HELD;
    group.bench_function("record one row (store full)", |b| {
        b.iter_batched(
            || {
                next += 1;
                format!("request-{next}")
            },
            |id| store.record(&id, 0, ("retail", 1, &labels), &answer(0.25)),
            BatchSize::SmallInput,
        )
    });
    // Outcomes for kept answers, each joined once (a fresh store per batch of 1,000).
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("join 1000 outcomes", |b| {
        b.iter_batched(
            || {
                let fresh = Outcomes::new(settings);
                for i in 0..1_000 {
                    fresh.record(&format!("r{i}"), 0, ("retail", 1, &labels), &answer((i % 97) as f32 / 97.0));
                }
                let outcomes: Vec<Outcome> = (0..1_000)
                    .map(|i| Outcome { request_id: format!("r{i}"), row: 0, label: labels[i % 2].clone() })
                    .collect();
                (fresh, outcomes)
            },
            |(fresh, outcomes)| fresh.join(&outcomes),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, outcomes);
criterion_main!(benches);
