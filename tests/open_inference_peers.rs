//! The Open Inference Protocol against the real peer tools: Triton's Python
//! gRPC client (tests/peers/tritonclient_check.py) and Triton's perf_analyzer,
//! both installed by `scripts/install-test-tools`. Their answers must equal
//! candela.v1's for the same rows.

mod common;

use candela_server::testing::{FEATURES, TestServer, peers_python, repo_root, rows, tool};
use std::process::{Command, Output};

async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("the peer tool runs")).await.unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test]
async fn tritonclient_works_unchanged_and_agrees_with_batch_predict() {
    let keys = tempfile::tempdir().unwrap();
    let admin = keys.path().join("admin");
    std::fs::write(&admin, "triton-admin-key-20c4\n").unwrap();
    let server = TestServer::start(&["--admin-keys-file", admin.to_str().unwrap()]).await;
    let mut client = common::client(&server).await;
    let data = rows("retail", 64);
    let batch = client.batch_predict("retail", FEATURES, data.values.clone()).await.unwrap();
    let expected = serde_json::json!({
        "model": "retail",
        "rows": data.values.chunks(FEATURES).collect::<Vec<_>>(),
        "probabilities": batch.predictions.iter().map(|p| p.probabilities.clone()).collect::<Vec<_>>(),
        "classes": batch.predictions.iter().map(|p| p.class_index).collect::<Vec<_>>(),
        "admin_key": "triton-admin-key-20c4",
    });
    let dir = tempfile::tempdir().unwrap();
    let expected_path = dir.path().join("expected.json");
    std::fs::write(&expected_path, expected.to_string()).unwrap();
    let mut command = Command::new(peers_python());
    command.arg(repo_root().join("tests/peers/tritonclient_check.py")).arg(server.addr.to_string()).arg(&expected_path);
    let output = run(command).await;
    assert!(output.status.success(), "tritonclient checks failed:\n{}", text(&output));
    println!("{}", text(&output));
}

/// perf_analyzer over gRPC: plain, streaming, and batches of 16, each at
/// concurrency 1 to 4, must finish without a single error. This checks the
/// protocol, not speed: the test machine is shared and noisy, so the latency
/// stability perf_analyzer waits for is relaxed (bench/ measures speed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_analyzer_runs_without_errors() {
    let server = TestServer::start(&[]).await;
    let url = server.addr.to_string();
    for extra in [&[][..], &["--streaming"][..], &["-b", "16"][..]] {
        let mut command = Command::new(tool("perf_analyzer"));
        command
            .args([
                "-m",
                "retail",
                "-i",
                "grpc",
                "-u",
                &url,
                "--concurrency-range",
                "1:4",
                "--measurement-interval",
                "2000",
            ])
            .args(["--stability-percentage", "500"])
            .args(extra);
        let output = run(command).await;
        let report = text(&output);
        assert!(output.status.success(), "perf_analyzer {extra:?} failed:\n{report}");
        assert!(!report.to_lowercase().contains("error"), "perf_analyzer {extra:?} reported errors:\n{report}");
        let summary: Vec<&str> = report.lines().filter(|l| l.starts_with("Concurrency:")).collect();
        assert_eq!(summary.len(), 4, "one summary line per concurrency:\n{report}");
        println!("perf_analyzer {extra:?}\n{}", summary.join("\n"));
    }
}
