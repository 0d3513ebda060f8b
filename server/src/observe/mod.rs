//! Leaf sinks for what the server observes: Prometheus metrics (`metrics`,
//! with the release-safety series in `release` and the live-quality and
//! prediction-store series in `quality_gauges`; the front serves them) and
//! logs and traces (`telemetry`). They take plain labels (segment, version,
//! code names) and import nothing else from the crate, so every layer may
//! report to them.

pub mod metrics;
pub mod quality_gauges;
pub mod release;
pub mod telemetry;
