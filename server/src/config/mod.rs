//! Every server setting, in one place. Each setting is a flag, an environment
//! variable (`CANDELA_…`) and a key of the optional TOML file (`--config`),
//! in that order of precedence over the built-in default. The doc comment on
//! each field is its `--help` text.

mod values;

pub use values::seconds;

use crate::core::live::VersionPolicy;
use crate::model::device::DeviceSpec;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use values::{count, optional_address, seconds_within};

/// The header block HTTP/2 decodes for one call (and so the most a
/// connection buffers for headers): a call with more headers than
/// --max-header-bytes but at most this is refused on its own by the gate;
/// beyond it HTTP/2 closes the connection (hyper's default of 16 KiB would
/// turn a 65 KB header into a GOAWAY failing every call on the connection).
pub const MAX_HEADER_LIST_BYTES: u32 = 256 * 1024;

/// Candela: a gRPC inference server for per-segment models.
#[derive(Debug, Clone, Parser)]
#[command(name = "candela-server", version, about, long_about = None, args_override_self = true)]
pub struct Settings {
    /// A TOML file of settings; its keys are the long flag names with `_` for `-`
    /// (e.g. `default_segment = "retail"`). Flags and environment variables
    /// override it.
    #[arg(long, env = "CANDELA_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to serve gRPC on. Use 127.0.0.1:0 for an ephemeral port.
    #[arg(long, env = "CANDELA_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// The model repository: <segment>/<version>/model.json + model.safetensors,
    /// in a directory or in object storage (`s3://bucket/prefix`, `gs://…`,
    /// `az://…`, credentials from the cloud's standard environment variables).
    #[arg(long, env = "CANDELA_MODELS", default_value = "models")]
    pub models: String,

    /// Where a repository in object storage is mirrored (downloaded files are
    /// kept here and fetched again only when they change).
    #[arg(long, env = "CANDELA_MODEL_CACHE", default_value_os_t = std::env::temp_dir().join("candela-model-cache"))]
    pub model_cache: PathBuf,

    /// Seconds between scans of the model repository for new, changed and
    /// removed versions (a scan reads only file metadata when nothing
    /// changed). SIGHUP and the Open Inference Protocol's RepositoryModelLoad
    /// also rescan. 0: no polling.
    #[arg(long, env = "CANDELA_REPOSITORY_POLL_SECONDS", value_parser = seconds_within(0.0, 86_400.0), default_value_t = 10.0)]
    pub repository_poll_seconds: f64,

    /// At start, a model version that cannot be loaded: `refuse` lists every
    /// problem and exits; `skip` serves the loadable ones and reports the rest.
    #[arg(long, env = "CANDELA_ON_BROKEN_MODEL", value_enum, default_value_t = OnBrokenModel::Refuse)]
    pub on_broken_model: OnBrokenModel,

    /// Which versions of each segment are served: `all`, or `latest:N` (the N
    /// highest-numbered).
    #[arg(long, env = "CANDELA_VERSION_POLICY", default_value = "all")]
    pub version_policy: VersionPolicy,

    /// Versions of one segment held loaded at once, whatever
    /// --version-policy says: each holds its model and its compute threads.
    /// The newest are loaded; older ones are listed UNAVAILABLE with the reason.
    #[arg(long, env = "CANDELA_MAX_VERSIONS_PER_SEGMENT", value_parser = count::<usize>(1, 1000), default_value_t = 16)]
    pub max_versions_per_segment: usize,

    /// Versions held loaded across the whole repository (the bound on the
    /// server's models and compute threads: this times --compute-workers
    /// times --compute-threads). Each segment's newest version comes first,
    /// then each one's second newest, and so on; the rest are listed
    /// UNAVAILABLE with the reason.
    #[arg(long, env = "CANDELA_MAX_LOADED_VERSIONS", value_parser = count::<usize>(1, 10_000), default_value_t = 256)]
    pub max_loaded_versions: usize,

