//! The HTTP/JSON port (--http-listen) against real clients: Triton's HTTP
//! client and Python requests (tests/peers/http_check.py), curl on every
//! route, and raw sockets for the hardening: the answers equal gRPC's within
//! 1e-6, and each failure has the status that says what happened.

mod common;

use candela_server::testing::{FEATURES, TestServer, eventually, peers_python, repo_root, rows};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts a server on the demo models with its HTTP port on a free loopback
/// port and `extra` flags; returns it and the HTTP address.
async fn start(extra: &[&str]) -> (TestServer, String) {
    let http = common::free_port();
    let mut flags = vec!["--http-listen", http.as_str()];
    flags.extend_from_slice(extra);
    let server = TestServer::start(&flags).await;
    (server, http)
}

async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("the peer tool runs")).await.unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// What curl got: the status, the response headers and the body.
struct Got {
    status: u16,
    headers: String,
    body: String,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Calls `url` with curl and `args` (e.g. `-X POST -d …`).
async fn curl(url: &str, args: &[&str]) -> Got {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "20", "-o", "-", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .arg(url);
    let output = run(command).await;
    assert!(output.status.success(), "curl {url} failed:\n{}", text(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let (body, status) = stdout.rsplit_once('\n').unwrap();
    Got {
        status: status.parse().unwrap(),
        headers: std::fs::read_to_string(&headers).unwrap().to_lowercase(),
        body: body.to_string(),
    }
}

/// A /score body for `n` retail rows.
fn score_body(n: usize) -> String {
    let data = rows("retail", n);
    serde_json::json!({"segment": "retail", "features": data.values.chunks(FEATURES).collect::<Vec<_>>()}).to_string()
}

#[tokio::test]
async fn tritonclient_http_and_requests_work_unchanged_and_agree_with_grpc() {
    let (server, http) = start(&[]).await;
    let mut client = common::client(&server).await;
    let data = rows("retail", 64);
    let batch = client.batch_predict("retail", FEATURES, data.values.clone()).await.unwrap();
    let info = client.get_model("retail").await.unwrap();
    let expected = serde_json::json!({
        "model": "retail",
        "features": info.features,
        "labels": info.labels,
        "rows": data.values.chunks(FEATURES).collect::<Vec<_>>(),
        "probabilities": batch.predictions.iter().map(|p| p.probabilities.clone()).collect::<Vec<_>>(),
        "classes": batch.predictions.iter().map(|p| p.class_index).collect::<Vec<_>>(),
    });
    let dir = tempfile::tempdir().unwrap();
    let expected_path = dir.path().join("expected.json");
    std::fs::write(&expected_path, expected.to_string()).unwrap();
    let mut command = Command::new(peers_python());
    command.arg(repo_root().join("tests/peers/http_check.py")).arg(&http).arg(&expected_path);
    let output = run(command).await;
    assert!(output.status.success(), "HTTP peer checks failed:\n{}", text(&output));
    println!("{}", text(&output));
}

#[tokio::test]
async fn curl_reaches_every_route() {
    let metrics = common::free_port();
    let (_server, http) = start(&["--metrics-listen", &metrics]).await;
    let at = |path: &str| format!("http://{http}{path}");
    for path in ["/v2/health/live", "/v2/health/ready", "/v2/models/retail/ready", "/v2/models/retail/versions/1/ready"]
    {
        assert_eq!(curl(&at(path), &[]).await.status, 200, "{path}");
    }
    let server = curl(&at("/v2"), &[]).await.json();
    assert_eq!(server["name"], "candela");
    for path in ["/v2/models/retail", "/v2/models/retail/versions/1"] {
        let metadata = curl(&at(path), &[]).await.json();
        assert_eq!(metadata["inputs"][0]["shape"], serde_json::json!([-1, FEATURES]), "{path}");
    }
    let config = curl(&at("/v2/models/retail/config"), &[]).await.json();
    assert_eq!(config["max_batch_size"], 1000);
    let index = curl(&at("/v2/repository/index"), &["-X", "POST", "-d", r#"{"ready": true}"#]).await.json();
    assert!(index.as_array().unwrap().iter().any(|m| m["name"] == "retail" && m["state"] == "READY"), "{index}");

    let data = rows("retail", 2);
    let infer = serde_json::json!({
        "inputs": [{"name": "features", "shape": [2, FEATURES], "datatype": "FP32", "data": data.values}],
        "outputs": [{"name": "prediction"}],
    });
    let inferred = curl(&at("/v2/models/retail/infer"), &["-X", "POST", "-d", &infer.to_string()]).await;
    assert_eq!(inferred.status, 200, "{}", inferred.body);
    assert_eq!(inferred.json()["outputs"][0]["shape"], serde_json::json!([2, 1]));

    let scored = curl(&at("/score"), &["-X", "POST", "-H", "x-request-id: curl-1", "-d", &score_body(3)]).await;
    assert_eq!(scored.status, 200, "{}", scored.body);
    assert!(scored.headers.contains("x-request-id: curl-1"), "{}", scored.headers);
    let answer = scored.json();
    assert_eq!(answer["prediction"].as_array().unwrap().len(), 3);
    let label = answer["labels"][0].as_str().unwrap();
    let outcome = serde_json::json!({"outcomes": [{"request_id": "curl-1", "row": 2, "label": label}]});
    let fed = curl(&at("/feedback"), &["-X", "POST", "-d", &outcome.to_string()]).await;
    assert_eq!(fed.json()["matched"], 1, "{}", fed.body);

    let missing = curl(&at("/v3/nothing"), &[]).await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].as_str().unwrap().contains("no route"), "{}", missing.body);
    assert_eq!(curl(&at("/score"), &[]).await.status, 405, "GET /score");

    // HTTP calls are counted like gRPC's, under service `http`.
    let counted = common::metric(
        &metrics,
        "candela_requests_total",
        &[("service", "http"), ("method", "score"), ("code", "OK"), ("segment", "retail")],
    )
    .await;
    assert_eq!(counted, 1.0);
}

#[tokio::test]
async fn keys_guard_every_route_but_health_and_admin_routes_need_an_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, admin) = (dir.path().join("keys"), dir.path().join("admin"));
    std::fs::write(&keys, "http-inference-key-5d1e\n").unwrap();
    std::fs::write(&admin, "http-admin-key-77c0\n").unwrap();
    let (_server, http) =
        start(&["--api-keys-file", keys.to_str().unwrap(), "--admin-keys-file", admin.to_str().unwrap()]).await;
    let at = |path: &str| format!("http://{http}{path}");
    let key = ["-H", "authorization: Bearer http-inference-key-5d1e"];
    let admin_key = ["-H", "authorization: Bearer http-admin-key-77c0"];

    assert_eq!(curl(&at("/v2/health/ready"), &[]).await.status, 200, "health needs no key");
    assert_eq!(curl(&at("/v2/health/live"), &[]).await.status, 200, "health needs no key");
    let body = score_body(1);
    for (name, extra) in [("no key", vec![]), ("a wrong key", vec!["-H", "authorization: Bearer nope"])] {
        let mut args = vec!["-X", "POST", "-d", &body];
        args.extend(extra);
        let refused = curl(&at("/score"), &args).await;
        assert_eq!(refused.status, 401, "{name}: {}", refused.body);
        assert!(refused.headers.contains("www-authenticate: bearer"), "{name}: {}", refused.headers);
        assert!(!refused.json()["error"].as_str().unwrap().is_empty());
    }
    assert_eq!(curl(&at("/v2/models/retail"), &[]).await.status, 401, "metadata needs a key");
    let scored = curl(&at("/score"), &[&["-X", "POST", "-d", &body][..], &key].concat()).await;
    assert_eq!(scored.status, 200, "{}", scored.body);
    assert_eq!(curl(&at("/score"), &[&["-X", "POST", "-d", &body][..], &admin_key].concat()).await.status, 200);

    let unload = at("/v2/repository/models/retail/unload");
    let forbidden = curl(&unload, &[&["-X", "POST"][..], &key].concat()).await;
    assert_eq!(forbidden.status, 403, "an inference key cannot unload: {}", forbidden.body);
    assert_eq!(curl(&unload, &["-X", "POST"]).await.status, 401);
    assert_eq!(curl(&unload, &[&["-X", "POST"][..], &admin_key].concat()).await.status, 200);
    let ready = curl(&at("/v2/models/retail/ready"), &key).await;
    assert_eq!((ready.status, ready.json()["ready"].clone()), (503, serde_json::json!(false)), "unloaded");
    let refused = curl(&at("/score"), &[&["-X", "POST", "-d", &body][..], &key].concat()).await;
    assert_eq!(refused.status, 404, "an unloaded model is not served: {}", refused.body);
    let load = at("/v2/repository/models/retail/load");
    assert_eq!(curl(&load, &[&["-X", "POST"][..], &admin_key].concat()).await.status, 200);
    assert_eq!(curl(&at("/v2/models/retail/ready"), &key).await.status, 200, "loaded again");
}

#[tokio::test]
async fn over_the_concurrency_limit_429_with_retry_after_and_a_passed_deadline_504() {
    let http = common::free_port();
    let (server, holders) = {
        // Every permit held in a 600 ms batching window.
        let metrics = common::free_port();
        let window = "600000";
        let server = TestServer::start(&[
            "--http-listen",
            &http,
            "--max-concurrent-requests",
            "2",
            "--max-queue-delay-us",
            window,
            "--metrics-listen",
            &metrics,
        ])
        .await;
        let mut holders = Vec::new();
        for _ in 0..2 {
            let mut client = common::client(&server).await;
            holders.push(tokio::spawn(async move { client.predict("retail", rows("retail", 1).values).await }));
        }
        common::until_in_flight(&metrics, 2).await;
        (server, holders)
    };
    let at = |path: &str| format!("http://{http}{path}");
    let refused = curl(&at("/score"), &["-X", "POST", "-d", &score_body(1)]).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(refused.headers.contains("retry-after: 1"), "{}", refused.headers);
    for holder in holders {
        assert!(holder.await.unwrap().is_ok());
    }
    // A timeout header that is not a timeout is refused naming it, never ignored.
    for value in ["garbage", "-5", "NaN", "1e30"] {
        let header = format!("x-request-timeout: {value}");
        let refused = curl(&at("/score"), &["-X", "POST", "-H", &header, "-d", &score_body(1)]).await;
        assert_eq!(refused.status, 400, "{value}: {}", refused.body);
        assert!(
            refused.body.contains("x-request-timeout") && refused.body.contains("not a timeout"),
            "{}",
            refused.body
        );
    }
    // The batching window outlasts the caller's 50 ms: dropped uncomputed, 504.
    for header in ["x-request-timeout: 0.05", "request-timeout: 50ms"] {
        let late = curl(&at("/score"), &["-X", "POST", "-H", header, "-d", &score_body(1)]).await;
        assert_eq!(late.status, 504, "{header}: {}", late.body);
    }
    drop(server);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_and_the_pending_budget_is_shared() {
    let (_server, http) = start(&["--max-message-bytes", "20000", "--max-pending-request-bytes", "30000"]).await;
    let at = |path: &str| format!("http://{http}{path}");
    let big = score_body(100);
    assert!(big.len() > 20000);
    let refused = curl(&at("/score"), &["-X", "POST", "-d", &big]).await;
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert!(refused.json()["error"].as_str().unwrap().contains("--max-message-bytes"), "{}", refused.body);
    // Chunked, without a Content-Length: refused as the bytes pass the limit.
    let chunked = curl(&at("/score"), &["-X", "POST", "-H", "transfer-encoding: chunked", "-d", &big]).await;
    assert_eq!(chunked.status, 413, "{}", chunked.body);
    // Two stalled uploads of 15,000 of their 19,000 bytes hold 30,000 bytes
    // of the budget: a third body cannot be read and is refused with 429.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(&http).await.unwrap();
        let head = format!("POST /score HTTP/1.1\r\nhost: x\r\ncontent-length: 19000\r\n\r\n{}", "[".repeat(15000));
        tcp.write_all(head.as_bytes()).await.unwrap();
        stalled.push(tcp);
    }
    // A third is refused once both stalled bodies are charged (a call before that is answered).
    let third = async || curl(&at("/score"), &["-X", "POST", "-d", &score_body(5)]).await.status == 429;
    eventually(Duration::from_secs(10), "a third body refused over the budget", third).await;
    drop(stalled);
    let back = async || curl(&at("/score"), &["-X", "POST", "-d", &score_body(5)]).await.status == 200;
    eventually(Duration::from_secs(10), "the budget coming back", back).await;
}

#[tokio::test]
async fn idle_connections_and_slow_heads_are_closed_and_huge_heads_refused() {
    let (_server, http) = start(&["--http-idle-seconds", "0.5"]).await;
    // A head that never ends is closed after the idle time.
    let mut slow = tokio::net::TcpStream::connect(&http).await.unwrap();
    slow.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "a connection that never finished its head was kept open");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    // A kept-alive connection that sends nothing more is closed too.
    let mut idle = tokio::net::TcpStream::connect(&http).await.unwrap();
    idle.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "an idle kept-alive connection was kept open");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "answered first");
    // A head over 16 KiB: 431, never buffered whole.
    let mut huge = tokio::net::TcpStream::connect(&http).await.unwrap();
    let head = format!("GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-padding: {}\r\n\r\n", "a".repeat(20_000));
    let _ = huge.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), huge.read_to_end(&mut answer)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"), "{}", String::from_utf8_lossy(&answer));
}

