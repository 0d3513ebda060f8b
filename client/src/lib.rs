//! A typed Rust client for Candela's `candela.v1.Inference` API (and, on the
//! same connection, the Open Inference Protocol and the `Rollouts` admin API).
//!
//! `Client` wraps the generated stub with what callers otherwise write
//! themselves: connecting with a timeout, routing by segment (and optional
//! version), packing rows, and the health check. The generated types stay
//! available as `candela_client::proto` for anything the wrapper does not cover.

use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::{Interceptor, interceptor::InterceptedService};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

pub use candela::inference as oip;
pub use candela::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
pub use candela::v1 as proto;
pub use candela::v1::inference_client::InferenceClient;
pub use candela::v1::rollouts_client::RolloutsClient;

/// Which model a request goes to: a segment and, optionally, a pinned version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelId {
    /// Empty: the server's default segment.
    pub segment: String,
    /// 0: the newest version.
    pub version: u64,
}

impl ModelId {
    /// The newest version of `segment`.
    pub fn latest(segment: impl Into<String>) -> ModelId {
        ModelId { segment: segment.into(), version: 0 }
    }

    /// Exactly `version` of `segment`.
    pub fn pinned(segment: impl Into<String>, version: u64) -> ModelId {
        ModelId { segment: segment.into(), version }
    }
}

impl From<&str> for ModelId {
    fn from(segment: &str) -> ModelId {
        ModelId::latest(segment)
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid server URL `{url}`: {source}")]
    InvalidUrl { url: String, source: tonic::transport::Error },
    #[error("cannot connect to {url}: {source}")]
    Unreachable { url: String, source: tonic::transport::Error },
}

/// A key that is not valid metadata (it must be visible ASCII).
#[derive(Debug, thiserror::Error)]
#[error("the API key is not valid gRPC metadata: use visible ASCII characters only")]
pub struct InvalidApiKey;

/// Sends `authorization: Bearer <key>` on every call when a key is set.
#[derive(Clone, Default)]
pub struct ApiKey(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key itself.
        f.write_str(if self.0.is_some() { "ApiKey(set)" } else { "ApiKey(none)" })
    }
}

impl Interceptor for ApiKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The generated client, sending the API key when one is set.
pub type AuthenticatedClient = InferenceClient<InterceptedService<Channel, ApiKey>>;

/// The generated Open Inference Protocol client, sending the API key when one is set.
pub type OpenInferenceClient = GrpcInferenceServiceClient<InterceptedService<Channel, ApiKey>>;

/// The generated `candela.v1.Rollouts` (admin) client, sending the key when one is set.
pub type AuthenticatedRolloutsClient = RolloutsClient<InterceptedService<Channel, ApiKey>>;

/// A connection to a Candela server. Cheap to clone: clones share the connection.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    key: ApiKey,
    inference: AuthenticatedClient,
    health: HealthClient<Channel>,
}

/// Responses can carry up to this many bytes (the server's own default request
/// limit is 4 MiB; a 1000-row result is far smaller).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

