//! The real `candela-server` binary as an operator runs it: settings from
//! flags, environment and file; SIGTERM drains and exits cleanly; a broken
//! repository or an impossible device stops it at start with a clear message.

use candela_client::Client;
use candela_server::testing::{Moto, demo_models, eventually};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tonic_health::pb::health_check_response::ServingStatus;

/// A running server binary and its JSON log lines.
struct Running {
    child: Child,
    logs: mpsc::UnboundedReceiver<Value>,
    /// Everything it has written to stderr so far.
    transcript: std::sync::Arc<std::sync::Mutex<String>>,
}

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_candela-server"));
    command
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

impl Running {
    fn start(command: &mut Command) -> Running {
        let mut child = command.spawn().expect("candela-server starts");
        let stderr = child.stderr.take().unwrap();
        let (sender, logs) = mpsc::unbounded_channel();
        let transcript = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let written = transcript.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                written.lock().unwrap().push_str(&format!("{line}\n"));
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if sender.send(value).is_err() {
                    break;
                }
            }
        });
        Running { child, logs, transcript }
    }

    /// The next log line whose message contains `part` (30 s at most).
    async fn log_containing(&mut self, part: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = tokio::time::timeout_at(deadline.into(), self.logs.recv())
                .await
                .unwrap_or_else(|_| panic!("no log line containing `{part}`"))
                .unwrap_or_else(|| panic!("the server exited without logging `{part}`"));
            if line["message"].as_str().is_some_and(|m| m.contains(part)) {
                return line;
            }
        }
    }

    async fn serving_client(&mut self) -> Client {
        let listening = self.log_containing("NOT_SERVING until the models are loaded").await;
        let url = format!("http://{}", listening["address"].as_str().unwrap());
        let mut client = Client::connect(&url, Duration::from_secs(5)).await.unwrap();
        self.log_containing("SERVING").await;
        assert_eq!(client.health("").await.unwrap(), ServingStatus::Serving);
        client
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill").args(["-s", name, &pid]).status().unwrap();
        assert!(status.success());
    }

    async fn exit_code(&mut self) -> i32 {
        let status =
            tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("exits within 30 s").unwrap();
        status.code().expect("exited, not killed")
    }
}

#[tokio::test]
async fn sigterm_reports_not_serving_drains_then_exits_zero() {
    let models = demo_models();
    let mut server = Running::start(&mut command(&["--models", models.to_str().unwrap(), "--drain-seconds", "1"]));
    let mut client = server.serving_client().await;
    let row = vec![0.5; 30];
    assert!(client.predict("retail", row.clone()).await.is_ok());

    let signalled = Instant::now();
    server.signal("TERM");
    server.log_containing("draining").await;
    assert_eq!(client.health("").await.unwrap(), ServingStatus::NotServing);
    assert_eq!(client.health("candela.v1.Inference").await.unwrap(), ServingStatus::NotServing);
    assert!(client.predict("retail", row).await.is_ok(), "still answering while draining");
    drop(client);
    assert_eq!(server.exit_code().await, 0);
    let took = signalled.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(10), "drain took {took:?}");
}

#[tokio::test]
async fn sigint_stops_it_too() {
    let models = demo_models();
    let mut server = Running::start(&mut command(&["--models", models.to_str().unwrap(), "--drain-seconds", "0"]));
    server.serving_client().await;
    server.signal("INT");
    assert_eq!(server.exit_code().await, 0);
}

#[tokio::test]
async fn a_broken_repository_exits_non_zero_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("retail/1")).unwrap();
    std::fs::write(dir.path().join("retail/1/model.json"), "{ not json").unwrap();
    let mut server = Running::start(&mut command(&["--models", dir.path().to_str().unwrap()]));
    assert_eq!(server.exit_code().await, 1);
    server.log_containing("retail/1/model.json: invalid JSON").await;
}

#[tokio::test]
async fn cuda_on_a_cpu_build_is_refused_with_what_to_do() {
    if cfg!(feature = "cuda") {
        return; // a CUDA build may well open the GPU
    }
    let models = demo_models();
    let mut server = Running::start(&mut command(&["--models", models.to_str().unwrap(), "--device", "cuda:0"]));
    assert_eq!(server.exit_code().await, 1);
    // Read through the log (the reader may still be behind the exit), not just what has arrived.
    let line = server.log_containing("this build has no CUDA support").await.to_string();
    assert!(line.contains("--features cuda"), "{line}");
}

#[tokio::test]
async fn device_auto_falls_back_to_the_cpu() {
    let models = demo_models();
    let mut server = Running::start(&mut command(&[
        "--models",
        models.to_str().unwrap(),
        "--device",
        "auto",
        "--drain-seconds",
        "0",
    ]));
    let mut client = server.serving_client().await;
    let device = client.get_model("retail").await.unwrap().device;
    if cfg!(feature = "cuda") {
        assert!(device == "cpu" || device.starts_with("cuda:"), "{device}");
    } else {
        assert_eq!(device, "cpu", "a CPU-only build cannot open a GPU");
    }
    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0);
}

