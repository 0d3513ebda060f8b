//! The Open Inference Protocol's REST API (KServe V2, with the Triton
//! extensions Triton's HTTP client uses): health, server and model metadata,
//! model readiness and configuration, the repository index (and, with an
//! admin key, load and unload), and inference with JSON tensors (`data` flat
//! or nested) or Triton's binary tensor data (`Inference-Header-Content-Length`:
//! a JSON header, then each binary tensor's bytes: `infer_json`). A thin
//! translation onto `api::oip`, which answers the same requests over gRPC:
//! the same decoding, the same outputs (`classification` included), the
//! same errors.

use super::answer::{self, Refused};
use super::infer_json::{HEADER_LENGTH, decode, encode};
use super::{Front, body};
use crate::api::oip::{self as oip_api, PLATFORM};
use crate::core::error::{ServeError, echo};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use candela::inference as oip;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The liveness route (open: no key).
pub const LIVE: &str = "/v2/health/live";
/// The readiness route (open: no key), the one HTTP readiness probes ask.
pub const READY: &str = "/v2/health/ready";

/// Protocol extensions this port really implements (`GET /v2`).
pub const EXTENSIONS: &[&str] = &["classification", "binary_tensor_data", "model_configuration", "model_repository"];

type Shared = State<Arc<Front>>;

/// The REST routes.
pub fn routes() -> Router<Arc<Front>> {
    Router::new()
        .route(LIVE, get(live))
        .route(READY, get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{model}", get(|s: Shared, h: HeaderMap, Path(m): Path<String>| metadata(s, h, m, None)))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(|s: Shared, h: HeaderMap, Path((m, v)): Path<(String, String)>| metadata(s, h, m, Some(v))),
        )
        .route(
            "/v2/models/{model}/ready",
            get(|s: Shared, h: HeaderMap, Path(m): Path<String>| model_ready(s, h, m, None)),
        )
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(|s: Shared, h: HeaderMap, Path((m, v)): Path<(String, String)>| model_ready(s, h, m, Some(v))),
        )
        .route("/v2/models/{model}/config", get(|s: Shared, h: HeaderMap, Path(m): Path<String>| config(s, h, m, None)))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(|s: Shared, h: HeaderMap, Path((m, v)): Path<(String, String)>| config(s, h, m, Some(v))),
        )
        .route(
            "/v2/models/{model}/infer",
            post(|s: Shared, h: HeaderMap, Path(m): Path<String>, b: Body| infer(s, h, m, None, b)),
        )
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(|s: Shared, h: HeaderMap, Path((m, v)): Path<(String, String)>, b: Body| infer(s, h, m, Some(v), b)),
        )
        .route("/v2/repository/index", post(repository_index))
        .route(
            "/v2/repository/models/{model}/load",
            post(|s: Shared, h: HeaderMap, Path(m): Path<String>| repository(s, h, m, Change::Load)),
        )
        .route(
            "/v2/repository/models/{model}/unload",
            post(|s: Shared, h: HeaderMap, Path(m): Path<String>| repository(s, h, m, Change::Unload)),
        )
}

/// Any other path: 404, saying what is served.
pub async fn no_route(uri: Uri) -> Response {
    Refused::from(ServeError::NotFound(format!(
        "no route `{}`: this port serves /v2/… (the Open Inference Protocol), POST /score and POST /feedback",
        echo(uri.path())
    )))
    .into_response()
}

/// The process is up (no key needed).
async fn live() -> Response {
    answer::json(StatusCode::OK, &json!({"live": true}))
}

/// 200 while the server serves models and is not draining, 503 otherwise
/// (no key needed: this is the readiness probe).
async fn ready(State(front): Shared) -> Response {
    let ready = front.serving.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    answer::json(status, &json!({"ready": ready}))
}

async fn server_metadata(State(front): Shared, headers: HeaderMap) -> Response {
    if let Some(refused) = front.refusal(&headers) {
        return refused;
    }
    let metadata = json!({"name": PLATFORM, "version": env!("CARGO_PKG_VERSION"), "extensions": EXTENSIONS});
    answer::json(StatusCode::OK, &metadata)
}

/// Answers a request for information about model `name` (and version) with
/// `answer`'s JSON, after the key check.
fn about(
    front: &Front,
    headers: &HeaderMap,
    answer: impl FnOnce(&Front) -> Result<(StatusCode, Value), ServeError>,
) -> Response {
    if let Some(refused) = front.refusal(headers) {
        return refused;
    }
    match answer(front) {
        Ok((status, value)) => answer::json(status, &value),
        Err(error) => Refused::from(error).into_response(),
    }
}

