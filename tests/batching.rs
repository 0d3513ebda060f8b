//! Dynamic batching through the real server: concurrent callers whose rows are
//! merged into shared forward passes each get exactly their own rows' results
//! (every row is distinct, and each answer is checked against that row scored
//! alone), with batching on and off; work whose caller has gone or whose
//! deadline passed while it was queued is dropped uncomputed, and counted.

mod common;

use candela::inference as oip;
use candela_client::{Client, proto};
use candela_server::testing::{FEATURES, TestServer, demo_models, eventually, rows};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

const CALLERS: usize = 24;
const CALLS_EACH: usize = 12;

/// Distinct rows of `segment` and each one's probabilities scored alone, in-process.
fn rows_with_answers(segment: &str, n: usize) -> (Vec<f32>, Vec<Vec<f32>>) {
    let models = candela_server::model::repository::load(
        &demo_models(),
        &candle_core::Device::Cpu,
        "cpu",
        candela_server::model::repository::DEFAULT_MAX_MODEL_BYTES,
    )
    .unwrap();
    let model = models.iter().find(|m| m.segment == segment).unwrap();
    let values = rows(segment, n).values;
    let answers = values.chunks(FEATURES).map(|row| model.scorer.forward(row).unwrap().probabilities).collect();
    (values, answers)
}

/// The newest version of `segment`'s ModelStatistics.
async fn model_statistics(server: &TestServer, segment: &str) -> oip::ModelStatistics {
    let mut oip = common::client(server).await.open_inference();
    let request = oip::ModelStatisticsRequest { name: segment.into(), version: String::new() };
    oip.model_statistics(request).await.unwrap().into_inner().model_stats.remove(0)
}

/// (requests answered, rows scored, forward passes) of `segment`'s model.
async fn statistics(server: &TestServer, segment: &str) -> (u64, u64, u64) {
    let s = model_statistics(server, segment).await;
    let requests = s.inference_stats.as_ref().unwrap().success.as_ref().unwrap().count;
    (requests, s.inference_count, s.execution_count)
}