    /// Served versions older than this (from model.json's `provenance.created`,
    /// e.g. `30d`) are reported stale: a warning and `candela_model_stale`.
    #[arg(long, env = "CANDELA_MAX_MODEL_AGE", value_parser = humantime::parse_duration)]
    pub max_model_age: Option<Duration>,

    /// Drift is measured over this sliding window: live rows counted into the
    /// training statistics' bins of each model whose model.json carries them.
    #[arg(long, env = "CANDELA_DRIFT_WINDOW_SECONDS", value_parser = seconds_within(0.1, 604_800.0), default_value_t = 300.0)]
    pub drift_window_seconds: f64,

    /// No drift (PSI) is reported until the window holds this many rows: PSI
    /// on small windows false-alarms.
    #[arg(long, env = "CANDELA_DRIFT_MIN_ROWS", value_parser = count::<u64>(1, 10_000_000), default_value_t = 1000)]
    pub drift_min_rows: u64,

    /// About how many rows a drift window counts at most (at least twice
    /// --drift-min-rows); above it, a random sample, so drift costs the same
    /// at any rate. 20,000 rows keep the PSI's sampling noise near 0.0005.
    #[arg(long, env = "CANDELA_DRIFT_MAX_ROWS", value_parser = count::<u64>(2, 100_000_000), default_value_t = 20_000)]
    pub drift_max_rows: u64,

    /// Keys (same format and reload rules as --api-keys-file) that may change
    /// what the server serves: RepositoryModelLoad and RepositoryModelUnload.
    /// Without it those calls are refused.
    #[arg(long, env = "CANDELA_ADMIN_KEYS_FILE")]
    pub admin_keys_file: Option<PathBuf>,

    /// The segment used when a request names none. Without it, a repository of
    /// one segment defaults to that segment, and a larger one requires callers to name one.
    #[arg(long, env = "CANDELA_DEFAULT_SEGMENT")]
    pub default_segment: Option<String>,

    /// Where models run: `cpu`, `cuda:N` (needs a build with `--features cuda`),
    /// or `auto` (the first GPU when one answers, else the CPU).
    #[arg(long, env = "CANDELA_DEVICE", default_value = "cpu")]
    pub device: DeviceSpec,

    /// On SIGTERM/SIGINT: seconds to keep serving while health reports
    /// NOT_SERVING, so load balancers and Kubernetes stop routing here before
    /// the listener closes. In-flight requests then finish before exit.
    #[arg(long, env = "CANDELA_DRAIN_SECONDS", value_parser = seconds_within(0.0, 3_600.0), default_value_t = 5.0)]
    pub drain_seconds: f64,

    /// Log format: `pretty` for people, `json` for log pipelines.
    #[arg(long, env = "CANDELA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Most rows one request (or one StreamPredict message) may carry; more is
    /// refused with INVALID_ARGUMENT telling the caller to split the batch.
    #[arg(long, env = "CANDELA_MAX_ROWS", value_parser = count::<usize>(1, 1_000_000), default_value_t = 1000)]
    pub max_rows: usize,

    /// Most reasons a request may ask for per row (`explain`); 0 turns explanations off.
    #[arg(long, env = "CANDELA_MAX_EXPLAIN", value_parser = count::<usize>(0, 1_000), default_value_t = 10)]
    pub max_explain: usize,

    /// Most rows one explained request may carry (each costs up to thousands of pass rows).
    #[arg(long, env = "CANDELA_MAX_EXPLAIN_ROWS", value_parser = count::<usize>(1, 1_000_000), default_value_t = 100)]
    pub max_explain_rows: usize,

    /// Largest request message, in bytes, the server decodes; larger ones are
    /// refused before decoding.
    #[arg(long, env = "CANDELA_MAX_MESSAGE_BYTES", value_parser = count::<usize>(1024, 1 << 30), default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Rows per chunk of a BatchPredictStream response.
    #[arg(long, env = "CANDELA_STREAM_CHUNK_ROWS", value_parser = count::<usize>(1, 1_000_000), default_value_t = 256)]
    pub stream_chunk_rows: usize,

