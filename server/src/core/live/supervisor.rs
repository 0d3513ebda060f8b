//! The loops that keep the live repository current: the watch that rescans
//! it on a timer and on SIGHUP, and the supervisor that closes the rollout
//! guards' windows and publishes the drift, quality and prediction-store
//! gauges.

use super::LiveRepository;
use crate::core::outcomes::Outcomes;
use crate::observe::quality_gauges::Measured;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the rollout guards and the drift gauges are brought up to date.
const SUPERVISE_EVERY: Duration = Duration::from_millis(100);

impl LiveRepository {
    /// Closes the rollout guards' windows as they end (judging canaries by their
    /// requests and their live quality in `outcomes`) and updates the drift,
    /// live-quality and prediction-store gauges (each second), until `stop` resolves. Light: counters are read,
    /// nothing is locked on the request path.
    pub async fn supervise(self: Arc<Self>, outcomes: Arc<Outcomes>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(SUPERVISE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_drift = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = &mut stop => return,
            }
            let Some(registry) = self.current() else { continue };
            let now = std::time::Instant::now();
            for rollout in registry.rollouts() {
                rollout.tick(now, &outcomes);
            }
            if now.duration_since(last_drift) >= Duration::from_secs(1) {
                last_drift = now;
                let held = outcomes.held();
                let quality = &self.metrics.quality;
                quality
                    .held(held.rows, [("room", held.dropped), ("expired", held.expired), ("reused_id", held.reused)]);
                // Published here, not as outcomes arrive: the window slides with time too.
                for version in outcomes.quality() {
                    let s = &version.summary;
                    let measured = Measured {
                        outcomes: s.outcomes,
                        auc: s.auc,
                        log_loss: s.log_loss,
                        precision: s.precision,
                        recall: s.recall,
                        mean_absolute_error: s.mean_absolute_error,
                        rmse: s.rmse,
                    };
                    quality.measured(&version.segment, version.version, version.enough, &measured);
                }
                for model in registry.models() {
                    if let Some(report) = model.stats.drift.as_ref().and_then(|drift| drift.report()) {
                        self.metrics.release.set_drift(&model.segment, model.version, &report.features, report.score);
                    }
                }
            }
        }
    }

    /// Rescans every `poll` (none: never on a timer) and whenever `hangups`
    /// fires (SIGHUP), until `stop` resolves.
    pub async fn watch(
        self: Arc<Self>,
        poll: Option<Duration>,
        hangups: watch::Receiver<()>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut hangups = Some(hangups);
        loop {
            let tick = async {
                match poll {
                    Some(period) => tokio::time::sleep(period).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick => {}
                changed = async {
                    match &mut hangups {
                        Some(hangups) => hangups.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if changed.is_err() {
                        // No more SIGHUPs: keep polling only.
                        hangups = None;
                        continue;
                    }
                    tracing::info!("SIGHUP: rescanning the model repository");
                }
                _ = &mut stop => return,
            }
            // A reload that panicked is logged where it is caught; the served models stay.
            let _ = self.reload().await;
        }
    }
}