/// `CALLERS` concurrent callers, each sending `CALLS_EACH` calls of 1 to 7
/// rows (Predict for one row, BatchPredict for more) drawn from its own part
/// of the pool; every answer must match its rows scored alone.
async fn every_caller_gets_its_own_rows(flags: &[&str]) -> (u64, u64, u64) {
    let (values, answers) = rows_with_answers("retail", CALLERS * CALLS_EACH * 7);
    let (values, answers) = (Arc::new(values), Arc::new(answers));
    let server = TestServer::start(flags).await;
    // Four connections, six callers multiplexed on each.
    let mut clients: Vec<Client> = Vec::new();
    for _ in 0..4 {
        clients.push(common::client(&server).await);
    }
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let mut client = clients[caller % clients.len()].clone();
            let (values, answers) = (values.clone(), answers.clone());
            tokio::spawn(async move {
                for call in 0..CALLS_EACH {
                    let first = (caller * CALLS_EACH + call) * 7;
                    let count = 1 + (caller + call) % 7;
                    let mine = values[first * FEATURES..(first + count) * FEATURES].to_vec();
                    let predictions = if count == 1 {
                        vec![client.predict("retail", mine).await.unwrap().prediction.unwrap()]
                    } else {
                        client.batch_predict("retail", FEATURES, mine).await.unwrap().predictions
                    };
                    assert_eq!(predictions.len(), count, "caller {caller} call {call}: one prediction per row");
                    for (i, prediction) in predictions.iter().enumerate() {
                        let expected = &answers[first + i];
                        let close = prediction.probabilities.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-5);
                        assert!(
                            close,
                            "caller {caller} call {call} row {i}: got {:?}, its own row scores {expected:?}",
                            prediction.probabilities
                        );
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = statistics(&server, "retail").await;
    server.stop().await.unwrap();
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merged_passes_answer_every_caller_with_its_own_rows() {
    // A 2 ms window makes merging certain even on an idle machine.
    let (requests, rows, passes) = every_caller_gets_its_own_rows(&["--max-queue-delay-us", "2000"]).await;
    assert_eq!(requests, (CALLERS * CALLS_EACH) as u64);
    let expected_rows: u64 = (0..CALLERS).flat_map(|c| (0..CALLS_EACH).map(move |k| 1 + (c + k) as u64 % 7)).sum();
    assert_eq!(rows, expected_rows, "every row scored once");
    assert!(passes < requests / 2, "{requests} requests were merged into only {passes} forward passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn greedy_batching_through_the_compute_threads_answers_every_caller_with_its_own_rows() {
    let (requests, _, passes) = every_caller_gets_its_own_rows(&["--inline-lone-requests", "off"]).await;
    assert_eq!(requests, (CALLERS * CALLS_EACH) as u64);
    assert!(passes <= requests, "never more passes than requests: {passes} for {requests}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lone_requests_computed_inline_and_queued_ones_each_get_their_own_rows() {
    // Concurrent callers: some requests find the server alone (computed
    // where they are), the rest queue and merge; every caller's rows are its own.
    let (requests, _, passes) = every_caller_gets_its_own_rows(&[]).await;
    assert_eq!(requests, (CALLERS * CALLS_EACH) as u64);
    assert!(passes <= requests, "never more passes than requests: {passes} for {requests}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_batching_off_every_request_is_its_own_pass() {
    let (requests, _, passes) = every_caller_gets_its_own_rows(&["--batching", "off"]).await;
    assert_eq!(passes, requests, "one forward pass per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pass_never_exceeds_max_batch_rows_and_a_larger_request_runs_alone() {
    let flags = ["--max-queue-delay-us", "20000", "--max-batch-rows", "10"];
    let (values, answers) = rows_with_answers("sme", 40);
    let server = TestServer::start(&flags).await;
    let client = common::client(&server).await;
    // 25 rows (over the cap) and three 4-row requests at once: the large one
    // must run alone and whole; the small ones share passes of at most 10 rows.
    let sizes = [25usize, 4, 4, 4];
    let mut tasks = Vec::new();
    let mut first = 0;
    for size in sizes {
        let mut client = client.clone();
        let mine = values[first * FEATURES..(first + size) * FEATURES].to_vec();
        let expected = answers[first..first + size].to_vec();
        tasks.push(tokio::spawn(async move {
            let predictions = client.batch_predict("sme", FEATURES, mine).await.unwrap().predictions;
            assert_eq!(predictions.len(), expected.len());
            for (p, e) in predictions.iter().zip(&expected) {
                assert!(p.probabilities.iter().zip(e).all(|(a, b)| (a - b).abs() < 1e-5), "{p:?} vs {e:?}");
            }
        }));
        first += size;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = model_statistics(&server, "sme").await;
    let sizes: Vec<u64> = stats.batch_stats.iter().map(|b| b.batch_size).collect();
    assert!(sizes.contains(&25), "the 25-row request ran as one pass of its own: {sizes:?}");
    assert!(sizes.iter().all(|s| *s == 25 || *s <= 10), "no merged pass over 10 rows: {sizes:?}");
    assert_eq!(stats.inference_count, 37, "every row once");
}

/// A server whose passes wait 400 ms for company, so queued work can die
/// first, with its metrics on a loopback port.
async fn slow_window() -> (TestServer, String) {
    let metrics = common::free_port();
    let server = TestServer::start(&["--max-queue-delay-us", "400000", "--metrics-listen", &metrics]).await;
    (server, metrics)
}

/// `candela_dropped_total` for the corporate model and `reason`, from /metrics.
async fn dropped(metrics: &str, reason: &str) -> f64 {
    common::metric(metrics, "candela_dropped_total", &[("segment", "corporate"), ("reason", reason)]).await
}

#[tokio::test]
async fn a_caller_that_goes_away_is_dropped_before_compute() {
    let (server, metrics) = slow_window().await;
    let mut client = common::client(&server).await;
    let (_, _, before) = statistics(&server, "corporate").await;
    // The caller gives up after 50 ms, well inside the 400 ms window; the
    // client's own timeout drops the call (RST_STREAM), not a grpc-timeout.
    let call = client.predict("corporate", rows("corporate", 1).values);
    assert!(tokio::time::timeout(Duration::from_millis(50), call).await.is_err());
    // Dropped when its window closes, and counted then.
    let counted = async || dropped(&metrics, "cancelled").await == 1.0;
    eventually(Duration::from_secs(5), "the cancelled call's rows dropped", counted).await;
    let (_, _, after) = statistics(&server, "corporate").await;
    assert_eq!(after, before, "the cancelled call's rows were never computed");

    // The model still answers, and the drop was counted.
    client.predict("corporate", rows("corporate", 1).values).await.unwrap();
    let (_, _, later) = statistics(&server, "corporate").await;
    assert_eq!(later, before + 1);
    assert_eq!(dropped(&metrics, "cancelled").await, 1.0);
    assert_eq!(dropped(&metrics, "deadline").await, 0.0);
}

#[tokio::test]
async fn a_deadline_that_passes_in_the_queue_drops_the_work() {
    let (server, metrics) = slow_window().await;
    let mut client = common::client(&server).await;
    let (_, _, before) = statistics(&server, "corporate").await;
    let mut request = tonic::Request::new(proto::PredictRequest {
        explain: 0,
        segment: "corporate".into(),
        version: 0,
        features: rows("corporate", 1).values,
        text: Vec::new(),
    });
    request.set_timeout(Duration::from_millis(100));
    let status = client.inference().predict(request).await.unwrap_err();
    assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled), "{status:?}");
    let counted = async || dropped(&metrics, "deadline").await == 1.0;
    eventually(Duration::from_secs(5), "the expired call's rows dropped", counted).await;
    let (_, _, after) = statistics(&server, "corporate").await;
    assert_eq!(after, before, "the expired call's rows were never computed");
    assert_eq!(dropped(&metrics, "deadline").await, 1.0);
    assert_eq!(dropped(&metrics, "cancelled").await, 0.0);
}