/// File < environment < flag, and the effective settings are logged at start.
#[tokio::test]
async fn settings_layer_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("candela.toml");
    let models = demo_models();
    std::fs::write(
        &file,
        format!(
            "models = \"{}\"\ndefault_segment = \"corporate\"\nmax_rows = 7\ndrain_seconds = 3.5\n",
            models.display()
        ),
    )
    .unwrap();
    let mut command = command(&["--config", file.to_str().unwrap(), "--max-rows", "9"]);
    command.env("CANDELA_DEFAULT_SEGMENT", "sme").env("CANDELA_MAX_ROWS", "8");
    let mut server = Running::start(&mut command);
    let starting = server.log_containing("starting").await;
    let settings = starting["settings"].as_str().unwrap().to_string();
    assert!(settings.contains("default_segment: Some(\"sme\")"), "env beats file: {settings}");
    assert!(settings.contains("max_rows: 9"), "flag beats env: {settings}");
    assert!(settings.contains("drain_seconds: 3.5"), "file beats default: {settings}");
    let mut client = server.serving_client().await;
    assert_eq!(client.predict("", vec![0.1; 30]).await.unwrap().model.unwrap().segment, "sme");
}

#[tokio::test]
async fn unknown_settings_in_the_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("candela.toml");
    std::fs::write(&file, "max_rowz = 7\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_candela-server"))
        .args(["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown setting `max_rowz`; known settings:"), "{stderr}");
    assert!(stderr.contains("max_rows"), "{stderr}");
}

#[test]
fn absurd_numeric_settings_are_refused_at_start_naming_the_flag() {
    for (flag, value) in [
        ("--max-rows", "0"),
        ("--max-concurrent-requests", "0"),
        ("--max-message-bytes", "0"),
        ("--compute-workers", "100000"),
        ("--compute-threads", "0"),
        ("--stream-in-flight", "0"),
        ("--max-connections", "0"),
        ("--max-versions-per-segment", "0"),
        ("--max-loaded-versions", "0"),
        ("--drain-seconds", "-5"),
        ("--repository-poll-seconds", "NaN"),
        ("--stream-idle-seconds", "0"),
        ("--keepalive-seconds", "1e30"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_candela-server"))
            .args(["--models", "/nonexistent", &format!("{flag}={value}")])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flag} {value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag) && stderr.contains(&format!("'{value}'")), "{flag} {value}: {stderr}");
    }
}

/// The threads of process `pid` whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[tokio::test]
async fn compute_threads_are_bounded_by_the_versions_a_segment_may_hold() {
    let root = tempfile::tempdir().unwrap();
    for version in 1..=40 {
        copy_tree(&demo_models().join("retail/1"), &root.path().join(format!("retail/{version}")));
    }
    let models = root.path().to_str().unwrap();
    let mut server = Running::start(&mut command(&["--models", models, "--max-versions-per-segment", "3"]));
    server.serving_client().await;
    let pid = server.child.id().unwrap();
    // A pool's threads name themselves as they start: wait for them, then check none more come.
    let named = async || threads_named(pid, "compute-") >= 3;
    eventually(Duration::from_secs(10), "three compute threads named", named).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(threads_named(pid, "compute-"), 3, "40 versions under `--version-policy all`, 3 loaded");
    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0);
}

#[tokio::test]
async fn pretty_logs_written_to_a_file_carry_no_colour_codes() {
    let models = demo_models();
    let mut command = command(&["--models", models.to_str().unwrap()]);
    command.args(["--log-format", "pretty"]);
    let mut server = Running::start(&mut command);
    let serving = async || server.transcript.lock().unwrap().contains(" SERVING");
    eventually(Duration::from_secs(30), "SERVING in the transcript", serving).await;
    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0);
    let transcript = server.transcript.lock().unwrap().clone();
    assert!(transcript.contains("SERVING"), "{transcript}");
    assert!(!transcript.contains('\u{1b}'), "ANSI escape codes in piped logs:\n{transcript:?}");
}

/// A memory figure of process `pid` from /proc (`VmRSS`: resident now,
/// `VmHWM`: its peak), in bytes.
fn memory(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() * 1024.0
}

/// The peak memory of the binary serving `models` until SERVING.
async fn peak_serving(models: &Path) -> f64 {
    let mut server = Running::start(&mut command(&["--models", models.to_str().unwrap()]));
    server.serving_client().await;
    let peak = memory(server.child.id().unwrap(), "VmHWM");
    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0);
    peak
}