async fn metadata(State(front): Shared, headers: HeaderMap, model: String, version: Option<String>) -> Response {
    about(&front, &headers, |front| {
        let version = version.as_deref().unwrap_or("");
        let (metadata, features) = oip_api::model_metadata_and_features(&front.serving, &model, version)?;
        let tensor = |t: &oip::model_metadata_response::TensorMetadata| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape});
        // Inputs say what a row holds: a matrix input's features, a category input's categories.
        let inputs: Vec<Value> = metadata
            .inputs
            .iter()
            .map(|t| {
                let mut input = tensor(t);
                let categories = features.iter().find(|(name, _)| *name == t.name).map(|(_, c)| c);
                if t.name == oip_api::INPUT {
                    input["parameters"] =
                        json!({"features": features.iter().map(|(name, _)| name).collect::<Vec<_>>()});
                } else if let Some(categories) = categories.filter(|c| !c.is_empty()) {
                    input["parameters"] = json!({"categories": categories});
                }
                input
            })
            .collect();
        Ok((
            StatusCode::OK,
            json!({
                "name": metadata.name,
                "versions": metadata.versions,
                "platform": metadata.platform,
                "inputs": inputs,
                "outputs": metadata.outputs.iter().map(tensor).collect::<Vec<_>>(),
            }),
        ))
    })
}

/// 200 when the model is ready; 503 when the repository holds it but does not
/// serve it now (or the server is not ready); 404 when it has never heard of it.
async fn model_ready(State(front): Shared, headers: HeaderMap, model: String, version: Option<String>) -> Response {
    about(&front, &headers, |front| {
        let ready = oip_api::model_ready(&front.serving, &model, version.as_deref().unwrap_or(""))?;
        let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        Ok((status, json!({"name": model, "ready": ready})))
    })
}

/// The model's configuration as Triton's `GET …/config` answers it.
async fn config(State(front): Shared, headers: HeaderMap, model: String, version: Option<String>) -> Response {
    about(&front, &headers, |front| {
        let config = oip_api::model_config(&front.serving, &model, version.as_deref().unwrap_or(""))?;
        let data_type = |code: i32| oip::DataType::try_from(code).map_or("TYPE_INVALID", |t| t.as_str_name());
        let mut value = json!({
            "name": config.name,
            "platform": config.platform,
            "backend": config.backend,
            "max_batch_size": config.max_batch_size,
            "input": config.input.iter().map(|i| json!({"name": i.name, "data_type": data_type(i.data_type), "dims": i.dims})).collect::<Vec<_>>(),
            "output": config.output.iter().map(|o| json!({"name": o.name, "data_type": data_type(o.data_type), "dims": o.dims})).collect::<Vec<_>>(),
            "model_transaction_policy": {"decoupled": false},
        });
        if let Some(batching) = config.dynamic_batching {
            value["dynamic_batching"] = json!({
                "max_queue_delay_microseconds": batching.max_queue_delay_microseconds,
                "preserve_ordering": batching.preserve_ordering,
            });
        }
        Ok((StatusCode::OK, value))
    })
}

/// `POST /v2/repository/index` with an optional `{"ready": true}`.
async fn repository_index(State(front): Shared, headers: HeaderMap, body: Body) -> Response {
    if let Some(refused) = front.refusal(&headers) {
        return refused;
    }
    let listed = async {
        let bytes = body::read(&headers, body, &front.bounds).await?;
        #[derive(Deserialize, Default)]
        struct IndexRequest {
            #[serde(default)]
            ready: bool,
        }
        let request: IndexRequest =
            if bytes.iter().all(u8::is_ascii_whitespace) { Default::default() } else { body::parse(&bytes)? };
        let models = oip_api::repository_index(&front.serving, request.ready)?;
        let models: Vec<Value> = models
            .into_iter()
            .map(|m| json!({"name": m.name, "version": m.version, "state": m.state, "reason": m.reason}))
            .collect();
        Ok::<_, Refused>(answer::json(StatusCode::OK, &models))
    };
    listed.await.unwrap_or_else(IntoResponse::into_response)
}

/// What an admin asks of the repository.
enum Change {
    Load,
    Unload,
}

/// Loads or unloads a model: admin keys only (403 for an inference key).
async fn repository(State(front): Shared, headers: HeaderMap, model: String, change: Change) -> Response {
    if let Err(denied) = front.admin.check(&headers) {
        return answer::unauthorized(denied);
    }
    let changed = match change {
        Change::Load => oip_api::load(&front.serving, model).await,
        Change::Unload => oip_api::unload(&front.serving, model).await,
    };
    match changed {
        Ok(()) => answer::json(StatusCode::OK, &json!({})),
        Err(error) => Refused::from(error).into_response(),
    }
}

/// `POST /v2/models/{model}[/versions/{version}]/infer`.
async fn infer(
    State(front): Shared,
    headers: HeaderMap,
    model: String,
    version: Option<String>,
    body: Body,
) -> Response {
    let (serving, split) = (front.serving.clone(), headers.get(HEADER_LENGTH).cloned());
    front
        .answer("infer", &headers, body, |bytes, call| {
            Box::pin(async move {
                let (request, binary) = decode(split, bytes, model, version.unwrap_or_default())?;
                let response = oip_api::infer(&serving, request, call, false).await?;
                Ok(encode(response, &binary))
            })
        })
        .await
}
