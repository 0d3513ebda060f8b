//! grpc.health.v1 and graceful shutdown: NOT_SERVING until every model is
//! loaded and warmed (for `""` too, which tonic-health would otherwise report
//! SERVING from the start), SERVING after, NOT_SERVING as soon as a drain
//! begins, while requests are still answered until the drain period ends;
//! the HTTP port's readiness (`/v2/health/ready`) follows the same phases.

mod common;

use candela_server::testing::{TestServer, demo_models, rows, settings};
use futures::StreamExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const SERVICES: [&str; 3] = ["", "candela.v1.Inference", "inference.GRPCInferenceService"];

/// A repository that takes a while to load: the demo `retail` model in
/// `VERSIONS` versions, each read, checked and warmed in turn, so the
/// NOT_SERVING phase lasts well beyond the few calls a test makes in it.
/// (Weights behind a FIFO would block forever, but model files must now be
/// regular files.)
fn repository_that_loads_slowly(dir: &Path) {
    const VERSIONS: usize = 1000;
    for version in 1..=VERSIONS {
        let version = dir.join(format!("retail/{version}"));
        std::fs::create_dir_all(&version).unwrap();
        for file in ["model.json", "model.safetensors"] {
            std::fs::copy(demo_models().join("retail/1").join(file), version.join(file)).unwrap();
        }
    }
}

#[tokio::test]
async fn health_goes_not_serving_then_serving_then_not_serving_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    repository_that_loads_slowly(dir.path());
    let started = Instant::now();
    let http = common::free_port();
    let flags = [
        "--drain-seconds",
        "0.5",
        "--http-listen",
        &http,
        "--max-versions-per-segment",
        "1000",
        "--max-loaded-versions",
        "1000",
    ];
    let mut server = TestServer::start_with(settings(dir.path(), &flags)).await;
    let mut client = common::client(&server).await;
    let channel = tonic::transport::Channel::from_shared(server.url.clone()).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(watch.next().await.unwrap().unwrap().status(), ServingStatus::NotServing);

    // Loading: every service is NOT_SERVING and requests are UNAVAILABLE.
    for service in SERVICES {
        assert_eq!(client.health(service).await.unwrap(), ServingStatus::NotServing, "`{service}`");
    }
    let status = client.predict("retail", rows("retail", 1).values).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("still loading"), "{}", status.message());
    use tonic_types::StatusExt;
    let retry = status.get_details_retry_info().expect("UNAVAILABLE carries a RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
    assert_eq!(http_status(&http, "GET /v2/health/ready").await, 503, "HTTP readiness while loading");
    assert_eq!(http_status(&http, "GET /v2/health/live").await, 200, "live while loading");
    let scoring = http_answer(&http, "POST /score").await.to_lowercase();
    assert!(scoring.starts_with("http/1.1 503") && scoring.contains("retry-after: 1\r\n"), "{scoring}");

    // Loaded and warmed: SERVING everywhere, requests answered.
    assert_eq!(watch.next().await.unwrap().unwrap().status(), ServingStatus::Serving);
    println!("the slow repository loaded in {:?}", started.elapsed());
    for service in SERVICES {
        assert_eq!(client.health(service).await.unwrap(), ServingStatus::Serving, "`{service}`");
    }
    assert!(client.predict("retail", rows("retail", 1).values).await.is_ok());
    assert_eq!(http_status(&http, "GET /v2/health/ready").await, 200, "HTTP readiness once serving");

    // Shutdown: NOT_SERVING at once, still answering during the drain.
    let began = Instant::now();
    server.begin_shutdown();
    assert_eq!(watch.next().await.unwrap().unwrap().status(), ServingStatus::NotServing);
    for service in SERVICES {
        assert_eq!(client.health(service).await.unwrap(), ServingStatus::NotServing, "`{service}`");
    }
    assert!(client.predict("retail", rows("retail", 1).values).await.is_ok(), "requests are served while draining");
    assert_eq!(http_status(&http, "GET /v2/health/ready").await, 503, "HTTP readiness while draining");
    drop((watch, health, client));
    server.stop().await.unwrap();
    assert!(began.elapsed() >= Duration::from_millis(500), "the drain period was honoured");
}

#[tokio::test]
async fn unknown_health_services_are_not_found() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    assert_eq!(client.health("no.such.Service").await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn in_flight_streams_finish_during_shutdown() {
    let mut server = TestServer::start(&["--drain-seconds", "0.2"]).await;
    let mut client = common::client(&server).await;
    let data = rows("sme", 1000);
    let mut stream = client.batch_predict_stream("sme", candela_server::testing::FEATURES, data.values).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    server.begin_shutdown();
    let mut total = first.predictions.len();
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().predictions.len();
    }
    assert_eq!(total, 1000, "every row of the in-flight call was answered");
    drop((stream, client));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_broken_repository_ends_run_with_every_problem_listed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("retail/1")).unwrap();
    std::fs::create_dir_all(dir.path().join("sme")).unwrap();
    let server = TestServer::start_with(settings(dir.path(), &[])).await;
    let error = server.join().await.unwrap_err().to_string();
    // retail/1 is waiting for its model.json (being published): not a problem.
    assert!(error.contains("(1 problem)"), "{error}");
    assert!(error.contains("sme: segment has no versions"), "{error}");
}

#[tokio::test]
async fn a_shutdown_while_loading_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    repository_that_loads_slowly(dir.path());
    let mut server = TestServer::start_with(settings(dir.path(), &["--drain-seconds", "5"])).await;
    let mut client = common::client(&server).await;
    assert_eq!(client.health("").await.unwrap(), ServingStatus::NotServing);
    let began = Instant::now();
    server.begin_shutdown();
    server.stop().await.expect("a shutdown before SERVING is not an error");
    assert!(began.elapsed() < Duration::from_secs(5), "nothing to drain before SERVING");
}

/// The status of `request` (`"GET /path"`; a body of no rows goes with it) to the HTTP
/// port at `address`, over a plain HTTP/1.1 connection.
async fn http_status(address: &str, request: &str) -> u16 {
    let answer = http_answer(address, request).await;
    answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("not HTTP: {answer}"))
}

/// The whole HTTP answer (head and body) to `request` with a small JSON body.
async fn http_answer(address: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "{request} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: 15\r\n\r\n{{\"features\":[]}}"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}
