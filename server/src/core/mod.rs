//! The serving core, transport-neutral. Every scoring request, from any
//! front, comes through one door (`engine`: route, decode, validate, score,
//! keep the answer, shadow). Around it: the served models (`served`) and
//! their registry (`registry`), swapped as the repository changes (`live`,
//! with each segment's rollout policy read by `policies`), scoring
//! (`scoring`: validation and the deadline; `cells`: typed values encoded
//! for the model; `scores`: what a model answers; `explaining`: why, when
//! asked), release safety (`rollout`: canary split, guard, shadow),
//! answers kept for outcomes and live quality (`outcomes`, `quality`) and
//! drift (`drift`), dynamic batching and the compute workers, per-model
//! statistics, and the core's error. It never
//! imports tonic, prost or the generated protocol types; the front
//! translates to and from them. It reads models through the model layer and
//! reports to the observe sinks.
pub mod batching;
pub mod cells;
pub mod drift;
pub mod engine;
pub mod error;
pub mod explaining;
pub mod live;
pub mod outcomes;
pub mod policies;
pub mod quality;
pub mod registry;
pub mod rollout;
pub mod scores;
pub mod scoring;
pub mod served;
pub mod stats;
pub mod workers;
