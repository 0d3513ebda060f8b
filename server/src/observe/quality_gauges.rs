//! The live-quality series: per segment and version, the AUC, log loss,
//! precision and recall over the quality window and the joined outcomes it
//! holds (set only once a version has the minimum of outcomes), and the
//! outcomes fed back, by how they were taken; and the prediction records
//! the store holds and has let go. Part of the server's one metrics registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    segment: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

type Value = Family<VersionLabels, Gauge<f64, AtomicU64>>;

/// The live-quality series.
#[derive(Default)]
pub struct QualityMetrics {
    auc: Value,
    log_loss: Value,
    precision: Value,
    recall: Value,
    mean_absolute_error: Value,
    rmse: Value,
    outcomes: Value,
    fed_back: Family<ResultLabels, Counter>,
    records: Gauge<i64>,
    let_go: Family<ReasonLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// One version's measures as the series take them.
pub struct Measured {
    pub outcomes: u64,
    pub auc: Option<f64>,
    pub log_loss: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub mean_absolute_error: Option<f64>,
    pub rmse: Option<f64>,
}

impl QualityMetrics {
    /// Registers the series in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "candela_model_auc",
            "Live AUC over the quality window (binary; mean one-vs-rest for more classes)",
            m.auc.clone(),
        );
        registry.register(
            "candela_model_log_loss",
            "Live mean log loss of the true class over the quality window",
            m.log_loss.clone(),
        );
        registry.register(
            "candela_model_precision",
            "Live precision of the predicted (positive) class over the quality window",
            m.precision.clone(),
        );
        registry.register(
            "candela_model_recall",
            "Live recall of the (positive) class over the quality window",
            m.recall.clone(),
        );
        registry.register(
            "candela_model_mean_absolute_error",
            "Live mean absolute error of a regressor's values over the quality window",
            m.mean_absolute_error.clone(),
        );
        registry.register(
            "candela_model_rmse",
            "Live root mean squared error of a regressor's values over the quality window",
            m.rmse.clone(),
        );
        registry.register("candela_model_outcomes", "Joined outcomes in the quality window", m.outcomes.clone());
        registry.register(
            "candela_feedback_records",
            "Answered rows kept for Feedback (bounded by --feedback-max-records)",
            m.records.clone(),
        );
        registry.register(
            "candela_feedback_records_released",
            "Answered rows not kept, by reason (room: dropped for newer ones; expired: older than --feedback-retention; reused_id: their request id already had 64 answers)",
            m.let_go.clone(),
        );
        registry.register(
            "candela_feedback_outcomes",
            "Outcomes fed back, by result (matched, unknown_request, row_out_of_range, unknown_label, duplicate)",
            m.fed_back.clone(),
        );
    }

    /// Sets a version's measures: the count always, the rest once `enough` outcomes are joined.
    pub fn measured(&self, segment: &str, version: u64, enough: bool, measured: &Measured) {
        let labels = VersionLabels { segment: segment.to_string(), version: version.to_string() };
        self.outcomes.get_or_create(&labels).set(measured.outcomes as f64);
        if !enough {
            return;
        }
        let set = |family: &Value, value: Option<f64>| {
            if let Some(value) = value {
                family.get_or_create(&labels).set(value);
            }
        };
        set(&self.auc, measured.auc);
        set(&self.log_loss, measured.log_loss);
        set(&self.precision, measured.precision);
        set(&self.recall, measured.recall);
        set(&self.mean_absolute_error, measured.mean_absolute_error);
        set(&self.rmse, measured.rmse);
    }

    /// The store's rows held now, and its totals of rows let go by reason.
    pub fn held(&self, rows: usize, released: [(&'static str, u64); 3]) {
        self.records.set(rows as i64);
        for (reason, total) in released {
            let counter = self.let_go.get_or_create(&ReasonLabels { reason });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Counts outcomes fed back with `result`.
    pub fn fed_back(&self, result: &'static str, count: u64) {
        self.fed_back.get_or_create(&ResultLabels { result }).inc_by(count);
    }
}
