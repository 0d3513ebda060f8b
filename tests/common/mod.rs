//! What the root test suites add to the shared harness
//! (`candela_server::testing`: the real server on a loopback port, the demo
//! models, fresh rows, the peer tools): the real client crate connected to
//! it, a server held at its concurrency limit, raw HTTP/2 calls, and
//! reading its Prometheus metrics.
#![allow(dead_code)] // each test binary uses its own part of the harness

use candela_client::Client;
use candela_server::testing::{TestServer, eventually, rows};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// The client crate, connected to a test server.
pub async fn client(server: &TestServer) -> Client {
    Client::connect(&server.url, Duration::from_secs(5)).await.expect("connect to the test server")
}

/// Polls health through `client` until `service` reports `want` (30 s at
/// most); for servers `TestServer::wait_for` cannot reach in plaintext.
pub async fn wait_for(client: &mut Client, service: &str, want: ServingStatus) {
    let what = format!("health of `{service}` reporting {want:?}");
    eventually(Duration::from_secs(30), &what, async || client.health(service).await.is_ok_and(|s| s == want)).await;
}

/// Starts a server with a limit of `permits` concurrent calls and a batching
/// window of `window`, and that many Predict calls waiting in the window, so
/// every permit is held for about `window`; returns the server and the calls
/// (each answered once the window closes).
pub async fn server_held_full(
    permits: usize,
    window: Duration,
) -> (TestServer, Vec<JoinHandle<Result<candela_client::proto::PredictResponse, tonic::Status>>>) {
    let window_us = window.as_micros().to_string();
    let limit = permits.to_string();
    let metrics = free_port();
    let flags = ["--max-concurrent-requests", &limit, "--max-queue-delay-us", &window_us, "--metrics-listen", &metrics];
    let server = TestServer::start(&flags).await;
    let mut holders = Vec::new();
    for _ in 0..permits {
        let mut client = client(&server).await;
        holders.push(tokio::spawn(async move { client.predict("retail", rows("retail", 1).values).await }));
    }
    until_in_flight(&metrics, permits).await;
    (server, holders)
}

/// Waits until the server whose metrics are at `metrics` is serving `calls` inference calls at once.
pub async fn until_in_flight(metrics: &str, calls: usize) {
    let busy = async || metric(metrics, "candela_in_flight_requests", &[]).await >= calls as f64;
    eventually(Duration::from_secs(10), &format!("{calls} calls in flight"), busy).await;
}

/// A gRPC call opened at the HTTP/2 level, so a test can send a request's
/// body byte by byte (or not at all), as a slow or hostile client would.
pub struct RawCall {
    pub response: h2::client::ResponseFuture,
    pub body: h2::SendStream<bytes::Bytes>,
}

/// Opens an HTTP/2 connection to `addr` for raw calls.
pub async fn raw_connection(addr: SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    sender.ready().await.unwrap()
}

/// Starts a call to `path` (e.g. `/candela.v1.Inference/Predict`) on `connection`, sending only its headers.
pub async fn raw_call(connection: &mut h2::client::SendRequest<bytes::Bytes>, path: &str) -> RawCall {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://candela{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    *connection = connection.clone().ready().await.unwrap();
    let (response, body) = connection.send_request(request, false).unwrap();
    RawCall { response, body }
}

/// A gRPC message prefix: compression `flag`, then the big-endian length.
pub fn grpc_prefix(flag: u8, length: u32) -> Vec<u8> {
    let mut prefix = vec![flag];
    prefix.extend_from_slice(&length.to_be_bytes());
    prefix
}

/// The gRPC status of a raw call's answer: from the headers of a
/// trailers-only answer, else from the trailers after the body.
pub async fn raw_status(call: h2::client::ResponseFuture) -> (Code, String) {
    let response = call.await.unwrap();
    let (parts, mut body) = response.into_parts();
    let status = match tonic::Status::from_header_map(&parts.headers) {
        Some(status) => status,
        None => {
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            let trailers = body.trailers().await.unwrap().expect("a gRPC answer ends in trailers");
            tonic::Status::from_header_map(&trailers).expect("trailers carry grpc-status")
        }
    };
    (status.code(), status.message().to_string())
}

/// A loopback address no one listens on now, for a server flag
/// (`--http-listen`, `--metrics-listen`). Picked at random below the kernel's
/// ephemeral range: a port from `127.0.0.1:0` (which every test server binds
/// for gRPC, in parallel) was once handed to another test's bind between
/// this probe and the server's own bind, which then failed.
pub fn free_port() -> String {
    use std::hash::{BuildHasher, Hasher};
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let ephemeral: u64 = range.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(32768);
    let below = ephemeral.clamp(12000, 65000);
    loop {
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let port = 10000 + random % (below - 10000);
        if let Ok(probe) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return probe.local_addr().unwrap().to_string();
        }
    }
}

/// The sum of the samples of `name` carrying every one of `labels`, scraped
/// from the metrics endpoint at `metrics` (0 when there is none).
pub async fn metric(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(metrics).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let body = response.split_once("\r\n\r\n").expect("an HTTP response").1;
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(label, value)| s.labels.get(label) == Some(*value)))
        .map(|s| match s.value {
            // prometheus-parse types `_total` samples of OpenMetrics counters as untyped.
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v)
            | prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{name} is a counter or gauge, got {other:?}"),
        })
        .sum()
}

/// POSTs `body` to the HTTP port with curl and parses the JSON answer.
pub async fn post_json(http: &str, path: &str, body: &str) -> serde_json::Value {
    let mut command = std::process::Command::new("curl");
    command.args(["-sS", "--max-time", "20", "-H", "content-type: application/json", "-d", body]);
    command.arg(format!("http://{http}{path}"));
    let output = tokio::task::spawn_blocking(move || command.output().expect("curl runs")).await.unwrap();
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}
