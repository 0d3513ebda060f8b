//! The network front: the tonic services on one port. `candela.v1.Inference`
//! and `inference.GRPCInferenceService` (the Open Inference Protocol) translate
//! requests for the same serving core; `grpc.health.v1.Health` reports
//! readiness per service; reflection (v1 and v1alpha, since grpcurl 1.8 speaks
//! only v1alpha) lets grpcurl list, describe and call everything.

pub mod auth;
pub mod candela;
pub mod connections;
pub mod gate;
pub mod kserve;
pub mod serving;
pub mod status;
pub mod tls;

use crate::config::{Settings, seconds};
use crate::inference::Call;
use ::candela::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use ::candela::v1::inference_server::InferenceServer;
use auth::{Authenticator, KeyStore};
use futures::{Stream, StreamExt};
use serving::Serving;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Router;
use tonic::{Status, Streaming};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

/// The health service names this server reports: overall (`""`) and each API.
pub const HEALTH_SERVICES: &[&str] = &[
    "",
    <InferenceServer<candela::CandelaApi> as NamedService>::NAME,
    <GrpcInferenceServiceServer<kserve::KserveApi> as NamedService>::NAME,
];

/// What the server serves over gRPC.
pub struct Routers {
    /// Everything, behind the gate, for the main port.
    pub main: Router<Stack<gate::GateLayer, Identity>>,
    /// Health alone, for the plaintext probe port (--health-listen).
    pub health_only: Router,
    /// Flips the health every router reports.
    pub reporter: HealthReporter,
}

/// Builds the routers. The inference services (and reflection, with
/// --auth-reflection) check API keys when `keys` is set; health never does,
/// so probes need no key.
pub fn router(serving: Arc<Serving>, settings: &Settings, keys: Option<Arc<KeyStore>>) -> anyhow::Result<Routers> {
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
    let auth = Authenticator::new(keys.clone());
    let reflection_auth = Authenticator::new(keys.filter(|_| settings.auth_reflection));
    let inference = InterceptedService::new(
        InferenceServer::new(candela::CandelaApi::new(serving.clone())).max_decoding_message_size(hard_limit),
        auth.clone(),
    );
    let serving_for_gate = serving.clone();
    let open_inference = InterceptedService::new(
        GrpcInferenceServiceServer::new(kserve::KserveApi::new(serving)).max_decoding_message_size(hard_limit),
        auth,
    );
    let budget = gate::Budget::new(settings.max_pending_request_bytes);
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(settings.max_concurrent_streams)
        .http2_keepalive_interval(seconds(settings.keepalive_seconds))
        .http2_keepalive_timeout(seconds(settings.keepalive_timeout_seconds));
    if let Some(age) = seconds(settings.max_connection_age_seconds) {
        builder = builder
            .max_connection_age(age)
            .max_connection_age_grace(seconds(settings.max_connection_age_grace_seconds).unwrap_or_default());
    }
    let health_only = tonic::transport::Server::builder().add_service(health.clone());
    let main = builder
        .layer(gate::GateLayer::new(serving_for_gate, budget))
        .add_service(health)
        .add_service(InterceptedService::new(reflection_v1, reflection_auth.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, reflection_auth))
        .add_service(inference)
        .add_service(open_inference);
    Ok(Routers { main, health_only, reporter })
}

/// Sets every reported service to `status`.
pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        reporter.set_service_status(*service, status).await;
    }
}

/// The response stream of a streaming RPC.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Answers a bidirectional stream: each message gets its own `Call`, timed
/// and routed on its own, and is answered in order by `answer`, which admits
/// it against --max-concurrent-requests itself: an open stream holds no slot
/// while it has nothing being scored, so idle streams cannot lock others out.
/// A stream that sends nothing for --stream-idle-seconds is ended with
/// UNAVAILABLE; one that sends bytes that are not its messages, with
/// INVALID_ARGUMENT (counted).
pub fn message_stream<In, Out, F, Fut>(
    serving: &Arc<Serving>,
    stream: Call,
    inbound: Streaming<In>,
    answer: F,
) -> ResponseStream<Out>
where
    In: Send + 'static,
    Out: Send + 'static,
    F: Fn(Arc<Serving>, In, Call) -> Fut + Send + 'static,
    Fut: Future<Output = Out> + Send + 'static,
{
    let idle = serving.limits.stream_idle;
    let in_flight = serving.limits.stream_in_flight;
    let serving = serving.clone();
    let answers = tokio_stream::StreamExt::timeout(inbound, idle)
        .map(move |message| {
            let call = stream.message();
            let answer = match message {
                Ok(Ok(message)) => Ok(answer(serving.clone(), message, call)),
                Ok(Err(status)) => match gate::undecodable(&status) {
                    Some(error) => {
                        call.finished(Some(&error));
                        Err(Status::from(error))
                    }
                    None => Err(status),
                },
                Err(_elapsed) => Err(Status::unavailable(format!(
                    "the stream sent no message for {} s (--stream-idle-seconds); open a new one when there is work",
                    idle.as_secs_f64()
                ))),
            };
            async move { Ok(answer?.await) }
        })
        .buffered(in_flight);
    Box::pin(answers)
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::grpc_timeout;
    use std::time::Duration;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        assert_eq!(grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("5000u"), Some(Duration::from_micros(5000)));
        assert_eq!(grpc_timeout("123456789m"), None, "at most 8 digits");
        assert_eq!(grpc_timeout("m"), None);
        assert_eq!(grpc_timeout("10x"), None);
        assert_eq!(grpc_timeout(""), None);
    }
}
