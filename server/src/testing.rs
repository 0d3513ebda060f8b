//! The test harness every suite of the workspace shares (the `test-util`
//! feature): the real server (`crate::run`) on an ephemeral loopback port,
//! settings as the binary parses them, the bundled demo models, fresh demo
//! rows, the peer tools `scripts/install-test-tools` installs, and `eventually`,
//! how a test awaits a condition instead of sleeping a fixed time. Talking to
//! the server is left to each suite's client (the client crate, grpcurl, a
//! raw HTTP/2 peer); readiness is asked through the front's own probe.

use crate::config::Settings;
use crate::train::synthetic::{self, Dataset, Segment};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The features of every demo model.
pub const FEATURES: usize = synthetic::FEATURES.len();

/// The workspace's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the server crate is in the workspace").to_path_buf()
}

/// The bundled demo model repository (`models/`).
pub fn demo_models() -> PathBuf {
    repo_root().join("models")
}

/// Settings as the binary would parse them, over `models`, with no drain
/// delay and no metrics or HTTP port unless `extra` sets them.
pub fn settings(models: &Path, extra: &[&str]) -> Settings {
    let models = models.to_str().expect("a UTF-8 path");
    let mut args = vec![
        "candela-server",
        "--models",
        models,
        "--drain-seconds",
        "0",
        "--metrics-listen",
        "off",
        "--http-listen",
        "off",
    ];
    args.extend_from_slice(extra);
    Settings::from_args(args).expect("test settings parse")
}

/// Fresh synthetic rows of a demo segment (never used in training).
pub fn rows(segment: &str, n: usize) -> Dataset {
    let segment = Segment::from_name(segment).expect("a demo segment");
    crate::train::training::fresh_rows(segment, n)
}

/// A server running in this process until `stop` (or drop).
pub struct TestServer {
    pub addr: SocketAddr,
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts with `settings`, without waiting for SERVING.
    pub async fn start_with(settings: Settings) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::run(listener, settings, async {
            let _ = stopped.await;
        }));
        TestServer { addr, url: format!("http://{addr}"), stop: Some(stop), task: Some(task) }
    }

    /// Starts on the demo models with `extra` flags and waits until it reports SERVING.
    pub async fn start(extra: &[&str]) -> TestServer {
        let server = TestServer::start_with(settings(&demo_models(), extra)).await;
        server.wait_until_serving().await;
        server
    }

    /// Polls the standard health service until the server reports SERVING (30 s at most).
    pub async fn wait_until_serving(&self) {
        let what = format!("the server at {} reporting SERVING", self.url);
        eventually(Duration::from_secs(30), &what, async || crate::api::grpc::router::probe_serving(&self.url).await)
            .await;
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
        self.join().await
    }

    /// Waits for `run` to end (on its own, e.g. after a load failure, or after `begin_shutdown`).
    pub async fn join(mut self) -> anyhow::Result<()> {
        let task = self.task.take().expect("joined once");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the server ends within 30 s")
            .expect("the server task does not panic")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// A peer tool installed by `scripts/install-test-tools`; a missing tool fails
/// the test with the command that installs it, never skips it.
pub fn tool(name: &str) -> PathBuf {
    installed(&Path::new("bin").join(name))
}

/// The Python of the test environment made by `scripts/install-test-tools`
/// (tritonclient, numpy).
pub fn peers_python() -> PathBuf {
    installed(Path::new("venv/bin/python"))
}

/// The Python of the README's export recipes made by `scripts/install-test-tools`
/// (scikit-learn, skl2onnx, onnxmltools, LightGBM, XGBoost, onnxruntime, pandas).
pub fn recipes_python() -> PathBuf {
    installed(Path::new("recipes-venv/bin/python"))
}

fn installed(relative: &Path) -> PathBuf {
    let dir = std::env::var_os("CANDELA_TOOLS").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".tools"));
    let path = dir.join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run `scripts/install-test-tools` (scripts/test does) first",
        path.display()
    );
    path
}

/// Waits until `condition` holds, asking every 20 ms for `within` at most,
/// and fails saying `what` was awaited otherwise: a test awaits the
/// condition it needs, never a fixed time (the machines are shared and
/// their timing noisy; a fixed sleep is either too short or wasted).
pub async fn eventually(within: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "waited {within:?} for {what}, in vain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An S3-compatible server (moto, installed by scripts/install-test-tools) on a loopback port.
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let binary = peers_python().with_file_name("moto_server");
        let child = std::process::Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start ({e}): run scripts/install-test-tools", binary.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto { child, endpoint: format!("http://127.0.0.1:{port}") }
    }

    /// Runs tests/peers/s3.py against this server.
    pub fn s3(&self, args: &[&str]) {
        let script = repo_root().join("tests/peers/s3.py");
        let output =
            std::process::Command::new(peers_python()).arg(script).arg(&self.endpoint).args(args).output().unwrap();
        assert!(output.status.success(), "s3.py {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