#[tokio::test]
async fn loading_a_large_xgboost_model_peaks_at_a_small_multiple_of_its_file() {
    let fixture = candela_server::testing::repo_root().join("tests/fixtures/formats/repo/xgboost-binary/1");
    let small = tempfile::tempdir().unwrap();
    let large = tempfile::tempdir().unwrap();
    for root in [&small, &large] {
        let dir = root.path().join("trees/1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(fixture.join("model.json"), dir.join("model.json")).unwrap();
    }
    std::fs::copy(fixture.join("xgboost.json"), small.path().join("trees/1/xgboost.json")).unwrap();
    // The fixture's trees 400 times over: a real XGBoost file of about 45 MB.
    let mut model: Value = serde_json::from_slice(&std::fs::read(fixture.join("xgboost.json")).unwrap()).unwrap();
    let booster = &mut model["learner"]["gradient_booster"]["model"];
    let (trees, info) =
        (booster["trees"].as_array().unwrap().clone(), booster["tree_info"].as_array().unwrap().clone());
    booster["trees"] = Value::Array(trees.iter().cycle().take(trees.len() * 400).cloned().collect());
    booster["tree_info"] = Value::Array(info.iter().cycle().take(info.len() * 400).cloned().collect());
    let file = large.path().join("trees/1/xgboost.json");
    std::fs::write(&file, serde_json::to_vec(&model).unwrap()).unwrap();
    drop(model);
    let size = std::fs::metadata(&file).unwrap().len() as f64;
    let grown = peak_serving(large.path()).await - peak_serving(small.path()).await;
    println!(
        "a {:.1} MB XGBoost model: peak memory {:.1} MB over a small one's ({:.2} × the file)",
        size / 1e6,
        grown / 1e6,
        grown / size
    );
    // A generic JSON value tree took 10.7 × (an 87 MiB model peaked at 930 MiB).
    assert!(grown <= 5.0 * size, "loading took {:.1} × the file's size", grown / size);
}

#[test]
fn help_documents_every_setting() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_candela-server")).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--config",
        "--listen",
        "--models",
        "--default-segment",
        "--device",
        "--drain-seconds",
        "--log-format",
        "--max-rows",
        "--max-message-bytes",
        "--stream-chunk-rows",
        "--stream-in-flight",
        "--max-concurrent-requests",
        "--max-concurrent-streams",
        "--keepalive-seconds",
        "--keepalive-timeout-seconds",
        "--max-connection-age-seconds",
        "--max-connection-age-grace-seconds",
        "--drain-grace-seconds",
        "--api-keys-file",
        "--auth-reflection",
        "--metrics-listen",
        "--http-listen",
        "--http-idle-seconds",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
        "--health-listen",
        "--otlp-endpoint",
        "--stream-idle-seconds",
        "--max-pending-request-bytes",
        "--max-connections",
        "--handshake-timeout-seconds",
        "--max-model-bytes",
        "--max-versions-per-segment",
        "--max-loaded-versions",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    for env in ["CANDELA_LISTEN", "CANDELA_MODELS", "CANDELA_DEVICE"] {
        assert!(help.contains(env), "--help lacks {env}");
    }
}

/// A client holding a stream open cannot hold shutdown: after the drain
/// period and the grace period the connection is cut and the process exits.
#[tokio::test]
async fn shutdown_completes_within_drain_plus_grace_despite_an_open_stream() {
    use candela_client::{ModelId, stream_batch};
    use futures::StreamExt;
    let models = demo_models();
    let mut server = Running::start(&mut command(&[
        "--models",
        models.to_str().unwrap(),
        "--drain-seconds",
        "0.2",
        "--drain-grace-seconds",
        "1",
    ]));
    let mut client = server.serving_client().await;
    let (producer, batches) = tokio::sync::mpsc::channel(1);
    let mut responses = client.stream_predict(tokio_stream::wrappers::ReceiverStream::new(batches)).await.unwrap();
    producer.send(stream_batch("1", &ModelId::latest("retail"), 30, vec![0.5; 30])).await.unwrap();
    assert!(responses.next().await.unwrap().is_ok());

    let signalled = Instant::now();
    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0);
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(10), "shutdown took {took:?} with a stream held open");
    server.log_containing("cut off").await;
    let after = tokio::time::timeout(Duration::from_secs(10), responses.next()).await.expect("the stream ends");
    assert!(matches!(after, Some(Err(_)) | None), "the held stream was closed: {after:?}");
    drop(producer);
}

/// A producer that never reads its answers cannot grow the server's memory:
/// flow control stops it after a bounded number of batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_consumer_does_not_grow_server_memory() {
    use candela_client::{ModelId, stream_batch};
    use futures::StreamExt;
    let models = demo_models();
    let mut server = Running::start(&mut command(&["--models", models.to_str().unwrap(), "--drain-seconds", "0"]));
    let mut client = server.serving_client().await;
    let pid = server.child.id().unwrap();
    let rss = || (memory(pid, "VmRSS") / 1_048_576.0) as u64;
    let before = rss();
    let model = ModelId::latest("retail");
    let batch = vec![0.25f32; 1000 * 30];
    // 2,000 batches of 1000 rows: 240 MB of requests if the server buffered them.
    let batches = futures::stream::iter(0..2000).map(move |i| stream_batch(i.to_string(), &model, 30, batch.clone()));
    let mut responses = client.stream_predict(batches).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stalled = rss();
    println!("server RSS: {before} MiB before, {stalled} MiB with a stalled consumer");
    assert!(stalled < before + 64, "RSS grew from {before} MiB to {stalled} MiB");
    let mut answered = 0;
    while let Some(response) = responses.next().await {
        response.unwrap();
        answered += 1;
    }
    assert_eq!(answered, 2000);
    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0);
}

