//! Leaf sinks for what the server observes: Prometheus metrics (`metrics`,
//! with the release-safety series in `release`) and logs and traces
//! (`telemetry`). They take plain labels (segment,
//! version, code names) and import nothing else from the crate, so every
//! layer may report to them.

pub mod metrics;
pub mod quality;
pub mod release;
pub mod telemetry;
