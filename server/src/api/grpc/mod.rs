//! The gRPC front: `candela.v1.Inference` (`v1`) and
//! `inference.GRPCInferenceService` (`open_inference`, the Open Inference
//! Protocol, whose calls it shares with the HTTP front through `api::oip`)
//! translate requests for the core's one door; `candela.v1.Rollouts`
//! (`rollouts`, admin only) reports and rolls back each segment's rollout;
//! bidirectional streams are answered message by message (`streams`);
//! explanations become candela.v1 messages in `explanations`; and
//! core errors become gRPC statuses in one place (`status`).

pub mod explanations;
pub mod open_inference;
pub mod rollouts;
pub mod router;
pub mod status;
pub mod streams;
pub mod v1;
