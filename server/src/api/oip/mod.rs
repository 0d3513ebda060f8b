//! The Open Inference Protocol (KServe V2, with the Triton extensions
//! Triton's clients and perf_analyzer use), as both fronts speak it: the gRPC
//! `inference.GRPCInferenceService` (`grpc::open_inference`) and the HTTP/JSON
//! `/v2` routes (`http::rest`) translate their wire format into these calls.
//! A model name is a segment, a version string pins a version ("" = the
//! newest), and the one input tensor `features` `[batch, n_features]` (or,
//! for a model converted from a DataFrame, a tensor per feature: `named`)
//! becomes the rows the core validates and scores (`tensors`). Outputs are
//! `probabilities` (FP32 `[batch, n_classes]`) and `prediction` (INT64
//! `[batch, 1]`, the most probable class index); with the request parameter
//! `explain` = k, also `contributions` (FP32 `[batch, n_features + 1]`, the
//! base last; `[batch, n_classes, n_features + 1]` for more than two labels).

mod named;
pub mod raw;
mod statistics;
pub mod tensors;

pub use statistics::statistics;

use super::call::Call;
use super::serving::Serving;
use crate::core::engine::Answer;
use crate::core::error::{ServeError, echo};
use crate::core::live::State;
use crate::core::registry::Registry;
use crate::core::served::ServedModel;
use crate::model::LoadedModel;
use crate::model::manifest::Task;
use candela::inference as oip;
use oip::model_metadata_response::TensorMetadata;
use prost::Message;
use std::sync::Arc;
use tensors::{decode_input, encode_outputs, requested_outputs};

/// The input tensor every Candela model takes.
pub const INPUT: &str = "features";
/// Output: one probability per class, in label order.
pub const PROBABILITIES: &str = "probabilities";
/// Output: the index of the most probable class (a regressor: its value, FP32).
pub const PREDICTION: &str = "prediction";
/// Output, when the request parameter `explain` asks: each feature's contribution, then the base.
pub const CONTRIBUTIONS: &str = "contributions";
/// The request parameter asking for explanations (the reasons per row; their contributions are answered).
const EXPLAIN: &str = "explain";
/// ModelMetadata's `platform` and ModelConfig's `platform`/`backend`.
pub const PLATFORM: &str = "candela";
/// The requested-output parameter of Triton's classification extension.
const CLASSIFICATION: &str = "classification";

/// Every version the repository holds, with its state (`only_ready`: the
/// ready ones); while draining, none is ready.
pub fn repository_index(
    serving: &Serving,
    only_ready: bool,
) -> Result<Vec<oip::repository_index_response::ModelIndex>, ServeError> {
    let repository = serving.repository()?;
    let draining = serving.is_draining();
    Ok(repository
        .index()
        .into_iter()
        .map(|status| {
            let (state, reason) = match (draining, status.state) {
                (true, State::Ready) => (State::Unavailable, "the server is draining".to_string()),
                (_, state) => (state, status.reason),
            };
            let index = oip::repository_index_response::ModelIndex {
                name: status.segment,
                version: status.version.to_string(),
                state: state.name().to_string(),
                reason,
            };
            (state, index)
        })
        .filter(|(state, _)| !only_ready || *state == State::Ready)
        .map(|(_, index)| index)
        .collect())
}

/// Rescans the repository now and serves model `name` again if it was
/// unloaded (an empty name: the whole repository); fails, keeping what was
/// served, when none of the segment's versions can be served.
pub async fn load(serving: &Serving, name: String) -> Result<(), ServeError> {
    let repository = serving.repository()?;
    match name.as_str() {
        "" => repository.reload().await.map(drop),
        _ => repository.load(name).await.map(drop),
    }
}
/// Stops serving model `name` until it is loaded again; its calls in flight finish.
pub async fn unload(serving: &Serving, name: String) -> Result<(), ServeError> {
    serving.repository()?.unload(name).await
}

