//! Limits and backpressure: the global call limit sheds excess load at once
//! with RESOURCE_EXHAUSTED and a RetryInfo, never queueing it; admitted calls
//! all succeed with their own answers; a caller's deadline is honoured by
//! dropping the work before compute and answering DEADLINE_EXCEEDED.

mod common;

use candela::inference as oip;
use candela_client::{ModelId, proto, stream_batch};
use candela_server::testing::{FEATURES, TestServer, rows};
use futures::StreamExt;
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt;

fn assert_overloaded(status: &tonic::Status) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("limit of 2 concurrent calls"), "{}", status.message());
    let retry = status.get_details_retry_info().expect("RetryInfo details");
    assert!(retry.retry_delay.is_some_and(|d| d > Duration::ZERO && d < Duration::from_secs(5)), "{retry:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_the_limit_are_refused_at_once_and_admitted_again_after() {
    let (server, holders) = common::server_held_full(2, Duration::from_secs(2)).await;
    let mut client = common::client(&server).await;
    let row = rows("retail", 1).values;
    for _ in 0..10 {
        assert_overloaded(&client.predict("retail", row.clone()).await.unwrap_err());
    }
    assert_overloaded(&client.batch_predict("retail", FEATURES, row.clone()).await.unwrap_err());
    assert_overloaded(&client.batch_predict_stream("retail", FEATURES, row.clone()).await.unwrap_err());
    // A stream opens (it holds no permit while idle), but a message that
    // arrives while the server is full is refused on its own, with its id.
    let batch = stream_batch("full", &ModelId::latest("retail"), FEATURES, row.clone());
    let mut responses = client.stream_predict(futures::stream::iter(vec![batch])).await.unwrap();
    let response = responses.message().await.unwrap().unwrap();
    let Some(proto::stream_predict_response::Outcome::Error(error)) = response.outcome else {
        panic!("scored over the limit: {response:?}")
    };
    assert_eq!((response.id.as_str(), error.code), ("full", Code::ResourceExhausted as i32));
    let mut oip =
        candela::inference::grpc_inference_service_client::GrpcInferenceServiceClient::connect(server.url.clone())
            .await
            .unwrap();
    let status = oip
        .model_infer(oip::ModelInferRequest { model_name: "retail".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_overloaded(&status);
    // Metadata calls and health are not inference calls: never refused.
    assert!(client.list_models().await.is_ok());
    assert!(client.health("").await.is_ok());

    for holder in holders {
        assert!(holder.await.unwrap().is_ok(), "admitted calls are answered");
    }
    assert!(client.predict("retail", row).await.is_ok(), "the permits came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_gets_answers_or_fast_refusals_and_every_answer_is_its_own() {
    let server = TestServer::start(&["--max-concurrent-requests", "2"]).await;
    // Seven distinct batches (row 0 tagged with its variant), each with its
    // answer taken before the flood, when nothing competes.
    let data = rows("sme", 1000);
    let mut client = common::client(&server).await;
    let mut variants = Vec::new();
    for tag in 0..7 {
        let mut values = data.values.clone();
        values[0] = tag as f32 * 3.0;
        values[FEATURES] = -(tag as f32);
        let expected = client.batch_predict("sme", FEATURES, values.clone()).await.unwrap().predictions;
        variants.push((values, expected));
    }
    let variants = std::sync::Arc::new(variants);
    let tasks: Vec<_> = (0..48)
        .map(|task| {
            let (url, variants) = (server.url.clone(), variants.clone());
            tokio::spawn(async move {
                let mut client = candela_client::Client::connect(&url, Duration::from_secs(5)).await.unwrap();
                let (values, expected) = &variants[task % 7];
                let (mut admitted, mut refused) = (0, 0);
                for _ in 0..10 {
                    match client.batch_predict("sme", FEATURES, values.clone()).await {
                        Ok(response) => {
                            assert_eq!(&response.predictions, expected, "task {task} got another caller's answer");
                            admitted += 1;
                        }
                        Err(status) => {
                            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                            refused += 1;
                        }
                    }
                }
                (admitted, refused)
            })
        })
        .collect();
    let mut totals = (0, 0);
    for task in tasks {
        let (a, r) = task.await.unwrap();
        totals = (totals.0 + a, totals.1 + r);
    }
    println!("admitted {}, refused {}", totals.0, totals.1);
    assert_eq!(totals.0 + totals.1, 480);
    assert!(totals.0 > 0 && totals.1 > 0, "48 callers against a limit of 2: some admitted, some refused ({totals:?})");
}

#[tokio::test]
async fn an_expired_deadline_drops_the_work_before_compute() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let mut oip =
        candela::inference::grpc_inference_service_client::GrpcInferenceServiceClient::connect(server.url.clone())
            .await
            .unwrap();
    let executions = |stats: oip::ModelStatisticsResponse| stats.model_stats[0].execution_count;
    let stats_request = || oip::ModelStatisticsRequest { name: "corporate".into(), version: String::new() };
    let before = executions(oip.model_statistics(stats_request()).await.unwrap().into_inner());

    // 4 ms is less than the server's 5 ms answering margin, so every call is
    // already out of time when it arrives: the server must answer without
    // computing. The client enforces the same deadline, so on a stalled machine
    // its own timer may win (CANCELLED): up to 100 calls, until the server has
    // answered 10 of them itself.
    let mut answered_by_server = 0;
    for _ in 0..100 {
        if answered_by_server == 10 {
            break;
        }
        let mut request = tonic::Request::new(proto::PredictRequest {
            explain: 0,
            segment: "corporate".into(),
            version: 0,
            features: rows("corporate", 1).values,
            text: Vec::new(),
        });
        request.set_timeout(Duration::from_millis(4));
        let status = client.inference().predict(request).await.unwrap_err();
        match status.code() {
            Code::DeadlineExceeded => {
                assert!(status.message().contains("the work was dropped"), "{}", status.message());
                answered_by_server += 1;
            }
            Code::Cancelled => {}
            other => panic!("unexpected {other:?}: {status:?}"),
        }
    }
    assert_eq!(answered_by_server, 10, "only {answered_by_server} of 100 got the server's DEADLINE_EXCEEDED");
    let after = executions(oip.model_statistics(stats_request()).await.unwrap().into_inner());
    assert_eq!(after, before, "no forward pass ran for an expired call");

    // A deadline with room to spare changes nothing.
    let mut request = tonic::Request::new(proto::PredictRequest {
        explain: 0,
        segment: "corporate".into(),
        version: 0,
        features: rows("corporate", 1).values,
        text: Vec::new(),
    });
    request.set_timeout(Duration::from_secs(10));
    assert!(client.inference().predict(request).await.is_ok());
}

#[tokio::test]
async fn a_stream_deadline_applies_to_each_of_its_batches() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let model = ModelId::latest("retail");
    let mut answered_by_server = 0;
    // As above: up to 100 streams, until the server has answered 10 itself.
    for _ in 0..100 {
        if answered_by_server == 10 {
            break;
        }
        let batch = stream_batch("late", &model, FEATURES, rows("retail", 10).values);
        let mut request = tonic::Request::new(futures::stream::iter(vec![batch]));
        request.set_timeout(Duration::from_millis(4));
        // As above: the client's own timer may win on a stalled machine.
        let Ok(mut responses) = client.inference().stream_predict(request).await.map(|r| r.into_inner()) else {
            continue;
        };
        if let Some(Ok(response)) = responses.next().await {
            let Some(proto::stream_predict_response::Outcome::Error(error)) = response.outcome else {
                panic!("a batch past its deadline was scored: {response:?}")
            };
            assert_eq!(error.code, Code::DeadlineExceeded as i32);
            answered_by_server += 1;
        }
    }
    assert_eq!(answered_by_server, 10, "only {answered_by_server} of 100 streams got the server's answer");
}

/// A Predict on `client`'s connection carrying `padding` bytes of extra metadata.
async fn predict_with_metadata(
    mut client: candela_client::Client,
    padding: usize,
) -> Result<proto::PredictResponse, tonic::Status> {
    let request = proto::PredictRequest {
        explain: 0,
        segment: "retail".into(),
        version: 0,
        features: rows("retail", 1).values,
        text: Vec::new(),
    };
    let mut request = tonic::Request::new(request);
    if padding > 0 {
        request.metadata_mut().insert("x-padding", "p".repeat(padding).parse().unwrap());
    }
    client.inference().predict(request).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_fails_its_own_call_and_not_its_connection() {
    // Calls wait 400 ms in the batching window, so four are in flight on the
    // connection when the oversized ones arrive.
    let metrics = common::free_port();
    let server = TestServer::start(&["--max-queue-delay-us", "400000", "--metrics-listen", &metrics]).await;
    let client = common::client(&server).await;
    let in_flight: Vec<_> = (0..4).map(|_| tokio::spawn(predict_with_metadata(client.clone(), 0))).collect();
    common::until_in_flight(&metrics, 4).await;
    for padding in [20_000, 65_000, 200_000] {
        let refused = predict_with_metadata(client.clone(), padding).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{padding} bytes: {refused:?}");
        assert!(refused.message().contains("--max-header-bytes"), "{}", refused.message());
    }
    for call in in_flight {
        call.await.unwrap().expect("the calls beside the oversized ones are answered");
    }
    predict_with_metadata(client, 0).await.expect("the connection still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_header_that_is_not_a_timeout_is_refused_naming_it() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    for value in ["garbage", "-5", "NaN", "1e30"] {
        let request = proto::PredictRequest {
            explain: 0,
            segment: "retail".into(),
            version: 0,
            features: rows("retail", 1).values,
            text: Vec::new(),
        };
        let mut request = tonic::Request::new(request);
        request.metadata_mut().insert("x-request-timeout", value.parse().unwrap());
        let refused = client.inference().predict(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{value}: {refused:?}");
        assert!(
            refused.message().contains("x-request-timeout") && refused.message().contains("not a timeout"),
            "{refused:?}"
        );
    }
    // A well-formed one is honoured as before.
    let request = proto::PredictRequest {
        explain: 0,
        segment: "retail".into(),
        version: 0,
        features: rows("retail", 1).values,
        text: Vec::new(),
    };
    let mut request = tonic::Request::new(request);
    request.metadata_mut().insert("x-request-timeout", "2s".parse().unwrap());
    client.inference().predict(request).await.unwrap();
}
