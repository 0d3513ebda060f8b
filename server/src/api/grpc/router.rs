//! The gRPC routers: every service on the main port behind the gate, health
//! alone for the plaintext probe port, and the health reporter that flips
//! them all.

use super::{open_inference, rollouts, v1};
use crate::api::auth::{AdminGuard, Authenticator, KeyStore};
use crate::api::gate;
use crate::api::serving::Serving;
use crate::config::{MAX_HEADER_LIST_BYTES, Settings, seconds};
use candela::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use candela::v1::inference_server::InferenceServer;
use candela::v1::rollouts_server::RolloutsServer;
use std::sync::Arc;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Router;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

/// The health service names this server reports: overall (`""`) and each API.
pub const HEALTH_SERVICES: &[&str] = &[
    "",
    <InferenceServer<v1::CandelaApi> as NamedService>::NAME,
    <GrpcInferenceServiceServer<open_inference::OpenInferenceApi> as NamedService>::NAME,
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

/// Builds the routers (request bodies charged to `budget`, which the HTTP
/// port shares). The inference services (and reflection, with
/// --auth-reflection) check API keys when `keys` is set (admin keys pass
/// too); repository control and the rollouts service need an `admin` key; health never checks one,
/// so probes need no key.
pub fn router(
    serving: Arc<Serving>,
    settings: &Settings,
    keys: Option<Arc<KeyStore>>,
    admin: Option<Arc<KeyStore>>,
    budget: Arc<gate::Budget>,
) -> anyhow::Result<Routers> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(candela::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc error details, so grpcurl can print BadRequest violations.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    // Decoding stops at twice the configured size, so a message somewhat over
    // the limit still decodes and gets INVALID_ARGUMENT naming the limit, while
    // a huge one is refused by the transport without being buffered.
    let hard_limit = serving.limits.largest_message();
    let auth = Authenticator::new(keys.clone(), admin.clone());
    let guard = AdminGuard::new(admin.clone(), keys.clone());
    let reflection_auth = Authenticator::new(keys.filter(|_| settings.auth_reflection), admin);
    let inference = InterceptedService::new(
        InferenceServer::new(v1::CandelaApi::new(serving.clone())).max_decoding_message_size(hard_limit),
        auth.clone(),
    );
    let serving_for_gate = serving.clone();
    // Admin only: the gate checks the admin key before the call reaches it.
    let rollouts = RolloutsServer::new(rollouts::RolloutsApi::new(serving.clone()));
    let open_inference = InterceptedService::new(
        GrpcInferenceServiceServer::new(open_inference::OpenInferenceApi::new(serving))
            .max_decoding_message_size(hard_limit),
        auth,
    );
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(settings.max_concurrent_streams)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_keepalive_interval(seconds(settings.keepalive_seconds))
        .http2_keepalive_timeout(seconds(settings.keepalive_timeout_seconds));
    if let Some(age) = seconds(settings.max_connection_age_seconds) {
        builder = builder
            .max_connection_age(age)
            .max_connection_age_grace(seconds(settings.max_connection_age_grace_seconds).unwrap_or_default());
    }
    let health_only = tonic::transport::Server::builder().add_service(health.clone());
    let main = builder
        .layer(gate::GateLayer::new(serving_for_gate, budget, guard))
        .add_service(health)
        .add_service(InterceptedService::new(reflection_v1, reflection_auth.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, reflection_auth))
        .add_service(inference)
        .add_service(open_inference)
        .add_service(rollouts);
    Ok(Routers { main, health_only, reporter })
}

/// Whether the server at `url` reports itself (service `""`) SERVING, as a
/// Kubernetes gRPC probe asks; `false` when it cannot be reached. The test
/// harness waits on it.
pub async fn probe_serving(url: &str) -> bool {
    use tonic_health::pb::{HealthCheckRequest, health_check_response, health_client::HealthClient};
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(url.to_string()) else { return false };
    let Ok(channel) = endpoint.connect().await else { return false };
    let answer = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
    answer.is_ok_and(|answer| answer.get_ref().status == health_check_response::ServingStatus::Serving as i32)
}

/// Sets every reported service to `status`.
pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        reporter.set_service_status(*service, status).await;
    }
}