/// Whether model `name` (version `version`, "" for the newest) is ready:
/// served and the server ready; `false` for one the repository holds but does
/// not serve now (unloaded, failed to load, outside the version policy);
/// NOT_FOUND for one it has never heard of.
pub fn model_ready(serving: &Serving, name: &str, version: &str) -> Result<bool, ServeError> {
    match resolve(&*serving.models()?, name, version) {
        Ok(_) => Ok(serving.is_ready()),
        Err(ServeError::NotFound(_)) if knows(serving, name, version)? => Ok(false),
        Err(error) => Err(error),
    }
}

/// Whether the repository holds model `name` (version `version`, or any when "").
fn knows(serving: &Serving, name: &str, version: &str) -> Result<bool, ServeError> {
    let index = serving.repository()?.index();
    Ok(index.iter().any(|v| v.segment == name && (version.is_empty() || v.version.to_string() == version)))
}

/// Model `name`'s metadata (version `version`, "" for the newest): its
/// versions, its input tensor and its outputs.
pub fn model_metadata(serving: &Serving, name: &str, version: &str) -> Result<oip::ModelMetadataResponse, ServeError> {
    let map = serving.models()?;
    Ok(metadata_of(&map, resolve(&map, name, version)?))
}

/// `model`'s metadata, its versions as `map` holds them.
fn metadata_of(map: &Registry, model: &ServedModel) -> oip::ModelMetadataResponse {
    let tensor = |name: &str, datatype: &str, width: usize| TensorMetadata {
        name: name.to_string(),
        datatype: datatype.to_string(),
        shape: vec![-1, width as i64],
    };
    oip::ModelMetadataResponse {
        name: model.segment.clone(),
        versions: map.versions(&model.segment).map(|v| v.to_string()).collect(),
        platform: PLATFORM.to_string(),
        inputs: if model.scorer.inputs_by_name() {
            let features = model.manifest.features.iter().enumerate();
            features.map(|(f, name)| tensor(name, named::datatype(model, f), 1)).collect()
        } else {
            vec![tensor(INPUT, "FP32", model.scorer.inputs())]
        },
        outputs: match model.manifest.task() {
            Task::Regression => vec![tensor(PREDICTION, "FP32", 1)],
            Task::Classification => {
                vec![tensor(PROBABILITIES, "FP32", model.scorer.outputs()), tensor(PREDICTION, "INT64", 1)]
            }
        },
    }
}

/// A model's features in row order, each with its categories (empty for a number).
pub type Features = Vec<(String, Vec<String>)>;

/// Model `name`'s metadata with, from the same version, its features in row
/// order, each with its categories (empty for a number): what HTTP metadata
/// adds as input parameters, so a caller with curl alone can build a row.
pub fn model_metadata_and_features(
    serving: &Serving,
    name: &str,
    version: &str,
) -> Result<(oip::ModelMetadataResponse, Features), ServeError> {
    let map = serving.models()?;
    let model = resolve(&map, name, version)?;
    let categories = |f: usize| model.scorer.categories(f).map(|c| c.values().to_vec()).unwrap_or_default();
    let features = model.manifest.features.iter().enumerate().map(|(f, name)| (name.clone(), categories(f))).collect();
    Ok((metadata_of(&map, model), features))
}

