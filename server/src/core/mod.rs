//! The serving core, transport-neutral: the served models and their
//! registry (`registry`), swapped as the repository changes (`live`),
//! scoring (`scoring`: the one path every call's rows take, validation
//! first), dynamic batching and the compute workers, per-model
//! statistics, and the core's error. It never imports tonic, prost or the
//! generated protocol types; the front translates to and from them. It reads
//! models through the model layer and reports to the observe sinks.

pub mod batching;
pub mod error;
pub mod live;
pub mod registry;
pub mod scoring;
pub mod stats;
pub mod workers;