#[tokio::test]
async fn sighup_reloads_the_api_keys_and_no_key_reaches_the_logs() {
    const OLD: &str = "old-7c1e93b0f4a25d68";
    const NEW: &str = "new-2b8f60d9e13c7a45";
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("{OLD}\n")).unwrap();
    let models = demo_models();
    let mut command = command(&["--models", models.to_str().unwrap(), "--api-keys-file", keys.to_str().unwrap()]);
    command.env("RUST_LOG", "debug");
    let mut server = Running::start(&mut command);
    let client = server.serving_client().await;
    let row = vec![0.5; 30];
    assert!(client.clone().with_api_key(OLD).unwrap().predict("retail", row.clone()).await.is_ok());
    let _ = client.clone().with_api_key(NEW).unwrap().predict("retail", row.clone()).await.unwrap_err();

    std::fs::write(&keys, format!("# rotated\n{NEW}\n")).unwrap();
    server.signal("HUP");
    server.log_containing("SIGHUP").await;
    server.log_containing("API keys reloaded").await;
    assert!(client.clone().with_api_key(NEW).unwrap().predict("retail", row.clone()).await.is_ok());
    let status = client.clone().with_api_key(OLD).unwrap().predict("retail", row).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0);
    let transcript = server.transcript.lock().unwrap().clone();
    assert!(transcript.contains("API keys required"), "{transcript}");
    assert!(!transcript.contains(OLD) && !transcript.contains(NEW), "a key reached the logs:\n{transcript}");
}

#[tokio::test]
async fn sighup_never_stops_a_server_without_keys_or_tls() {
    let models = demo_models();
    let mut server = Running::start(&mut command(&["--models", models.to_str().unwrap(), "--drain-seconds", "0"]));
    let mut client = server.serving_client().await;
    for _ in 0..3 {
        server.signal("HUP");
        server.log_containing("SIGHUP: re-reading what can be reloaded").await;
    }
    assert!(client.predict("retail", vec![0.5; 30]).await.is_ok(), "still serving after SIGHUP");
    assert_eq!(client.health("").await.unwrap(), ServingStatus::Serving);
    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0, "drained and exited cleanly, not killed by SIGHUP");
}

