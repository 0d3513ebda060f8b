//! The first latency/throughput baseline (run by `bench/baseline.sh`):
//! sequential single-row Predict latency, and BatchPredict / StreamPredict
//! throughput at 1000 rows per message, through the real client crate.
//! Closed-loop and sequential on purpose: it measures one caller's view of
//! the service time, not the server's capacity under load. Sends the API key
//! in `CANDELA_API_KEY` when set.

use candela_client::{Client, ModelId, stream_batch};
use futures::StreamExt;
use std::time::{Duration, Instant};

const FEATURES: usize = 30;

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)].as_secs_f64() * 1e6;
    let mean = samples.iter().sum::<Duration>().as_secs_f64() * 1e6 / samples.len() as f64;
    println!(
        "{label}: n={} mean={mean:.1}µs p50={:.1}µs p90={:.1}µs p99={:.1}µs p99.9={:.1}µs max={:.1}µs",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0)
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let calls: usize = std::env::args().nth(2).map(|n| n.parse()).transpose()?.unwrap_or(10_000);
    let mut client = Client::connect(&url, Duration::from_secs(5)).await?;
    if let Ok(key) = std::env::var("CANDELA_API_KEY") {
        client = client.with_api_key(&key)?;
    }
    let row: Vec<f32> = (0..FEATURES).map(|i| (i as f32 * 0.37).sin()).collect();
    let batch: Vec<f32> = (0..1000 * FEATURES).map(|i| (i as f32 * 0.11).cos()).collect();

    for _ in 0..500 {
        client.predict("retail", row.clone()).await?;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        client.predict("retail", row.clone()).await?;
        samples.push(start.elapsed());
    }
    percentiles("Predict (1 row, sequential)", samples);

    let rounds = 300;
    let mut samples = Vec::with_capacity(rounds);
    let started = Instant::now();
    for _ in 0..rounds {
        let start = Instant::now();
        client.batch_predict("retail", FEATURES, batch.clone()).await?;
        samples.push(start.elapsed());
    }
    let rows_per_second = (rounds * 1000) as f64 / started.elapsed().as_secs_f64();
    percentiles("BatchPredict (1000 rows, sequential)", samples);
    println!("BatchPredict throughput: {rows_per_second:.0} rows/s");

    let model = ModelId::latest("retail");
    let messages: Vec<_> = (0..rounds).map(|i| stream_batch(i.to_string(), &model, FEATURES, batch.clone())).collect();
    let started = Instant::now();
    let mut responses = client.stream_predict(futures::stream::iter(messages)).await?;
    let mut answered = 0;
    while let Some(response) = responses.next().await {
        response?;
        answered += 1;
    }
    let rows_per_second = (answered * 1000) as f64 / started.elapsed().as_secs_f64();
    println!("StreamPredict throughput (1000-row messages, pipelined): {rows_per_second:.0} rows/s");
    Ok(())
}
