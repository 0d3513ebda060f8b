//! Graceful shutdown: a signal starts a drain. Health turns NOT_SERVING at
//! once so Kubernetes and load balancers stop sending traffic, requests keep
//! being served for the drain period while they notice, and only then does
//! the listener close and in-flight work finish.

use super::grpc::router::set_health;
use super::serving::Serving;
use std::time::Duration;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Resolves on the first SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
pub async fn signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C will stop the server");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// Reports NOT_SERVING (and not ready) everywhere, then keeps serving for `period`.
pub async fn drain(reporter: &HealthReporter, serving: &Serving, period: Duration) {
    serving.start_draining();
    set_health(reporter, ServingStatus::NotServing).await;
    tracing::info!(drain_seconds = period.as_secs_f64(), "draining: health is NOT_SERVING, still answering requests");
    tokio::time::sleep(period).await;
}