    /// Batches of one StreamPredict (or ModelStreamInfer) stream being scored
    /// at once. The stream reads no further ahead, so a fast producer is slowed
    /// by HTTP/2 flow control.
    #[arg(long, env = "CANDELA_STREAM_IN_FLIGHT", value_parser = count::<usize>(1, 1024), default_value_t = 4)]
    pub stream_in_flight: usize,

    /// Merge concurrent requests for the same model version into one forward
    /// pass (`on`), or run each request on its own (`off`).
    #[arg(long, env = "CANDELA_BATCHING", value_enum, default_value_t = Switch::On)]
    pub batching: Switch,

    /// Most rows merged into one forward pass, for every model (overrides
    /// model.json's `batching.max_batch_rows`; default 1024). A single larger
    /// request still runs, alone.
    #[arg(long, env = "CANDELA_MAX_BATCH_ROWS", value_parser = count::<usize>(1, 1_000_000))]
    pub max_batch_rows: Option<usize>,

    /// Microseconds a forward pass may wait after its first request for more
    /// to merge, for every model (overrides model.json's
    /// `batching.max_queue_delay_us`; default 0: merge what is already queued).
    #[arg(long, env = "CANDELA_MAX_QUEUE_DELAY_US", value_parser = count::<u64>(0, 10_000_000))]
    pub max_queue_delay_us: Option<u64>,

    /// Compute a lone request (the only one being scored, nothing queued for
    /// its CPU model, at most 8 rows, a pass under 200 µs, no batching window)
    /// on the thread that received it, saving the two cross-thread wake-ups
    /// of the hand-off to the compute thread (~46 µs on our VMs, against a
    /// 2.4 µs pass). With the callers on other cores, as in production:
    /// 1.07× the calls per second of `off` for one caller, 1.48× at 8 and
    /// 1.49× at 32 callers. `off` sends every request through the compute threads; it
    /// measured 5–20 % more calls per second at 32 callers only where the
    /// load generator shared the server's two cores (bench/RESULTS.md).
    #[arg(long, value_enum, env = "CANDELA_INLINE_LONE_REQUESTS", default_value_t = Switch::On)]
    pub inline_lone_requests: Switch,

    /// Compute threads per model version. Each runs one forward pass at a
    /// time; with batching, one per model keeps a small container's cores for
    /// merged passes and the network.
    #[arg(long, env = "CANDELA_COMPUTE_WORKERS", value_parser = count::<usize>(1, 64), default_value_t = 1)]
    pub compute_workers: usize,

    /// Threads each compute worker's forward pass may use (candle's parallel
    /// CPU kernels). Default 1: measured on 2 cores, the demo models' passes
    /// are faster on one thread (batch 1 and 64) or no slower (batch 1000),
    /// and the other core serves the network.
    #[arg(long, env = "CANDELA_COMPUTE_THREADS", value_parser = count::<usize>(1, 256), default_value_t = 1)]
    pub compute_threads: usize,

    /// A file of API keys, one per line (blank lines and `#` comments are
    /// ignored). When set, inference calls must send `authorization: Bearer
    /// <key>`; any key in the file is accepted, so keys rotate by adding the new
    /// one, moving callers, then removing the old. The file is re-read on
    /// SIGHUP and whenever it changes. Without it the server runs open.
    #[arg(long, env = "CANDELA_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Put server reflection behind the API keys too (health always stays open
    /// for Kubernetes probes).
    #[arg(long, env = "CANDELA_AUTH_REFLECTION")]
    pub auth_reflection: bool,