impl Client {
    /// Connects to `url` (e.g. `http://127.0.0.1:50051`), failing after `timeout`.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Client, ConnectError> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|source| ConnectError::InvalidUrl { url: url.to_string(), source })?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        let channel =
            endpoint.connect().await.map_err(|source| ConnectError::Unreachable { url: url.to_string(), source })?;
        Ok(Client::from_channel(channel))
    }

    /// Wraps an existing channel (e.g. one with TLS configured).
    pub fn from_channel(channel: Channel) -> Client {
        Client::with_key(channel, ApiKey::default())
    }

    /// This client, sending `key` as `authorization: Bearer <key>` on inference calls.
    pub fn with_api_key(self, key: &str) -> Result<Client, InvalidApiKey> {
        let value = format!("Bearer {key}").parse().map_err(|_| InvalidApiKey)?;
        Ok(Client::with_key(self.channel, ApiKey(Some(value))))
    }

    fn with_key(channel: Channel, key: ApiKey) -> Client {
        let inference = InferenceClient::with_interceptor(channel.clone(), key.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        Client { health: HealthClient::new(channel.clone()), inference, key, channel }
    }

    /// The Open Inference Protocol (KServe V2) client on the same connection
    /// and key: Candela serves it too, as do Triton and other V2 servers.
    pub fn open_inference(&self) -> OpenInferenceClient {
        GrpcInferenceServiceClient::with_interceptor(self.channel.clone(), self.key.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// The release-safety admin client (rollout status, rollback) on the same
    /// connection and key: it needs a client made with an admin key.
    pub fn rollouts(&self) -> AuthenticatedRolloutsClient {
        RolloutsClient::with_interceptor(self.channel.clone(), self.key.clone())
    }

    /// The generated client, for calls the wrapper does not cover.
    pub fn inference(&mut self) -> &mut AuthenticatedClient {
        &mut self.inference
    }

    /// Scores one row.
    pub async fn predict(
        &mut self,
        model: impl Into<ModelId>,
        features: Vec<f32>,
    ) -> Result<proto::PredictResponse, Status> {
        self.predict_explained(model, features, 0).await
    }

    /// Scores one row and explains it with `explain` reasons
    /// (`prediction.explanation`; 0: none).
    pub async fn predict_explained(
        &mut self,
        model: impl Into<ModelId>,
        features: Vec<f32>,
        explain: u32,
    ) -> Result<proto::PredictResponse, Status> {
        let model = model.into();
        let request = proto::PredictRequest {
            segment: model.segment,
            version: model.version,
            features,
            text: Vec::new(),
            explain,
        };
        Ok(self.inference.predict(request).await?.into_inner())
    }

    /// Scores many rows (row-major, `feature_count` per row) in one call.
    pub async fn batch_predict(
        &mut self,
        model: impl Into<ModelId>,
        feature_count: usize,
        values: Vec<f32>,
    ) -> Result<proto::BatchPredictResponse, Status> {
        let rows = proto::Rows { feature_count: feature_count as u32, values, text: Vec::new() };
        self.batch_predict_rows(model, rows).await
    }

    /// Scores many rows given as `rows`, whose category features may travel
    /// as strings (`rows.text`, see `proto::TextColumn`).
    pub async fn batch_predict_rows(
        &mut self,
        model: impl Into<ModelId>,
        rows: proto::Rows,
    ) -> Result<proto::BatchPredictResponse, Status> {
        self.batch_predict_explained(model, rows, 0).await
    }

    /// Scores `rows` and explains each with `explain` reasons (each
    /// prediction's `explanation`; 0: none).
    pub async fn batch_predict_explained(
        &mut self,
        model: impl Into<ModelId>,
        rows: proto::Rows,
        explain: u32,
    ) -> Result<proto::BatchPredictResponse, Status> {
        let model = model.into();
        let request =
            proto::BatchPredictRequest { segment: model.segment, version: model.version, rows: Some(rows), explain };
        Ok(self.inference.batch_predict(request).await?.into_inner())
    }

    /// Scores many rows and receives the results in chunks as they are computed.
    pub async fn batch_predict_stream(
        &mut self,
        model: impl Into<ModelId>,
        feature_count: usize,
        values: Vec<f32>,
    ) -> Result<Streaming<proto::BatchPredictChunk>, Status> {
        let request = batch_request(model.into(), feature_count, values);
        Ok(self.inference.batch_predict_stream(request).await?.into_inner())
    }

    /// Opens a StreamPredict call fed by `batches`; see `stream_batch` to build them.
    pub async fn stream_predict<S>(&mut self, batches: S) -> Result<Streaming<proto::StreamPredictResponse>, Status>
    where
        S: futures::Stream<Item = proto::StreamPredictRequest> + Send + 'static,
    {
        Ok(self.inference.stream_predict(Request::new(batches)).await?.into_inner())
    }

    /// Reports outcomes (request id, row, true label) of rows scored earlier.
    pub async fn feedback(&mut self, outcomes: Vec<proto::Outcome>) -> Result<proto::FeedbackResponse, Status> {
        Ok(self.inference.feedback(proto::FeedbackRequest { outcomes }).await?.into_inner())
    }

    /// Reports outcomes in bulk: every message of `messages`, one total.
    pub async fn feedback_stream<S>(&mut self, messages: S) -> Result<proto::FeedbackResponse, Status>
    where
        S: futures::Stream<Item = proto::FeedbackRequest> + Send + 'static,
    {
        Ok(self.inference.feedback_stream(Request::new(messages)).await?.into_inner())
    }

    /// `stream_predict`, the stream sent with `x-request-id: request_id`
    /// (its messages' answers are kept for outcomes under `<request_id>/<message id>`).
    pub async fn stream_predict_as<S>(
        &mut self,
        request_id: &str,
        batches: S,
    ) -> Result<Streaming<proto::StreamPredictResponse>, Status>
    where
        S: futures::Stream<Item = proto::StreamPredictRequest> + Send + 'static,
    {
        let mut request = Request::new(batches);
        let id = request_id.parse().map_err(|_| Status::invalid_argument("a request id must be visible ASCII"))?;
        request.metadata_mut().insert("x-request-id", id);
        Ok(self.inference.stream_predict(request).await?.into_inner())
    }

    /// Every model the server serves.
    pub async fn list_models(&mut self) -> Result<proto::ListModelsResponse, Status> {
        Ok(self.inference.list_models(proto::ListModelsRequest {}).await?.into_inner())
    }

    /// One model's schema and metadata.
    pub async fn get_model(&mut self, model: impl Into<ModelId>) -> Result<proto::ModelInfo, Status> {
        let model = model.into();
        Ok(self
            .inference
            .get_model(proto::GetModelRequest { segment: model.segment, version: model.version })
            .await?
            .into_inner())
    }

    /// The `grpc.health.v1` status of `service` (`""` for the whole server).
    pub async fn health(&mut self, service: &str) -> Result<ServingStatus, Status> {
        let response = self.health.check(HealthCheckRequest { service: service.to_string() }).await?.into_inner();
        Ok(response.status())
    }
}

/// One StreamPredict message: `id` comes back on its response, with one
/// `Prediction` per row (set `columnar` on it for packed columns instead,
/// `explain` for explanations).
pub fn stream_batch(
    id: impl Into<String>,
    model: &ModelId,
    feature_count: usize,
    values: Vec<f32>,
) -> proto::StreamPredictRequest {
    proto::StreamPredictRequest {
        id: id.into(),
        segment: model.segment.clone(),
        version: model.version,
        rows: Some(proto::Rows { feature_count: feature_count as u32, values, text: Vec::new() }),
        columnar: false,
        explain: 0,
    }
}

fn batch_request(model: ModelId, feature_count: usize, values: Vec<f32>) -> proto::BatchPredictRequest {
    proto::BatchPredictRequest {
        segment: model.segment,
        version: model.version,
        rows: Some(proto::Rows { feature_count: feature_count as u32, values, text: Vec::new() }),
        explain: 0,
    }
}