#[tokio::test]
async fn sighup_serves_a_version_published_since_and_the_metrics_count_the_reload() {
    let repo = tempfile::tempdir().unwrap();
    copy_tree(&demo_models().join("retail/1"), &repo.path().join("retail/1"));
    let args = ["--models", repo.path().to_str().unwrap(), "--drain-seconds", "0", "--repository-poll-seconds", "0"];
    let args = [&args[..], &["--max-model-age", "1d"]].concat();
    let mut server = Running::start(&mut command(&args));
    let metrics_address = server.log_containing("metrics listening").await["address"].as_str().unwrap().to_string();
    let mut client = server.serving_client().await;
    assert_eq!(client.predict("retail", vec![0.5; 30]).await.unwrap().model.unwrap().version, 1);

    copy_tree(&demo_models().join("retail/1"), &repo.path().join("retail/2"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(client.predict("retail", vec![0.5; 30]).await.unwrap().model.unwrap().version, 1, "polling is off");
    server.signal("HUP");
    server.log_containing("model version loaded and serving").await;
    assert_eq!(client.predict("retail", vec![0.5; 30]).await.unwrap().model.unwrap().version, 2);

    let body = http_get(&metrics_address, "/metrics").await;
    // The start, then the SIGHUP.
    assert!(body.contains("candela_repository_reloads_total{result=\"changed\"} 2"), "{body}");
    assert!(body.contains("candela_repository_last_reload_timestamp_seconds{result=\"success\"}"), "{body}");
    assert!(body.contains("candela_model_loaded_timestamp_seconds{segment=\"retail\",version=\"2\"}"), "{body}");
    // The demo models were created on 2026-11-23: past --max-model-age 1d.
    assert!(body.contains("candela_model_stale{segment=\"retail\",version=\"2\"} 1"), "{body}");
    let stale = server.log_containing("older than --max-model-age").await;
    assert_eq!(stale["segment"], "retail");
    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0);
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loop_backs_off_instead_of_spinning() {
    let models = demo_models();
    let binary = env!("CARGO_BIN_EXE_candela-server");
    // A low descriptor limit the connections below exhaust; idle connections
    // stay open (30 s handshake timeout) so the limit stays reached.
    let mut command = Command::new("sh");
    command
        .args(["-c", &format!("ulimit -n 48 && exec {binary} \"$@\"", binary = binary), "sh"])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off", "--http-listen", "off", "--log-format", "json"])
        .args(["--models", models.to_str().unwrap(), "--drain-seconds", "0", "--handshake-timeout-seconds", "30"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut server = Running::start(&mut command);
    let listening = server.log_containing("NOT_SERVING until the models are loaded").await;
    let address = listening["address"].as_str().unwrap().to_string();
    server.log_containing("SERVING").await;
    let mut idle = Vec::new();
    for _ in 0..80 {
        idle.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    server.log_containing("out of resources").await;
    let pid = server.child.id().unwrap();
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(pid) - before;
    println!("out of descriptors: {used} clock ticks of CPU in 2 s");
    // Spinning on EMFILE used a whole core (200 ticks in 2 s); backing off, almost nothing.
    assert!(used < 40, "the server used {used} ticks of CPU in 2 s while out of descriptors");
    drop(idle);
    let mut client = Client::connect(&format!("http://{address}"), Duration::from_secs(5)).await.unwrap();
    let serving = async || client.predict("retail", vec![0.5; 30]).await.is_ok();
    eventually(Duration::from_secs(10), "serving again after the connections closed", serving).await;
    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0);
}

#[tokio::test]
async fn without_keys_the_server_warns_that_it_is_open() {
    let models = demo_models();
    let mut server = Running::start(&mut command(&["--models", models.to_str().unwrap(), "--drain-seconds", "0"]));
    let warning = server.log_containing("running OPEN").await;
    assert_eq!(warning["level"], "WARN");
    server.serving_client().await;
    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0);
}

#[tokio::test]
async fn a_callers_request_id_reaches_the_logs_only_as_a_salted_hash() {
    const ID: &str = "order-4711-jane.doe";
    let models = demo_models();
    let mut command = command(&["--models", models.to_str().unwrap(), "--drain-seconds", "0"]);
    command.env("RUST_LOG", "debug");
    let mut server = Running::start(&mut command);
    let mut client = server.serving_client().await;
    let mut request = tonic::Request::new(candela_client::proto::PredictRequest {
        explain: 0,
        segment: "retail".into(),
        version: 0,
        features: vec![0.5; 30],
        text: Vec::new(),
    });
    request.metadata_mut().insert("x-request-id", ID.parse().unwrap());
    let response = client.inference().predict(request).await.unwrap().into_inner();
    assert_eq!(response.request_id, ID, "the caller gets its own id back");
    let line = server.log_containing("predict").await;
    let logged = line["request"].as_str().unwrap().to_string();
    assert!(logged.starts_with("h:") && logged.len() == 14, "{logged}");
    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0);
    let transcript = server.transcript.lock().unwrap().clone();
    assert!(!transcript.contains(ID), "the raw id reached the logs:\n{transcript}");
    // Timestamps hold digits too ("…:30.55…"): look for the value everywhere but there.
    let untimed: String = transcript
        .lines()
        .map(|line| match serde_json::from_str::<serde_json::Value>(line) {
            Ok(mut entry) => {
                entry.as_object_mut().map(|fields| fields.remove("timestamp"));
                entry.to_string()
            }
            Err(_) => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!untimed.contains("0.5"), "a feature value reached the logs:\n{untimed}");
}

/// GETs `path` from a plain HTTP/1.1 server and returns the body.
async fn http_get(address: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

#[tokio::test]
async fn metrics_count_what_was_sent_and_parse_as_prometheus_text() {
    use prometheus_parse::{Scrape, Value as Sample};
    let models = demo_models();
    let mut server = Running::start(&mut command(&["--models", models.to_str().unwrap(), "--drain-seconds", "0"]));
    let metrics_address = server.log_containing("metrics listening").await["address"].as_str().unwrap().to_string();
    let mut client = server.serving_client().await;
    for _ in 0..7 {
        client.predict("retail", vec![0.5; 30]).await.unwrap();
    }
    for _ in 0..3 {
        client.batch_predict("sme", 30, vec![0.25; 30 * 40]).await.unwrap();
    }
    for _ in 0..2 {
        let _ = client.predict("retail", vec![0.5; 29]).await.unwrap_err();
    }
    let _ = client.predict("nowhere", vec![0.5; 30]).await.unwrap_err();

    let body = http_get(&metrics_address, "/metrics").await;
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text parses");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => *v,
                Sample::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
                Sample::Summary(_) => panic!("no summaries here"),
            })
            .sum()
    };
    let calls = |method: &str, segment: &str, code: &str| {
        value("candela_requests_total", &[("method", method), ("segment", segment), ("code", code)])
    };
    assert_eq!(calls("Predict", "retail", "OK"), 7.0, "{body}");
    assert_eq!(calls("BatchPredict", "sme", "OK"), 3.0);
    assert_eq!(calls("Predict", "retail", "INVALID_ARGUMENT"), 2.0);
    assert_eq!(calls("Predict", "", "NOT_FOUND"), 1.0, "unknown segments are not labels");
    assert_eq!(value("candela_request_duration_seconds", &[("method", "Predict")]), 10.0, "a histogram count per call");
    assert_eq!(value("candela_batch_rows", &[("segment", "sme")]), 3.0);
    assert_eq!(value("candela_compute_duration_seconds", &[("segment", "retail")]), 7.0);
    assert_eq!(value("candela_model_info", &[("segment", "corporate"), ("device", "cpu")]), 1.0);
    assert!(value("candela_model_age_seconds", &[("segment", "retail")]) > 0.0);
    assert_eq!(value("candela_build_info", &[]), 1.0);
    assert_eq!(value("candela_in_flight_requests", &[]), 0.0);
    assert_eq!(value("candela_queue_depth", &[]), 0.0);
    // Sub-millisecond buckets exist for sub-millisecond work.
    assert!(body.contains("candela_request_duration_seconds_bucket{le=\"0.0001\""), "{body}");
    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0);
}

