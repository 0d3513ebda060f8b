//! Prometheus metrics, served as text on a side HTTP port (`/metrics`):
//! calls by service, method, segment, version and gRPC code; end-to-end,
//! queue-wait and compute latency histograms with sub-millisecond buckets;
//! rows per forward pass; queue depth; calls in flight; work dropped before compute;
//! the loaded models with their age (the model-freshness SLO); build info.
//! Labels are bounded: segments and versions come from the repository, never
//! from what a caller typed. A leaf: callers pass plain labels.

use super::quality_gauges::QualityMetrics;
use super::release::ReleaseMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: &'static str,
    method: &'static str,
    segment: String,
    version: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ModelLabels {
    segment: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    segment: String,
    version: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExplainLabels {
    segment: String,
    version: String,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelInfoLabels {
    segment: String,
    version: String,
    dtype: String,
    device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

fn latency_histogram() -> Histogram {
    // 25 µs to about 13 s, doubling: fine enough for sub-millisecond calls.
    Histogram::new(exponential_buckets(25e-6, 2.0, 20))
}

fn rows_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

/// The server's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    queue_seconds: Family<ModelLabels, Histogram, fn() -> Histogram>,
    compute_seconds: Family<ModelLabels, Histogram, fn() -> Histogram>,
    batch_rows: Family<ModelLabels, Histogram, fn() -> Histogram>,
    dropped: Family<DropLabels, Counter>,
    explained: Family<ExplainLabels, Counter>,
    queue_depth: Gauge,
    in_flight: Gauge,
    model_info: Family<ModelInfoLabels, Gauge>,
    model_age: Family<ModelLabels, Gauge<f64, AtomicU64>>,
    model_loaded_at: Family<ModelLabels, Gauge<f64, AtomicU64>>,
    model_stale: Family<ModelLabels, Gauge>,
    /// When each served model was created, for the age and staleness gauges
    /// at scrape time, and its info labels (to remove them with it).
    served: Mutex<BTreeMap<ModelLabels, (Option<SystemTime>, ModelInfoLabels)>>,
    /// Served versions older than this are stale (--max-model-age).
    max_model_age: Mutex<Option<Duration>>,
    reloads: Family<ReloadLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    last_reload: Family<ReloadLabels, Gauge<f64, AtomicU64>>,
    /// Canary, shadow, guard and drift series.
    pub release: ReleaseMetrics,
    /// Live quality from outcomes fed back.
    pub quality: QualityMetrics,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let metrics = Metrics {
            calls: Family::default(),
            call_seconds: Family::new_with_constructor(latency_histogram),
            queue_seconds: Family::new_with_constructor(latency_histogram),
            compute_seconds: Family::new_with_constructor(latency_histogram),
            batch_rows: Family::new_with_constructor(rows_histogram),
            dropped: Family::default(),
            explained: Family::default(),
            queue_depth: Gauge::default(),
            in_flight: Gauge::default(),
            model_info: Family::default(),
            model_age: Family::default(),
            model_loaded_at: Family::default(),
            model_stale: Family::default(),
            served: Mutex::new(BTreeMap::new()),
            max_model_age: Mutex::new(None),
            reloads: Family::default(),
            refusals: Family::default(),
            last_reload: Family::default(),
            release: ReleaseMetrics::new(),
            quality: QualityMetrics::default(),
            registry: Registry::default(),
        };
        registry.register(
            "candela_requests",
            "Inference calls (stream messages count one each), by outcome",
            metrics.calls.clone(),
        );
        registry.register(
            "candela_request_duration_seconds",
            "Time from receipt to answer",
            metrics.call_seconds.clone(),
        );
        registry.register(
            "candela_queue_wait_seconds",
            "Time waiting for a compute worker",
            metrics.queue_seconds.clone(),
        );
        registry.register("candela_compute_duration_seconds", "Forward pass time", metrics.compute_seconds.clone());
        registry.register("candela_batch_rows", "Rows per forward pass", metrics.batch_rows.clone());
        registry.register(
            "candela_dropped",
            "Requests dropped before compute: their deadline had passed (reason=deadline) or their caller had gone (reason=cancelled)",
            metrics.dropped.clone(),
        );
        registry.register(
            "candela_explained_rows",
            "Rows explained (contributions and reasons), by method: tree, exact or sampled",
            metrics.explained.clone(),
        );
        registry.register("candela_queue_depth", "Requests waiting for a compute worker", metrics.queue_depth.clone());
        registry.register("candela_in_flight_requests", "Inference calls being served", metrics.in_flight.clone());
        registry.register("candela_model_info", "Loaded models (value 1)", metrics.model_info.clone());
        registry.register(
            "candela_model_age_seconds",
            "Seconds since each served model version was created (provenance.created)",
            metrics.model_age.clone(),
        );
        registry.register(
            "candela_model_loaded_timestamp_seconds",
            "When each served model version was loaded (Unix time)",
            metrics.model_loaded_at.clone(),
        );
        registry.register(
            "candela_model_stale",
            "1 for a served model version older than --max-model-age (0 otherwise; absent without the setting)",
            metrics.model_stale.clone(),
        );
        registry.register(
            "candela_repository_reloads",
            "Repository scans, by result: changed (versions loaded or removed), unchanged, failed (a new problem)",
            metrics.reloads.clone(),
        );
        registry.register(
            "candela_repository_refusals",
            "Repository problems (a version, file or policy that cannot be served), each counted once when first met, by reason",
            metrics.refusals.clone(),
        );
        registry.register(
            "candela_repository_last_reload_timestamp_seconds",
            "When a scan last succeeded (result=success) and last met a new problem (result=failure), Unix time",
            metrics.last_reload.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("candela_build_info", "The running build (value 1)", build);
        metrics.release.register(&mut registry);
        metrics.quality.register(&mut registry);
        Metrics { registry, ..metrics }
    }

    /// Publishes one loaded model: its info, its load time, and its age
    /// from `created` (RFC 3339, its manifest's provenance).
    pub fn model_loaded(&self, segment: &str, version: u64, dtype: &str, device: &str, created: &str) {
        let labels = model_labels(segment, version);
        let info = ModelInfoLabels {
            segment: segment.to_string(),
            version: version.to_string(),
            dtype: dtype.to_string(),
            device: device.to_string(),
        };
        self.model_info.get_or_create(&info).set(1);
        self.model_loaded_at.get_or_create(&labels).set(unix_seconds(SystemTime::now()));
        let created = humantime::parse_rfc3339_weak(created).ok();
        if created.is_none() {
            tracing::warn!(
                segment,
                version,
                "provenance.created is not an RFC 3339 time: no candela_model_age_seconds for this model"
            );
        }
        self.served.lock().expect("metrics lock poisoned; this is a bug").insert(labels, (created, info));
    }

    /// Removes a model version that is no longer served from every model series.
    pub fn model_unloaded(&self, segment: &str, version: u64) {
        let labels = model_labels(segment, version);
        if let Some((_, info)) = self.served.lock().expect("metrics lock poisoned; this is a bug").remove(&labels) {
            self.model_info.remove(&info);
        }
        self.model_age.remove(&labels);
        self.model_loaded_at.remove(&labels);
        self.model_stale.remove(&labels);
    }

    /// Sets the age past which served versions are stale.
    pub fn set_max_model_age(&self, max_age: Option<Duration>) {
        *self.max_model_age.lock().expect("metrics lock poisoned; this is a bug") = max_age;
    }

    /// Counts one repository scan with its `result` (`changed`, `unchanged`, `failed`).
    pub fn reloaded(&self, result: &'static str) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
        let outcome = if result == "failed" { "failure" } else { "success" };
        self.last_reload.get_or_create(&ReloadLabels { result: outcome }).set(unix_seconds(SystemTime::now()));
    }

    /// Counts one repository problem met for the first time, under its one-word `reason`.
    pub fn repository_refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Counts one finished call (or stream message) of `service`/`method`,
    /// routed to `segment` version `version` (empty and 0 when it was not
    /// routed), answered with `code` after `elapsed`.
    pub fn record_call(
        &self,
        service: &'static str,
        method: &'static str,
        segment: &str,
        version: u64,
        code: &'static str,
        elapsed: Duration,
    ) {
        let labels = CallLabels {
            service,
            method,
            segment: segment.to_string(),
            version: if version == 0 { String::new() } else { version.to_string() },
            code,
        };
        self.calls.get_or_create(&labels).inc();
        self.call_seconds.get_or_create(&MethodLabels { service, method }).observe(elapsed.as_secs_f64());
    }

    /// One model version's queue and pass series, resolved once: its
    /// compute path records into them without building labels or looking
    /// series up per request.
    pub fn queue_series(&self, segment: &str, version: u64) -> QueueMetrics {
        let labels = model_labels(segment, version);
        QueueMetrics {
            depth: self.queue_depth.clone(),
            waited: self.queue_seconds.get_or_create(&labels).clone(),
            pass_rows: self.batch_rows.get_or_create(&labels).clone(),
            pass_seconds: self.compute_seconds.get_or_create(&labels).clone(),
            dropped: self.dropped.clone(),
            explained: self.explained.clone(),
            labels,
        }
    }

    /// The exposition text, with the gauges that are read at scrape time.
    pub fn render(&self, in_flight: usize) -> String {
        self.in_flight.set(in_flight as i64);
        let now = SystemTime::now();
        let max_age = *self.max_model_age.lock().expect("metrics lock poisoned; this is a bug");
        for (labels, (created, _)) in self.served.lock().expect("metrics lock poisoned; this is a bug").iter() {
            let Some(created) = created else { continue };
            let age = now.duration_since(*created).unwrap_or_default();
            self.model_age.get_or_create(labels).set(age.as_secs_f64());
            if let Some(max_age) = max_age {
                self.model_stale.get_or_create(labels).set(i64::from(age > max_age));
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// One model version's compute queue as the metrics see it (see
/// `Metrics::queue_series`): the server-wide queue depth, its waits, its
/// passes' rows and time, and the work it dropped before compute.
#[derive(Clone)]
pub struct QueueMetrics {
    depth: Gauge,
    waited: Histogram,
    pass_rows: Histogram,
    pass_seconds: Histogram,
    dropped: Family<DropLabels, Counter>,
    explained: Family<ExplainLabels, Counter>,
    labels: ModelLabels,
}

impl QueueMetrics {
    /// A request joined the queue for a compute worker.
    pub fn queued(&self) {
        self.depth.inc();
    }

    /// A request left the queue after `waited`, to be computed or dropped.
    pub fn dequeued(&self, waited: Duration) {
        self.depth.dec();
        self.waited.observe(waited.as_secs_f64());
    }

    /// A request was dropped before compute, for `reason` (`deadline`, `cancelled`).
    pub fn dropped(&self, reason: &'static str) {
        let ModelLabels { segment, version } = self.labels.clone();
        self.dropped.get_or_create(&DropLabels { segment, version, reason }).inc();
    }

    /// `rows` rows were explained by `method` (`tree`, `exact`, `sampled`).
    pub fn explained(&self, method: &'static str, rows: usize) {
        let ModelLabels { segment, version } = self.labels.clone();
        self.explained.get_or_create(&ExplainLabels { segment, version, method }).inc_by(rows as u64);
    }

    /// One forward pass ran over `rows` rows (from one or more requests) in `compute`.
    pub fn pass(&self, rows: usize, compute: Duration) {
        self.pass_rows.observe(rows as f64);
        self.pass_seconds.observe(compute.as_secs_f64());
    }
}

fn model_labels(segment: &str, version: u64) -> ModelLabels {
    ModelLabels { segment: segment.to_string(), version: version.to_string() }
}
