//! Shared test harness: the real server (`candela_server::run`) on an
//! ephemeral loopback port, the real client crate, the bundled demo models,
//! and the peer tools installed by `scripts/install-test-tools`.
#![allow(dead_code)] // each test binary uses its own part of the harness

use candela_client::Client;
use candela_server::config::Settings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// A server running in this process until `stop` (or drop).
pub struct TestServer {
    pub addr: SocketAddr,
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn demo_models() -> PathBuf {
    repo_root().join("models")
}

/// Settings as the binary would parse them, over `models`, with no drain
/// delay unless `extra` sets one.
pub fn settings(models: &std::path::Path, extra: &[&str]) -> Settings {
    let mut args =
        vec!["candela-server", "--models", models.to_str().unwrap(), "--drain-seconds", "0", "--metrics-listen", "off"];
    args.extend_from_slice(extra);
    Settings::from_args(args).expect("test settings parse")
}

impl TestServer {
    /// Starts on the demo models with extra flags, without waiting for SERVING.
    pub async fn start_with(settings: Settings) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(candela_server::run(listener, settings, async {
            let _ = stopped.await;
        }));
        TestServer { addr, url: format!("http://{addr}"), stop: Some(stop), task: Some(task) }
    }

    /// Starts on the demo models and waits until it reports SERVING.
    pub async fn start(extra: &[&str]) -> TestServer {
        let server = TestServer::start_with(settings(&demo_models(), extra)).await;
        wait_for(&mut server.client().await, "", ServingStatus::Serving).await;
        server
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url, Duration::from_secs(5)).await.expect("connect to the test server")
    }

    /// Begins the drain (what SIGTERM does) without waiting for the end.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("server stops within 30 s").unwrap()
    }

    /// Waits for `run` to end on its own (e.g. after a load failure).
    pub async fn join(mut self) -> anyhow::Result<()> {
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("server ends within 30 s").unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
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
    let server = TestServer::start(&["--max-concurrent-requests", &limit, "--max-queue-delay-us", &window_us]).await;
    let mut holders = Vec::new();
    for _ in 0..permits {
        let mut client = server.client().await;
        holders.push(tokio::spawn(async move { client.predict("retail", rows("retail", 1).values).await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    (server, holders)
}

/// Polls health until `service` reports `want` (30 s at most).
pub async fn wait_for(client: &mut Client, service: &str, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.health(service).await.is_ok_and(|status| status == want) {
            return;
        }
        assert!(Instant::now() < deadline, "health of `{service}` never became {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fresh synthetic rows of a demo segment (never used in training).
pub fn rows(segment: &str, n: usize) -> candela_server::synthetic::Dataset {
    let segment = candela_server::synthetic::Segment::from_name(segment).unwrap();
    candela_server::training::fresh_rows(segment, n)
}

pub const FEATURES: usize = candela_server::synthetic::FEATURES.len();

/// A peer tool installed by `scripts/install-test-tools`; a missing tool fails
/// the test with the command that installs it, never skips it.
pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("CANDELA_TOOLS").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".tools"));
    let path = dir.join("bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `scripts/install-test-tools` (scripts/test does) first",
        path.display()
    );
    path
}

/// The Python of the test environment made by `scripts/install-test-tools`
/// (tritonclient, numpy).
pub fn peers_python() -> PathBuf {
    let dir = std::env::var_os("CANDELA_TOOLS").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".tools"));
    let path = dir.join("venv/bin/python");
    assert!(
        path.is_file(),
        "{} is missing: run `scripts/install-test-tools` (scripts/test does) first",
        path.display()
    );
    path
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
