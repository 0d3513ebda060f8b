//! The network front, the only code that speaks a wire format: the gRPC
//! services on one port (`grpc`: candela.v1, the Open Inference Protocol,
//! rollouts), the HTTP/JSON API on another (`http`), and the Prometheus
//! endpoint on a third (`metrics`), all under the same connection limits.
//! Both fronts translate requests for the core's one door
//! (`core::engine`); what they share of the Open Inference Protocol (its
//! tensors, metadata, repository and statistics) is `oip`, and of
//! `Feedback`, `feedback`. `grpc.health.v1.Health` reports readiness per
//! service; reflection (v1 and v1alpha, since grpcurl 1.8 speaks only
//! v1alpha) lets grpcurl list, describe and call everything. Around them:
//! accepting connections within limits (`connections`, `tls`), the `gate`
//! that admits calls and bounds request bodies, API keys (`auth`),
//! reloading keys and certificates on SIGHUP (`reload`), the routers
//! (`router`), each call's transport context (`call`), what the handlers
//! share (`serving`), and draining (`shutdown`).

pub mod auth;
pub mod call;
pub mod connections;
pub mod feedback;
pub mod gate;
pub mod grpc;
pub mod http;
pub mod oip;
pub mod reload;
pub mod serving;
pub mod shutdown;
pub mod tls;