    /// PEM certificate chain for TLS on the gRPC port (with --tls-key). Reloaded
    /// on SIGHUP and when the file changes.
    #[arg(long, env = "CANDELA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "CANDELA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): when set, callers must present a client
    /// certificate signed by one of them (mTLS). Needs --tls-cert.
    #[arg(long, env = "CANDELA_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// A second, plaintext port serving only grpc.health.v1, for Kubernetes
    /// gRPC probes (which cannot speak TLS) when the main port uses TLS. Off
    /// unless set.
    #[arg(long, env = "CANDELA_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Export traces over OTLP/gRPC to this collector (e.g.
    /// http://otel-collector:4317). Defaults to the standard
    /// OTEL_EXPORTER_OTLP_ENDPOINT when that is set; the service name is
    /// OTEL_SERVICE_NAME (default `candela`).
    #[arg(long, env = "CANDELA_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Where to serve Prometheus metrics over HTTP (`/metrics`); `off` disables.
    #[arg(long, env = "CANDELA_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: String,

    /// Where to serve the HTTP/JSON API (HTTP/1.1: the Open Inference
    /// Protocol's REST routes under /v2 and the `/score` contract), with the
    /// gRPC port's keys, limits and TLS; `off` disables.
    #[arg(long, env = "CANDELA_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: String,

    /// Seconds an HTTP connection may wait between requests, and a request
    /// may take to send its headers and its body, before it is closed.
    #[arg(long, env = "CANDELA_HTTP_IDLE_SECONDS", value_parser = seconds_within(0.001, 86_400.0), default_value_t = 30.0)]
    pub http_idle_seconds: f64,

    /// Inference calls (unary calls and open streams) served at once, across
    /// all connections. One more is refused at once with RESOURCE_EXHAUSTED and
    /// a RetryInfo, never queued.
    #[arg(long, env = "CANDELA_MAX_CONCURRENT_REQUESTS", value_parser = count::<usize>(1, 1_000_000), default_value_t = 256)]
    pub max_concurrent_requests: usize,

    /// Bytes of headers (metadata) one gRPC call may carry, counted as HTTP/2
    /// does (name + value + 32 per header); a call over it is refused with
    /// INVALID_ARGUMENT, its connection and the other calls on it unharmed.
    /// Header blocks over 256 KiB are refused by HTTP/2 itself, which closes
    /// the connection (its protection against header floods).
    #[arg(long, env = "CANDELA_MAX_HEADER_BYTES", value_parser = count::<usize>(1024, MAX_HEADER_LIST_BYTES as u64), default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// HTTP/2 streams (calls) one connection may have open at once: one
    /// connection's share of the server.
    #[arg(long, env = "CANDELA_MAX_CONCURRENT_STREAMS", value_parser = count::<u32>(1, 100_000), default_value_t = 128)]
    pub max_concurrent_streams: u32,

    /// Seconds a streaming call (StreamPredict, ModelStreamInfer,
    /// BatchPredictStream) may go without progress (no message received while
    /// nothing is being scored, or a response the caller does not read) before
    /// the server ends it with UNAVAILABLE. Streams hold a
    /// --max-concurrent-requests slot only while a message is being scored.
    #[arg(long, env = "CANDELA_STREAM_IDLE_SECONDS", value_parser = seconds_within(0.001, 86_400.0), default_value_t = 60.0)]
    pub stream_idle_seconds: f64,

    /// How long the server keeps an answered row waiting for its outcome
    /// (`Feedback`): what joining a true label needs (a digest of the request
    /// id, the row, the version, the probabilities; never the features).
    #[arg(long, env = "CANDELA_FEEDBACK_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub feedback_retention: Duration,

    /// The most answered rows kept for `Feedback` (its memory bound; the
    /// oldest are dropped first, and counted). 0 keeps none.
    #[arg(long, env = "CANDELA_FEEDBACK_MAX_RECORDS", value_parser = count::<usize>(0, 100_000_000), default_value_t = 250_000)]
    pub feedback_max_records: usize,

    /// Each version's live quality (AUC, log loss, precision/recall) is
    /// measured over the outcomes joined in this sliding window.
    #[arg(long, env = "CANDELA_QUALITY_WINDOW", default_value = "1h", value_parser = humantime::parse_duration)]
    pub quality_window: Duration,