/// Model `name`'s configuration as Triton's model configuration extension describes it.
pub fn model_config(serving: &Serving, name: &str, version: &str) -> Result<oip::ModelConfig, ServeError> {
    let map = serving.models()?;
    let model = resolve(&map, name, version)?;
    Ok(oip::ModelConfig {
        name: model.segment.clone(),
        platform: PLATFORM.to_string(),
        backend: PLATFORM.to_string(),
        max_batch_size: i32::try_from(serving.limits.max_rows).unwrap_or(i32::MAX),
        input: if model.scorer.inputs_by_name() {
            let features = model.manifest.features.iter().enumerate();
            features
                .map(|(f, name)| oip::ModelInput {
                    name: name.clone(),
                    data_type: match named::datatype(model, f) {
                        "BYTES" => oip::DataType::TypeString as i32,
                        _ => oip::DataType::TypeFp32 as i32,
                    },
                    dims: vec![1],
                    ..Default::default()
                })
                .collect()
        } else {
            vec![oip::ModelInput {
                name: INPUT.to_string(),
                data_type: oip::DataType::TypeFp32 as i32,
                dims: vec![model.scorer.inputs() as i64],
                ..Default::default()
            }]
        },
        output: match model.manifest.task() {
            Task::Regression => vec![output(PREDICTION, oip::DataType::TypeFp32, 1)],
            Task::Classification => vec![
                output(PROBABILITIES, oip::DataType::TypeFp32, model.scorer.outputs()),
                output(PREDICTION, oip::DataType::TypeInt64, 1),
            ],
        },
        dynamic_batching: {
            let policy = model.batcher.policy();
            policy.enabled.then(|| oip::ModelDynamicBatching {
                preferred_batch_size: Vec::new(),
                max_queue_delay_microseconds: policy.max_queue_delay.as_micros() as u64,
                preserve_ordering: true,
            })
        },
        model_transaction_policy: Some(oip::ModelTransactionPolicy { decoupled: false }),
    })
}

/// A model name and version string → the model. The version is "" (the
/// newest) or a version number.
/// One output of a model's configuration.
fn output(name: &str, data_type: oip::DataType, width: usize) -> oip::ModelOutput {
    oip::ModelOutput {
        name: name.to_string(),
        data_type: data_type as i32,
        dims: vec![width as i64],
        ..Default::default()
    }
}

fn resolve<'a>(map: &'a Registry, name: &str, version: &str) -> Result<&'a Arc<ServedModel>, ServeError> {
    map.resolve(name, version_number(name, version)?)
}

/// A version string as the registry numbers it: "" (the newest) is 0.
fn version_number(name: &str, version: &str) -> Result<u64, ServeError> {
    match version {
        "" => Ok(0),
        text => text.parse::<u64>().ok().filter(|v| *v > 0).ok_or_else(|| {
            ServeError::NotFound(format!(
                "model `{}` has no version `{}`: versions are positive integers",
                echo(name),
                echo(text)
            ))
        }),
    }
}

/// One ModelInfer request through the core; the outputs as raw bytes
/// (`raw_output_contents`) when `raw`, typed contents otherwise.
pub async fn infer(
    serving: &Serving,
    request: oip::ModelInferRequest,
    call: &Call,
    raw: bool,
) -> Result<oip::ModelInferResponse, ServeError> {
    serving.check_message_size(request.encoded_len())?;
    let version = version_number(&request.model_name, &request.model_version)?;
    let explain = explain(&request)?;
    let inference = call.inference(&request.model_name, version, explain);
    let mut outputs = Vec::new();
    let decode = |model: &LoadedModel| {
        let rows = decode_input(model, &request, serving.limits.max_rows)?;
        outputs = requested_outputs(model, &request, explain > 0)?;
        Ok(rows)
    };
    let Answer { model, scores, explanation } = serving.engine.infer(&inference, call, decode).await?;
    Ok(encode_outputs(&model, request.id, &scores, explanation.as_ref(), &outputs, raw))
}

/// The reasons the request's `explain` parameter asks for (0 when absent).
fn explain(request: &oip::ModelInferRequest) -> Result<u32, ServeError> {
    use oip::infer_parameter::ParameterChoice;
    let k = match request.parameters.get(EXPLAIN).and_then(|p| p.parameter_choice.as_ref()) {
        None => Some(0),
        Some(ParameterChoice::Int64Param(k)) => u32::try_from(*k).ok(),
        Some(ParameterChoice::Uint64Param(k)) => u32::try_from(*k).ok(),
        Some(_) => None,
    };
    k.ok_or_else(|| {
        ServeError::invalid(
            format!("parameters[{EXPLAIN}]"),
            "must be an integer of at least 0: the number of reasons wanted per row (0: none)",
        )
    })
}
