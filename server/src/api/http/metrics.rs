//! `GET /metrics`: the Prometheus exposition of `observe::metrics`, on its
//! own port (`--metrics-listen`), served by the HTTP front like the other
//! ports: the same connection limits, head-size bound, idle timeout and
//! drain. The sink renders; only the front speaks HTTP.

use crate::api::serving::Serving;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use std::sync::Arc;

/// OpenMetrics' content type, which Prometheus negotiates.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics port's one route.
pub fn router(serving: Arc<Serving>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        get(move || {
            let serving = serving.clone();
            async move { ([(CONTENT_TYPE, OPENMETRICS)], serving.metrics.render(serving.in_flight())) }
        }),
    )
}