    /// Joined outcomes a version needs in its window before its quality is reported.
    #[arg(long, env = "CANDELA_QUALITY_MIN_OUTCOMES", value_parser = count::<u64>(1, 100_000_000), default_value_t = 100)]
    pub quality_min_outcomes: u64,

    /// Bytes held by request messages that have begun to arrive but are not
    /// complete (so not yet admitted), across all calls and connections: from
    /// its 5-byte prefix on, a message holds the length it declares. A message
    /// that would take more is refused with RESOURCE_EXHAUSTED before its
    /// bytes are buffered, so slow, stalled or flooding uploads cannot exhaust
    /// the server's memory.
    #[arg(long, env = "CANDELA_MAX_PENDING_REQUEST_BYTES", value_parser = count::<usize>(1024, 1 << 40), default_value_t = 128 * 1024 * 1024)]
    pub max_pending_request_bytes: usize,

    /// Client connections open at once on the gRPC port; more wait in the
    /// kernel's accept queue until one closes.
    #[arg(long, env = "CANDELA_MAX_CONNECTIONS", value_parser = count::<usize>(1, 1_000_000), default_value_t = 1024)]
    pub max_connections: usize,

    /// Seconds a new connection has to send its first bytes (the HTTP/2
    /// preface, or the TLS handshake) before it is closed.
    #[arg(long, env = "CANDELA_HANDSHAKE_TIMEOUT_SECONDS", value_parser = seconds_within(0.001, 3_600.0), default_value_t = 10.0)]
    pub handshake_timeout_seconds: f64,

    /// The largest model weights file loaded, in bytes; a larger one is
    /// refused at load, naming the file, before it is read.
    #[arg(long, env = "CANDELA_MAX_MODEL_BYTES", value_parser = count::<u64>(1, 1 << 40), default_value_t = crate::model::repository::DEFAULT_MAX_MODEL_BYTES)]
    pub max_model_bytes: u64,

    /// Seconds between HTTP/2 keepalive pings to each client; a peer that does
    /// not answer within --keepalive-timeout-seconds is disconnected. 0: off.
    #[arg(long, env = "CANDELA_KEEPALIVE_SECONDS", value_parser = seconds_within(0.0, 86_400.0), default_value_t = 30.0)]
    pub keepalive_seconds: f64,

    /// Seconds to wait for a keepalive ping's answer.
    #[arg(long, env = "CANDELA_KEEPALIVE_TIMEOUT_SECONDS", value_parser = seconds_within(0.001, 3_600.0), default_value_t = 10.0)]
    pub keepalive_timeout_seconds: f64,

    /// Seconds after which a connection is asked to go away (GOAWAY), so
    /// long-lived clients reconnect and spread over new replicas behind a
    /// Kubernetes Service. 0: never.
    #[arg(long, env = "CANDELA_MAX_CONNECTION_AGE_SECONDS", value_parser = seconds_within(0.0, 2_592_000.0), default_value_t = 600.0)]
    pub max_connection_age_seconds: f64,

    /// Seconds an aged-out connection gets to finish its calls before it is closed.
    #[arg(long, env = "CANDELA_MAX_CONNECTION_AGE_GRACE_SECONDS", value_parser = seconds_within(0.0, 86_400.0), default_value_t = 30.0)]
    pub max_connection_age_grace_seconds: f64,

    /// After the drain period: seconds in-flight calls and open streams get to
    /// finish before their connections are closed (they see UNAVAILABLE), so
    /// shutdown completes within --drain-seconds plus this.
    #[arg(long, env = "CANDELA_DRAIN_GRACE_SECONDS", value_parser = seconds_within(0.0, 3_600.0), default_value_t = 10.0)]
    pub drain_grace_seconds: f64,
}

