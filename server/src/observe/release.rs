//! The release-safety metrics: the canary's share and its rollbacks, the
//! guard's breaches, rollout policies refused, the shadow's agreement with
//! the stable version (rows, agreeing rows, |Δp| of the positive class,
//! drops, errors, compute time) and drift (the Population Stability Index
//! per feature and of the score). Part of the server's one metrics registry;
//! labels are segments, versions and feature names from the repository.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SegmentLabels {
    segment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RollbackLabels {
    segment: String,
    by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    segment: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeatureLabels {
    segment: String,
    version: String,
    feature: String,
}

fn delta_histogram() -> Histogram {
    // |Δp| from 0.0001 to about 0.8, by factors of 2.5.
    Histogram::new(exponential_buckets(1e-4, 2.5, 10))
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(25e-6, 2.0, 20))
}

/// The release-safety series.
pub struct ReleaseMetrics {
    canary_percent: Family<SegmentLabels, Gauge<f64, AtomicU64>>,
    rollbacks: Family<RollbackLabels, Counter>,
    breaches: Family<SegmentLabels, Counter>,
    refused: Family<SegmentLabels, Counter>,
    shadow_rows: Family<VersionLabels, Counter>,
    shadow_agreed: Family<VersionLabels, Counter>,
    shadow_dropped: Family<VersionLabels, Counter>,
    shadow_errors: Family<VersionLabels, Counter>,
    shadow_delta: Family<VersionLabels, Histogram, fn() -> Histogram>,
    shadow_seconds: Family<VersionLabels, Histogram, fn() -> Histogram>,
    drift: Family<FeatureLabels, Gauge<f64, AtomicU64>>,
    score_drift: Family<VersionLabels, Gauge<f64, AtomicU64>>,
}

impl ReleaseMetrics {
    /// The series, empty.
    pub fn new() -> ReleaseMetrics {
        ReleaseMetrics {
            canary_percent: Family::default(),
            rollbacks: Family::default(),
            breaches: Family::default(),
            refused: Family::default(),
            shadow_rows: Family::default(),
            shadow_agreed: Family::default(),
            shadow_dropped: Family::default(),
            shadow_errors: Family::default(),
            shadow_delta: Family::new_with_constructor(delta_histogram),
            shadow_seconds: Family::new_with_constructor(seconds_histogram),
            drift: Family::default(),
            score_drift: Family::default(),
        }
    }

    /// Registers the series in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "candela_rollout_canary_percent",
            "The canary's share of requests that pin no version, now (0 after a rollback)",
            m.canary_percent.clone(),
        );
        registry.register(
            "candela_rollout_rollbacks",
            "Canary rollbacks, by who rolled back (guard, operator)",
            m.rollbacks.clone(),
        );
        registry.register(
            "candela_rollout_guard_breaches",
            "Guard windows in which the canary breached a limit",
            m.breaches.clone(),
        );
        registry.register(
            "candela_rollout_policies_refused",
            "rollout.json files refused (unknown versions, bad values); the previous policy stays",
            m.refused.clone(),
        );
        registry.register("candela_shadow_rows", "Rows the shadow version scored", m.shadow_rows.clone());
        registry.register(
            "candela_shadow_agreed_rows",
            "Rows on which the shadow predicted the stable version's class",
            m.shadow_agreed.clone(),
        );
        registry.register(
            "candela_shadow_dropped_rows",
            "Rows not shadowed because the shadow's queue was full",
            m.shadow_dropped.clone(),
        );
        registry.register("candela_shadow_error_rows", "Rows the shadow failed to score", m.shadow_errors.clone());
        registry.register(
            "candela_shadow_abs_delta",
            "|shadow - stable| probability of the positive class, per row",
            m.shadow_delta.clone(),
        );
        registry.register(
            "candela_shadow_duration_seconds",
            "Time the shadow took per batch, queue wait included",
            m.shadow_seconds.clone(),
        );
        registry.register(
            "candela_drift_psi",
            "Population Stability Index of a feature's live values against its training bins, over --drift-window-seconds",
            m.drift.clone(),
        );
        registry.register(
            "candela_drift_score_psi",
            "Population Stability Index of the predicted score against training, over --drift-window-seconds",
            m.score_drift.clone(),
        );
    }

    pub fn set_canary_percent(&self, segment: &str, percent: f64) {
        self.canary_percent.get_or_create(&segment_labels(segment)).set(percent);
    }

    /// Removes a segment's canary share (its policy is gone).
    pub fn policy_removed(&self, segment: &str) {
        self.canary_percent.remove(&segment_labels(segment));
    }

    pub fn rolled_back(&self, segment: &str, by: &'static str) {
        self.rollbacks.get_or_create(&RollbackLabels { segment: segment.to_string(), by }).inc();
    }

    pub fn guard_breached(&self, segment: &str) {
        self.breaches.get_or_create(&segment_labels(segment)).inc();
    }

    pub fn policy_refused(&self, segment: &str) {
        self.refused.get_or_create(&segment_labels(segment)).inc();
    }

    /// The shadow `version` scored `deltas.len()` rows, `agreed` of them agreeing, in `took`.
    pub fn shadow_scored(&self, segment: &str, version: u64, agreed: usize, deltas: &[f64], took: Duration) {
        let labels = version_labels(segment, version);
        self.shadow_rows.get_or_create(&labels).inc_by(deltas.len() as u64);
        self.shadow_agreed.get_or_create(&labels).inc_by(agreed as u64);
        let histogram = self.shadow_delta.get_or_create(&labels);
        for delta in deltas {
            histogram.observe(*delta);
        }
        self.shadow_seconds.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub fn shadow_dropped(&self, segment: &str, version: u64, rows: usize) {
        self.shadow_dropped.get_or_create(&version_labels(segment, version)).inc_by(rows as u64);
    }

    pub fn shadow_failed(&self, segment: &str, version: u64, rows: usize) {
        self.shadow_errors.get_or_create(&version_labels(segment, version)).inc_by(rows as u64);
    }

    /// Sets a version's drift: PSI per feature and of the score.
    pub fn set_drift(&self, segment: &str, version: u64, features: &[(String, f64)], score: Option<f64>) {
        for (feature, psi) in features {
            let labels =
                FeatureLabels { segment: segment.to_string(), version: version.to_string(), feature: feature.clone() };
            self.drift.get_or_create(&labels).set(*psi);
        }
        if let Some(psi) = score {
            self.score_drift.get_or_create(&version_labels(segment, version)).set(psi);
        }
    }

    /// Removes a version's drift series (it is no longer served).
    pub fn drift_removed(&self, segment: &str, version: u64, features: &[String]) {
        for feature in features {
            let labels =
                FeatureLabels { segment: segment.to_string(), version: version.to_string(), feature: feature.clone() };
            self.drift.remove(&labels);
        }
        self.score_drift.remove(&version_labels(segment, version));
    }
}

fn segment_labels(segment: &str) -> SegmentLabels {
    SegmentLabels { segment: segment.to_string() }
}

fn version_labels(segment: &str, version: u64) -> VersionLabels {
    VersionLabels { segment: segment.to_string(), version: version.to_string() }
}

impl Default for ReleaseMetrics {
    fn default() -> ReleaseMetrics {
        ReleaseMetrics::new()
    }
}
