//! The network front: the tonic services on one port. `candela.v1.Inference`
//! and `inference.GRPCInferenceService` (the Open Inference Protocol) translate
//! requests for the same serving core; `grpc.health.v1.Health` reports
//! readiness per service; reflection (v1 and v1alpha, since grpcurl 1.8 speaks
//! only v1alpha) lets grpcurl list, describe and call everything.

pub mod candela;
pub mod kserve;

use crate::serving::Serving;
use ::candela::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use ::candela::v1::inference_server::InferenceServer;
use futures::{Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tonic::server::NamedService;
use tonic::transport::server::Router;
use tonic::{Status, Streaming};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The health service names this server reports: overall (`""`) and each API.
pub const HEALTH_SERVICES: &[&str] = &[
    "",
    <InferenceServer<candela::CandelaApi> as NamedService>::NAME,
    <GrpcInferenceServiceServer<kserve::KserveApi> as NamedService>::NAME,
];

/// Everything served on the gRPC port, and the reporter that flips its health.
pub fn router(serving: Arc<Serving>) -> anyhow::Result<(Router, HealthReporter)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(::candela::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc error details, so grpcurl can print BadRequest violations.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    // Decoding stops at twice the configured size, so a message somewhat over
    // the limit still decodes and gets INVALID_ARGUMENT naming the limit, while
    // a huge one is refused by the transport without being buffered.
    let hard_limit = serving.limits.max_message_bytes.saturating_mul(2);
    let inference =
        InferenceServer::new(candela::CandelaApi::new(serving.clone())).max_decoding_message_size(hard_limit);
    let open_inference =
        GrpcInferenceServiceServer::new(kserve::KserveApi::new(serving)).max_decoding_message_size(hard_limit);
    let router = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(inference)
        .add_service(open_inference);
    Ok((router, reporter))
}

/// Sets every reported service to `status`.
pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        reporter.set_service_status(*service, status).await;
    }
}

/// The response stream of a streaming RPC.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Answers each message of a bidirectional stream with `answer`, in the order
/// the messages came, with at most `in_flight` answers being computed at once.
/// `buffered` polls the inbound stream only when it has room, so a producer
/// faster than the server is held back by HTTP/2 flow control, and a slow
/// consumer holds back the reading. A broken inbound stream ends the response
/// stream with its status.
pub fn answer_in_order<In, Out, F, Fut>(inbound: Streaming<In>, in_flight: usize, answer: F) -> ResponseStream<Out>
where
    In: Send + 'static,
    Out: Send + 'static,
    F: Fn(In) -> Fut + Send + 'static,
    Fut: Future<Output = Out> + Send + 'static,
{
    let answers = inbound
        .map(move |message| {
            let answer = message.map(&answer);
            async move { Ok(answer?.await) }
        })
        .buffered(in_flight);
    Box::pin(answers)
}
