//! The network front, the only code that speaks gRPC (and HTTP): the tonic
//! services on one port, and the HTTP/JSON API on another (`http`). `candela.v1.Inference` (`v1`) and `inference.GRPCInferenceService`
//! (`open_inference`, the Open Inference Protocol) translate requests for the
//! same serving core; `candela.v1.Rollouts` (`rollouts`, admin only) reports
//! and rolls back each segment's rollout; `grpc.health.v1.Health` reports readiness per service;
//! reflection (v1 and v1alpha, since grpcurl 1.8 speaks only v1alpha) lets
//! grpcurl list, describe and call everything. Around them: accepting
//! connections within limits (`connections`, `tls`), the `gate` that admits
//! calls and bounds request bodies, API keys (`auth`), reloading keys and
//! certificates on SIGHUP (`reload`), the routers (`router`), each call's
//! context (`call`), what the handlers share (`serving`), answering streams
//! message by message (`streams`), the one mapping from core errors to gRPC
//! (`status`), and draining (`shutdown`).

pub mod auth;
pub mod call;
pub mod connections;
pub mod feedback;
pub mod gate;
pub mod http;
pub mod open_inference;
pub mod reload;
pub mod rollouts;
pub mod router;
pub mod serving;
pub mod shutdown;
pub mod status;
pub mod streams;
pub mod tls;
pub mod v1;