/// A minimal OTLP/gRPC trace collector: forwards every exported span's
/// (trace id, name, attributes) to the test.
struct Collector(mpsc::UnboundedSender<(Vec<u8>, String, Vec<String>)>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attributes = span.attributes.iter().map(|a| format!("{}={:?}", a.key, a.value)).collect();
                    let _ = self.0.send((span.trace_id, span.name, attributes));
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tokio::test]
async fn spans_reach_an_otlp_collector_in_the_callers_trace() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let (spans, mut received) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(spans)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let models = demo_models();
    let mut command =
        command(&["--models", models.to_str().unwrap(), "--otlp-endpoint", &collector, "--drain-seconds", "0"]);
    command.env("OTEL_BSP_SCHEDULE_DELAY", "100").env("OTEL_SERVICE_NAME", "candela-test");
    let mut server = Running::start(&mut command);
    let mut client = server.serving_client().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(candela_client::proto::PredictRequest {
        explain: 0,
        segment: "retail".into(),
        version: 0,
        features: vec![0.5; 30],
        text: Vec::new(),
    });
    request.metadata_mut().insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().unwrap());
    client.inference().predict(request).await.unwrap();

    let wanted: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap()).collect();
    let (name, attributes) = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (trace, name, attributes) = received.recv().await.unwrap();
            if trace == wanted {
                return (name, attributes);
            }
        }
    })
    .await
    .expect("a span in the caller's trace reached the collector");
    assert_eq!(name, "candela.v1.Inference/Predict");
    let attributes = attributes.join(" ");
    for part in ["segment", "retail", "rows", "compute_seconds", "rpc.grpc.status_code"] {
        assert!(attributes.contains(part), "`{part}` missing from {attributes}");
    }
    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0);
}

/// Copies `from` (a file or a directory tree) to `to`.
fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

/// Makes every file and directory under `root` read-only (`writable`: false)
/// or gives the owner write access back. A directory is opened up before its
/// contents and closed after them.
fn set_writable(root: &Path, writable: bool) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root).unwrap().permissions().mode();
    let set = |mode| std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode)).unwrap();
    if writable {
        set(mode | 0o200);
    }
    if root.is_dir() {
        for entry in std::fs::read_dir(root).unwrap() {
            set_writable(&entry.unwrap().path(), writable);
        }
    }
    if !writable {
        set(mode & !0o222);
    }
}