impl Settings {
    /// What the batching settings override in every model's model.json.
    pub fn batching_overrides(&self) -> crate::core::batching::Overrides {
        crate::core::batching::Overrides {
            disabled: self.batching == Switch::Off,
            max_batch_rows: self.max_batch_rows,
            max_queue_delay: self.max_queue_delay_us.map(Duration::from_micros),
            inline_lone: self.inline_lone_requests == Switch::On,
        }
    }

    /// The TLS files, when TLS is configured; an incomplete set is an error.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, String> {
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), client_ca) => {
                Ok(Some(TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: client_ca.clone() }))
            }
            (None, None, Some(_)) => Err("--tls-client-ca needs --tls-cert and --tls-key".into()),
            _ => Err("TLS needs both --tls-cert and --tls-key".into()),
        }
    }

    /// The OTLP collector to export traces to, if any.
    pub fn otlp_endpoint(&self) -> Option<String> {
        self.otlp_endpoint.clone().or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
    }

    /// The metrics address, or `None` when metrics are off.
    pub fn metrics_address(&self) -> Result<Option<SocketAddr>, String> {
        optional_address("--metrics-listen", &self.metrics_listen, "0.0.0.0:9090")
    }

    /// The HTTP API's address, or `None` when it is off.
    pub fn http_address(&self) -> Result<Option<SocketAddr>, String> {
        optional_address("--http-listen", &self.http_listen, "0.0.0.0:8080")
    }
}

/// A feature turned on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// What a model version that cannot be loaded does to the server's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnBrokenModel {
    Refuse,
    Skip,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Settings {
    /// Parses flags and environment, layered over the `--config` file when one
    /// is named. Errors (bad values, unknown file keys) are clap errors, which
    /// print usage and exit with status 2 through `Error::exit`.
    pub fn from_args<I, T>(args: I) -> Result<Settings, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let first = Settings::try_parse_from(&args)?;
        let Some(path) = &first.config else { return Ok(first) };
        let mut command = Settings::command();
        for (key, value) in read_file(path)? {
            let known = command.get_arguments().any(|a| a.get_id() == key.as_str() && key != "config");
            if !known {
                let keys: Vec<String> = command
                    .get_arguments()
                    .map(|a| a.get_id().to_string())
                    .filter(|k| k != "config" && k != "help" && k != "version")
                    .collect();
                return Err(file_error(path, format!("unknown setting `{key}`; known settings: {}", keys.join(", "))));
            }
            command = command.mut_arg(key, |arg| arg.default_value(value));
        }
        let matches = command.try_get_matches_from(&args)?;
        Settings::from_arg_matches(&matches)
    }
}

/// Reads a settings file into (key, value-as-a-flag-would-spell-it) pairs.
fn read_file(path: &PathBuf) -> Result<Vec<(String, String)>, clap::Error> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    let table: toml::Table = text.parse().map_err(|e| file_error(path, format!("invalid TOML: {e}")))?;
    table
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(file_error(path, format!("`{key}` = {other}: expected a string, number or boolean")));
                }
            };
            Ok((key, text))
        })
        .collect()
}

fn file_error(path: &std::path::Path, message: String) -> clap::Error {
    clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("config file {}: {message}\n", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_bad_ones_say_what_is_allowed() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("auto".parse(), Ok(DeviceSpec::Auto));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        let error = "gpu".parse::<DeviceSpec>().unwrap_err();
        assert_eq!(error, "`gpu` is not a device: use cpu, cuda:N (e.g. cuda:0) or auto");
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn zero_config_serves_models_on_port_50051() {
        let settings = Settings::from_args(["candela-server"]).unwrap();
        assert_eq!(settings.listen, "0.0.0.0:50051".parse().unwrap());
        assert_eq!(settings.models, "models");
        assert_eq!(settings.device, DeviceSpec::Cpu);
        assert_eq!(settings.max_rows, 1000);
        assert_eq!(settings.default_segment, None);
    }
}

/// The PEM files TLS is built from (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}