#[tokio::test]
async fn readiness_is_503_while_draining_and_inference_still_answers() {
    let (mut server, http) = start(&["--drain-seconds", "3"]).await;
    let at = |path: &str| format!("http://{http}{path}");
    assert_eq!(curl(&at("/v2/health/ready"), &[]).await.status, 200);
    server.begin_shutdown();
    let draining = async || curl(&at("/v2/health/ready"), &[]).await.status == 503;
    eventually(Duration::from_secs(2), "readiness turning 503 while draining", draining).await;
    let ready = curl(&at("/v2/health/ready"), &[]).await;
    assert_eq!((ready.status, &ready.json()["ready"]), (503, &serde_json::Value::Bool(false)));
    assert_eq!(curl(&at("/v2/health/live"), &[]).await.status, 200);
    assert_eq!(curl(&at("/score"), &["-X", "POST", "-d", &score_body(1)]).await.status, 200, "still answering");
    server.join().await.unwrap();
}

#[tokio::test]
async fn connections_over_the_limit_wait_until_one_closes() {
    let (_server, http) = start(&["--max-connections", "2"]).await;
    let request = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n";
    /// Sends `request` on `tcp` and reads one answer's first bytes, within `wait`.
    async fn answered(tcp: &mut tokio::net::TcpStream, request: &[u8], wait: Duration) -> bool {
        tcp.write_all(request).await.unwrap();
        let mut buffer = [0u8; 12];
        matches!(tokio::time::timeout(wait, tcp.read_exact(&mut buffer)).await, Ok(Ok(_)))
            && buffer.starts_with(b"HTTP/1.1 200")
    }
    // Two kept-alive connections hold both places.
    let mut first = tokio::net::TcpStream::connect(&http).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(&http).await.unwrap();
    assert!(answered(&mut first, request, Duration::from_secs(5)).await);
    assert!(answered(&mut second, request, Duration::from_secs(5)).await);
    // A third waits in the accept queue, unanswered…
    let mut third = tokio::net::TcpStream::connect(&http).await.unwrap();
    assert!(!answered(&mut third, request, Duration::from_millis(500)).await, "a third connection was served");
    // …until one of the two closes.
    drop(first);
    let mut answer = [0u8; 12];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read_exact(&mut answer)).await;
    assert!(matches!(read, Ok(Ok(_))) && answer.starts_with(b"HTTP/1.1 200"), "the third was never served");
    drop(second);
}