/// The container image's filesystem, as deploy/Dockerfile lays it out, made
/// read-only: the binary, the shared libraries it links (what distroless/cc
/// provides), the models, the settings file and a keys file (ConfigMap and
/// Secret mounts in Kubernetes). Run as uid 65532 in a chroot when this test
/// runs as root (CI), otherwise as the current non-root user from the copy.
/// `CANDELA_SERVER_BINARY` picks the binary (CI: the release build).
#[tokio::test]
async fn serves_from_a_read_only_image_layout_as_a_non_root_user() {
    let binary = std::env::var_os("CANDELA_SERVER_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_candela-server")));
    let image = tempfile::tempdir().unwrap();
    let root = image.path();
    copy_tree(&binary, &root.join("usr/local/bin/candela-server"));
    copy_tree(&demo_models(), &root.join("models"));
    let ldd = std::process::Command::new("ldd").arg(&binary).output().expect("ldd lists the shared libraries");
    for library in String::from_utf8_lossy(&ldd.stdout).split_whitespace().filter(|w| w.starts_with('/')) {
        copy_tree(Path::new(library), &root.join(library.trim_start_matches('/')));
    }
    // The temporary directory is ours: its owner is this process's user.
    let as_root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(root).unwrap()) == 0;
    // Inside a chroot the image's own paths; otherwise the same paths under the copy.
    let at = |path: &str| if as_root { PathBuf::from(path) } else { root.join(path.trim_start_matches('/')) };
    std::fs::create_dir_all(root.join("etc/candela/keys")).unwrap();
    std::fs::write(root.join("etc/candela/keys/keys"), "image-test-key\n").unwrap();
    let config = format!(
        "models = {:?}\napi_keys_file = {:?}\nlog_format = \"json\"\ndrain_seconds = 0.0\n",
        at("/models"),
        at("/etc/candela/keys/keys")
    );
    std::fs::write(root.join("etc/candela/config.toml"), config).unwrap();
    set_writable(root, false);

    let server_args = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
    let mut command = if as_root {
        let chroot =
            ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"].into_iter().find(|p| Path::new(p).exists());
        let mut command = Command::new(chroot.expect("chroot (coreutils) is installed"));
        command.arg("--userspec=65532:65532").arg(root).arg("/usr/local/bin/candela-server");
        command
    } else {
        Command::new(root.join("usr/local/bin/candela-server"))
    };
    command
        .arg("--config")
        .arg(at("/etc/candela/config.toml"))
        .args(server_args)
        .current_dir(root)
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut server = Running::start(&mut command);
    let client = server.serving_client().await;
    let mut client = client.with_api_key("image-test-key").unwrap();
    client.predict("retail", vec![0.5; 30]).await.expect("serves with its keys from the read-only layout");
    server.signal("TERM");
    let code = server.exit_code().await;
    set_writable(root, true);
    assert_eq!(code, 0, "a clean exit:\n{}", server.transcript.lock().unwrap());
}

/// A replica reading `s3://models/prod` through `moto`, caching in `cache`.
fn replica(moto: &Moto, cache: &Path) -> Running {
    let args = ["--models", "s3://models/prod", "--model-cache", cache.to_str().unwrap()];
    let mut command = command(&[&args[..], &["--repository-poll-seconds", "0.3", "--drain-seconds", "0"]].concat());
    command
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1");
    Running::start(&mut command)
}

/// Waits (20 s at most) until `client`'s newest retail answer comes from `version`.
async fn until_served(client: &mut Client, version: Option<u64>) {
    let answers =
        async || client.predict("retail", vec![0.5; 30]).await.ok().and_then(|a| a.model).map(|m| m.version) == version;
    eventually(Duration::from_secs(20), &format!("retail answered by version {version:?}"), answers).await;
}

