//! `candela.v1.Rollouts`: the admin service over release safety: each
//! segment's rollout (policy, what each version served, the guard, the
//! shadow's agreement, drift, live quality from outcomes) and rolling a
//! canary back by hand. The gate
//! admits only admin keys to it; the core does the work.

use crate::api::serving::Serving;
use crate::core::outcomes::VersionQuality;
use crate::core::policies::{SegmentStatus, VersionRelease};
use candela::v1::{self, rollouts_server::Rollouts};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The `candela.v1.Rollouts` service.
pub struct RolloutsApi {
    serving: Arc<Serving>,
}

impl RolloutsApi {
    pub fn new(serving: Arc<Serving>) -> RolloutsApi {
        RolloutsApi { serving }
    }
}

#[tonic::async_trait]
impl Rollouts for RolloutsApi {
    async fn status(
        &self,
        request: Request<v1::RolloutStatusRequest>,
    ) -> Result<Response<v1::RolloutStatusResponse>, Status> {
        let segment = request.into_inner().segment;
        let only = (!segment.is_empty()).then_some(segment.as_str());
        let segments = self.serving.repository()?.rollout_status(only)?;
        let quality = self.serving.engine.outcomes.quality();
        Ok(Response::new(v1::RolloutStatusResponse {
            segments: segments.into_iter().map(|segment| segment_rollout(segment, &quality)).collect(),
        }))
    }

    async fn rollback(&self, request: Request<v1::RollbackRequest>) -> Result<Response<v1::RollbackResponse>, Status> {
        let segment = request.into_inner().segment;
        self.serving.repository()?.roll_back(&segment)?;
        Ok(Response::new(v1::RollbackResponse {}))
    }
}

fn segment_rollout(status: SegmentStatus, quality: &[VersionQuality]) -> v1::SegmentRollout {
    let mut answer = v1::SegmentRollout {
        segment: status.segment,
        refused: status.refused.unwrap_or_default(),
        ..Default::default()
    };
    let windows = status.rollout.as_ref().map(|rollout| rollout.windows.clone()).unwrap_or_default();
    let segment = answer.segment.clone();
    let quality_of = |version: u64| quality.iter().find(|q| q.segment == segment && q.version == version);
    answer.versions = status
        .versions
        .into_iter()
        .map(|version| version_rollout(quality_of(version.version), version, &windows))
        .collect();
    if let Some(rollout) = status.rollout {
        let policy = &rollout.policy;
        answer.policy = rollout.text.trim().to_string();
        answer.stable_version = policy.stable;
        if let Some(canary) = policy.canary {
            answer.canary_version = canary.version;
            answer.canary_percent_configured = canary.percent;
        }
        answer.canary_percent = rollout.canary_percent;
        if let Some(shadow) = policy.shadow {
            answer.shadow_version = shadow.version;
            answer.shadow_percent = shadow.percent;
        }
        answer.rollback_reason = rollout.rolled_back.unwrap_or_default();
        answer.breaches = rollout.breaches;
        answer.window_seconds = rollout.window_seconds;
        let shadow = rollout.shadow;
        answer.shadow = Some(v1::ShadowAgreement {
            rows: shadow.rows,
            agreed: shadow.agreed,
            dropped: shadow.dropped,
            errors: shadow.errors,
            mean_abs_delta: shadow.mean_abs_delta,
        });
    }
    answer
}

fn version_rollout(
    quality: Option<&VersionQuality>,
    status: VersionRelease,
    windows: &std::collections::BTreeMap<u64, crate::core::stats::Window>,
) -> v1::VersionRollout {
    let window = windows.get(&status.version).copied().unwrap_or_default();
    let ms = |at: Option<std::time::Duration>| at.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let drift = status.drift;
    let reported = quality.filter(|q| q.enough).map(|q| &q.summary);
    let measure = |value: Option<f64>| value.unwrap_or(-1.0);
    v1::VersionRollout {
        outcomes: quality.map_or(0, |q| q.summary.outcomes),
        auc: measure(reported.and_then(|s| s.auc)),
        log_loss: measure(reported.and_then(|s| s.log_loss)),
        precision: measure(reported.and_then(|s| s.precision)),
        recall: measure(reported.and_then(|s| s.recall)),
        mean_absolute_error: measure(reported.and_then(|s| s.mean_absolute_error)),
        rmse: measure(reported.and_then(|s| s.rmse)),
        version: status.version,
        role: status.role.to_string(),
        requests: status.requests,
        errors: status.errors,
        window_requests: window.requests,
        window_errors: window.errors,
        window_p50_ms: ms(window.p50),
        window_p95_ms: ms(window.p95),
        drift_rows: drift.as_ref().map_or(0, |d| d.rows),
        score_psi: drift.as_ref().and_then(|d| d.score).unwrap_or(-1.0),
        drift: drift
            .map(|d| d.features.into_iter().map(|(feature, psi)| v1::FeatureDrift { feature, psi }).collect())
            .unwrap_or_default(),
    }
}