#[tokio::test]
async fn replicas_serve_one_bucket_and_follow_what_is_published_deleted_and_rolled_out() {
    let moto = Moto::start();
    moto.s3(&["create", "models"]);
    let retail = demo_models().join("retail/1");
    moto.s3(&["upload", "models", "prod/retail/1", retail.to_str().unwrap()]);
    let caches = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut replicas = [replica(&moto, caches[0].path()), replica(&moto, caches[1].path())];
    let mut clients = Vec::new();
    for replica in &mut replicas {
        clients.push(replica.serving_client().await);
    }
    for client in &mut clients {
        assert_eq!(client.predict("retail", vec![0.5; 30]).await.unwrap().model.unwrap().version, 1);
    }
    assert!(caches[0].path().join("retail/1/model.safetensors").is_file(), "the replica caches what it serves");

    // Published: every replica serves it within a poll or so.
    let published = Instant::now();
    moto.s3(&["upload", "models", "prod/retail/2", retail.to_str().unwrap()]);
    for client in &mut clients {
        until_served(client, Some(2)).await;
    }
    eprintln!("object storage: version 2 served by both replicas {:?} after its upload", published.elapsed());
    // Unchanged objects are not fetched again: the syncs since start (one, or two when a poll
    // fell between the two uploads) fetched version 2's two files and nothing else.
    for replica in &mut replicas {
        let mut downloaded = 0;
        while downloaded < 2 {
            downloaded += replica.log_containing("model cache synced").await["downloaded"].as_u64().unwrap();
        }
        assert_eq!(downloaded, 2, "only version 2's two files are fetched");
    }

    // A rollout policy in the bucket: every replica follows it (blue/green back to 1, then to 2).
    for stable in [1, 2] {
        let policy = tempfile::tempdir().unwrap();
        std::fs::write(policy.path().join("rollout.json"), format!(r#"{{"stable": {stable}}}"#)).unwrap();
        moto.s3(&["upload", "models", "prod/retail", policy.path().to_str().unwrap()]);
        for client in &mut clients {
            until_served(client, Some(stable)).await;
        }
    }

    // Deleted: drained, and version 1 answers again (the policy naming 2 no longer applies).
    moto.s3(&["delete", "models", "prod/retail/2"]);
    for client in &mut clients {
        until_served(client, Some(1)).await;
    }
    // A sync that ran while the store deleted the version's objects one by one
    // unpublished it (model.json first) and drops the rest at the next poll.
    let dropped = caches[0].path().join("retail/2");
    eventually(Duration::from_secs(10), "the cache to drop what the bucket dropped", async || !dropped.exists()).await;
    for replica in &mut replicas {
        replica.signal("TERM");
        assert_eq!(replica.exit_code().await, 0);
    }
}

#[tokio::test]
async fn keys_that_are_no_safe_path_are_skipped_and_everything_else_is_mirrored() {
    let moto = Moto::start();
    moto.s3(&["create", "models"]);
    let (retail, corporate) = (demo_models().join("retail/1"), demo_models().join("corporate/1"));
    moto.s3(&["upload", "models", "prod/corporate/1", corporate.to_str().unwrap()]);
    moto.s3(&["upload", "models", "prod/retail/1", retail.to_str().unwrap()]);
    let json = retail.join("model.json");
    let json = json.to_str().unwrap();
    let unsafe_keys = ["prod//retail/1/model.json", "prod/retail/1/../escape.json", "prod/./retail/9/model.json"];
    for key in unsafe_keys {
        moto.s3(&["put", "models", key, json]);
    }
    // A fresh replica serves what can be mirrored (the keys beside the bad
    // ones in the same listing page too), and says which keys it skipped.
    let cache = tempfile::tempdir().unwrap();
    let mut replica = replica(&moto, cache.path());
    let mut client = replica.serving_client().await;
    assert_eq!(client.predict("retail", vec![0.5; 30]).await.unwrap().model.unwrap().version, 1);
    assert_eq!(client.predict("corporate", vec![0.5; 30]).await.unwrap().model.unwrap().version, 1);
    let transcript = replica.transcript.lock().unwrap().clone();
    for key in unsafe_keys {
        let reported = transcript.lines().filter(|line| line.contains(&format!("{key}: is not a safe path"))).count();
        assert_eq!(reported, 1, "{key} reported once: {transcript}");
    }
    assert!(!cache.path().join("escape.json").exists() && !cache.path().parent().unwrap().join("escape.json").exists());
    // And it keeps following the bucket.
    moto.s3(&["upload", "models", "prod/retail/2", retail.to_str().unwrap()]);
    until_served(&mut client, Some(2)).await;
    replica.signal("TERM");
    assert_eq!(replica.exit_code().await, 0);
}

/// 80 calls on one connection each send an 8.4 MB message but its last
/// byte: the server (its own allocator, as deployed) grows by at most 1.25 ×
/// what docs/operations.md documents, `--max-pending-request-bytes` plus 1 MiB per
/// connection.
#[tokio::test]
async fn messages_held_one_byte_short_stay_within_the_documented_worst_case() {
    const BUDGET: f64 = 128.0 * 1024.0 * 1024.0;
    let models = demo_models();
    let mut server =
        Running::start(&mut command(&["--models", models.to_str().unwrap(), "--max-message-bytes", "9000000"]));
    let listening = server.log_containing("NOT_SERVING until the models are loaded").await;
    let address = listening["address"].as_str().unwrap().to_string();
    server.log_containing("SERVING").await;
    let pid = server.child.id().unwrap();
    let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (sender, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut sender = sender.ready().await.unwrap();
    // Measure from a settled baseline: the server's memory unchanged between two reads.
    let mut last = memory(pid, "VmRSS");
    let settled = async || {
        let now = memory(pid, "VmRSS");
        std::mem::replace(&mut last, now) == now
    };
    eventually(Duration::from_secs(5), "the server's memory settling", settled).await;
    let before = memory(pid, "VmRSS");
    let length = 8_400_000;
    let mut body = vec![0u8];
    body.extend_from_slice(&(length as u32).to_be_bytes());
    body.resize(length + 5 - 1, 0x0a);
    let body = bytes::Bytes::from(body);
    let mut held = Vec::new();
    for _ in 0..80 {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{address}/candela.v1.Inference/BatchPredict"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        sender = sender.ready().await.unwrap();
        let (response, mut stream) = sender.send_request(request, false).unwrap();
        stream.reserve_capacity(body.len());
        stream.send_data(body.clone(), false).unwrap();
        held.push((response, stream));
    }
    // Every byte that can arrive arrives; the calls over the budget are refused.
    let mut peak: f64 = 0.0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(memory(pid, "VmRSS") - before);
    }
    let worst = BUDGET + 1024.0 * 1024.0;
    println!(
        "80 messages one byte short: the server grew by {:.1} MiB at most (documented worst case {:.1} MiB)",
        peak / 1048576.0,
        worst / 1048576.0
    );
    assert!(peak <= 1.25 * worst, "grew {:.1} MiB, over 1.25 × {:.1} MiB", peak / 1048576.0, worst / 1048576.0);
    drop(held);
    server.signal("TERM");
    assert_eq!(server.exit_code().await, 0);
}
