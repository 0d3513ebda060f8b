//! `inference.GRPCInferenceService`: the Open Inference Protocol (KServe V2)
//! with the Triton extensions Triton's clients and perf_analyzer use. A thin
//! translation onto the same core as `candela.v1`: a model name is a segment,
//! a version string pins a version ("" = the newest), and the one input tensor
//! `features` `[batch, n_features]` becomes the rows the core validates and
//! scores. Outputs are `probabilities` (FP32 `[batch, n_classes]`) and
//! `prediction` (INT64 `[batch, 1]`, the most probable class index).

use super::call::Call;
use super::serving::Serving;
use super::streams::{ResponseStream, message_stream};
use crate::core::error::{ServeError, echo};
use crate::core::live::State;
use crate::core::registry::Registry;
use crate::core::scores::Scores;
use crate::core::scoring::Fields;
use crate::core::scoring::{self, Rows};
use crate::core::served::ServedModel;
use crate::model::LoadedModel;
use bytes::Bytes;
use candela::inference::{self as oip, grpc_inference_service_server::GrpcInferenceService};
use oip::infer_parameter::ParameterChoice;
use oip::model_infer_request::InferInputTensor;
use oip::model_infer_response::InferOutputTensor;
use oip::model_metadata_response::TensorMetadata;
use prost::Message;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// The service name in metrics.
const SERVICE: &str = "inference.GRPCInferenceService";

/// The input tensor every Candela model takes.
pub const INPUT: &str = "features";
/// Output: one probability per class, in label order.
pub const PROBABILITIES: &str = "probabilities";
/// Output: the index of the most probable class.
pub const PREDICTION: &str = "prediction";
/// ModelMetadata's `platform` and ModelConfig's `platform`/`backend`.
pub const PLATFORM: &str = "candela";
/// Protocol extensions this server really implements (ServerMetadata).
pub const EXTENSIONS: &[&str] = &["classification", "model_configuration", "model_repository", "statistics"];
/// The requested-output parameter of Triton's classification extension.
const CLASSIFICATION: &str = "classification";

/// The Open Inference Protocol service.
pub struct OpenInferenceApi {
    serving: Arc<Serving>,
}

impl OpenInferenceApi {
    pub fn new(serving: Arc<Serving>) -> OpenInferenceApi {
        OpenInferenceApi { serving }
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for OpenInferenceApi {
    async fn server_live(
        &self,
        _request: Request<oip::ServerLiveRequest>,
    ) -> Result<Response<oip::ServerLiveResponse>, Status> {
        Ok(Response::new(oip::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<oip::ServerReadyRequest>,
    ) -> Result<Response<oip::ServerReadyResponse>, Status> {
        Ok(Response::new(oip::ServerReadyResponse { ready: self.serving.is_ready() }))
    }

    async fn model_ready(
        &self,
        request: Request<oip::ModelReadyRequest>,
    ) -> Result<Response<oip::ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let ready = model_ready(&self.serving, &request.name, &request.version)?;
        Ok(Response::new(oip::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _request: Request<oip::ServerMetadataRequest>,
    ) -> Result<Response<oip::ServerMetadataResponse>, Status> {
        Ok(Response::new(oip::ServerMetadataResponse {
            name: PLATFORM.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<oip::ModelMetadataRequest>,
    ) -> Result<Response<oip::ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(model_metadata(&self.serving, &request.name, &request.version)?))
    }

    async fn model_infer(
        &self,
        request: Request<oip::ModelInferRequest>,
    ) -> Result<Response<oip::ModelInferResponse>, Status> {
        let call = self.serving.call(request.metadata().as_ref(), SERVICE, "ModelInfer");
        let result = async {
            let _permit = self.serving.admitted(request.extensions())?;
            let request = request.into_inner();
            let raw = !request.raw_input_contents.is_empty();
            infer(&self.serving, request, &call, raw).await
        }
        .await;
        call.finish(result).map(Response::new)
    }

    type ModelStreamInferStream = ResponseStream<oip::ModelStreamInferResponse>;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<oip::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let stream = self.serving.call(request.metadata().as_ref(), SERVICE, "ModelStreamInfer");
        let answers =
            message_stream(&self.serving, stream, request.into_inner(), |serving, message, call| async move {
                let call = call.named(&message.id);
                let result = async {
                    let _permit = serving.admit()?;
                    let raw = !message.raw_input_contents.is_empty();
                    infer(&serving, message, &call, raw).await
                }
                .await;
                match call.finished(result) {
                    Ok(response) => {
                        oip::ModelStreamInferResponse { error_message: String::new(), infer_response: Some(response) }
                    }
                    Err(error) => {
                        oip::ModelStreamInferResponse { error_message: error.to_string(), infer_response: None }
                    }
                }
            });
        Ok(Response::new(answers))
    }

    async fn model_config(
        &self,
        request: Request<oip::ModelConfigRequest>,
    ) -> Result<Response<oip::ModelConfigResponse>, Status> {
        let request = request.into_inner();
        let config = model_config(&self.serving, &request.name, &request.version)?;
        Ok(Response::new(oip::ModelConfigResponse { config: Some(config) }))
    }

    async fn model_statistics(
        &self,
        request: Request<oip::ModelStatisticsRequest>,
    ) -> Result<Response<oip::ModelStatisticsResponse>, Status> {
        let request = request.into_inner();
        let map = self.serving.models()?;
        let models: Vec<&Arc<ServedModel>> = match (request.name.as_str(), request.version.as_str()) {
            ("", _) => map.models().collect(),
            (name, "") => {
                let segment = &resolve(&map, name, "")?.segment;
                map.models().filter(|m| &m.segment == segment).collect()
            }
            (name, version) => vec![resolve(&map, name, version)?],
        };
        Ok(Response::new(oip::ModelStatisticsResponse {
            model_stats: models.into_iter().map(|m| statistics(m)).collect(),
        }))
    }

    async fn repository_index(
        &self,
        request: Request<oip::RepositoryIndexRequest>,
    ) -> Result<Response<oip::RepositoryIndexResponse>, Status> {
        let models = repository_index(&self.serving, request.into_inner().ready)?;
        Ok(Response::new(oip::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<oip::RepositoryModelLoadRequest>,
    ) -> Result<Response<oip::RepositoryModelLoadResponse>, Status> {
        load(&self.serving, request.into_inner().model_name).await?;
        Ok(Response::new(oip::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<oip::RepositoryModelUnloadRequest>,
    ) -> Result<Response<oip::RepositoryModelUnloadResponse>, Status> {
        unload(&self.serving, request.into_inner().model_name).await?;
        Ok(Response::new(oip::RepositoryModelUnloadResponse {}))
    }
}

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
    let repository = serving.repository()?.clone();
    tokio::task::spawn_blocking(move || match name.as_str() {
        "" => Ok(repository.reload()),
        segment => repository.load(segment),
    })
    .await
    .map_err(|_| ServeError::Internal("the repository reload failed; the served models are unchanged".into()))?
    .map(|_| ())
}

/// Stops serving model `name` until it is loaded again; its calls in flight finish.
pub async fn unload(serving: &Serving, name: String) -> Result<(), ServeError> {
    let repository = serving.repository()?.clone();
    tokio::task::spawn_blocking(move || repository.unload(&name))
        .await
        .map_err(|_| ServeError::Internal("the unload failed; the served models are unchanged".into()))?
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
    let model = resolve(&map, name, version)?;
    let tensor = |name: &str, datatype: &str, width: usize| TensorMetadata {
        name: name.to_string(),
        datatype: datatype.to_string(),
        shape: vec![-1, width as i64],
    };
    Ok(oip::ModelMetadataResponse {
        name: model.segment.clone(),
        versions: map.versions(&model.segment).map(|v| v.to_string()).collect(),
        platform: PLATFORM.to_string(),
        inputs: vec![tensor(INPUT, "FP32", model.scorer.inputs())],
        outputs: vec![tensor(PROBABILITIES, "FP32", model.scorer.classes()), tensor(PREDICTION, "INT64", 1)],
    })
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
        input: vec![oip::ModelInput {
            name: INPUT.to_string(),
            data_type: oip::DataType::TypeFp32 as i32,
            dims: vec![model.scorer.inputs() as i64],
            ..Default::default()
        }],
        output: vec![
            oip::ModelOutput {
                name: PROBABILITIES.to_string(),
                data_type: oip::DataType::TypeFp32 as i32,
                dims: vec![model.scorer.classes() as i64],
                ..Default::default()
            },
            oip::ModelOutput {
                name: PREDICTION.to_string(),
                data_type: oip::DataType::TypeInt64 as i32,
                dims: vec![1],
                ..Default::default()
            },
        ],
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
    let route = serving.route(call, &request.model_name, version)?;
    let model = &route.model;
    call.routed(model);
    let decoded = decode_input(model, &request, serving.limits.max_rows).and_then(|rows| {
        let outputs = requested_outputs(&request)?;
        Ok((rows, outputs))
    });
    let (rows, outputs) = decoded.or_else(|error| scoring::recorded(model, call.deadline, Err(error)))?;
    let scores = call.score(&route, rows).await?;
    Ok(encode_outputs(model, request.id, &scores, &outputs, raw))
}

/// The request's one input tensor as rows for the core (public for the fuzz
/// targets in `fuzz/`).
pub fn decode_input(
    model: &LoadedModel,
    request: &oip::ModelInferRequest,
    max_rows: usize,
) -> Result<Rows, ServeError> {
    let features = model.scorer.inputs();
    let signature = format!("model `{}` takes one input `{INPUT}`, FP32 [batch, {features}]", model.segment);
    let [input] = request.inputs.as_slice() else {
        return Err(ServeError::invalid("inputs", format!("has {} tensors; {signature}", request.inputs.len())));
    };
    if input.name != INPUT {
        return Err(ServeError::invalid("inputs[0].name", format!("is `{}`; {signature}", echo(&input.name))));
    }
    let [rows, columns] = input.shape.as_slice() else {
        return Err(ServeError::invalid("inputs[0].shape", format!("is {:?}; {signature}", input.shape)));
    };
    let (Ok(rows), Ok(columns)) = (usize::try_from(*rows), usize::try_from(*columns)) else {
        return Err(ServeError::invalid(
            "inputs[0].shape",
            format!("is {:?}: dimensions cannot be negative", input.shape),
        ));
    };
    let Some(elements) = rows.checked_mul(columns) else {
        return Err(ServeError::invalid("inputs[0].shape", format!("is {:?}: too large", input.shape)));
    };
    let values = if request.raw_input_contents.is_empty() {
        typed_values(input, elements)?
    } else {
        if input.contents.as_ref().is_some_and(has_contents) {
            return Err(ServeError::invalid(
                "inputs[0].contents",
                "is set while raw_input_contents is used too; send the tensor one way or the other",
            ));
        }
        let [raw] = request.raw_input_contents.as_slice() else {
            return Err(ServeError::invalid(
                "raw_input_contents",
                format!("has {} entries; expected one per input (1)", request.raw_input_contents.len()),
            ));
        };
        raw_values(&input.datatype, raw, elements, &input.shape)?
    };
    Ok(Rows { fields: &InputFields, width: columns, values, max_rows })
}

/// Typed contents → f32 values. FP32 travels as `fp32_contents`, FP64 as `fp64_contents`.
fn typed_values(input: &InferInputTensor, elements: usize) -> Result<Vec<f32>, ServeError> {
    let contents = input.contents.clone().unwrap_or_default();
    let (field, values): (&str, Vec<f32>) = match input.datatype.as_str() {
        "FP32" => ("fp32_contents", contents.fp32_contents),
        "FP64" => ("fp64_contents", contents.fp64_contents.into_iter().map(|v| v as f32).collect()),
        "FP16" | "BF16" => {
            return Err(ServeError::invalid(
                "inputs[0].datatype",
                format!("is {}, which travels only in raw_input_contents (little-endian)", echo(&input.datatype)),
            ));
        }
        other => return Err(unsupported_datatype(other)),
    };
    if values.len() != elements {
        return Err(ServeError::invalid(
            format!("inputs[0].contents.{field}"),
            format!("has {} values; shape {:?} needs {elements}", values.len(), input.shape),
        ));
    }
    Ok(values)
}

/// Raw little-endian bytes → f32 values, for FP32, FP64, FP16 and BF16.
fn raw_values(datatype: &str, raw: &[u8], elements: usize, shape: &[i64]) -> Result<Vec<f32>, ServeError> {
    let width = match datatype {
        "FP32" => 4,
        "FP64" => 8,
        "FP16" | "BF16" => 2,
        other => return Err(unsupported_datatype(other)),
    };
    if elements.checked_mul(width) != Some(raw.len()) {
        return Err(ServeError::invalid(
            "raw_input_contents[0]",
            format!("has {} bytes; {datatype} shape {shape:?} needs {elements} × {width}", raw.len()),
        ));
    }
    let values = match datatype {
        "FP32" => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        "FP64" => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("chunks of 8; this is a bug")) as f32)
            .collect(),
        "FP16" => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
    };
    Ok(values)
}

fn unsupported_datatype(datatype: &str) -> ServeError {
    ServeError::invalid(
        "inputs[0].datatype",
        format!("is `{}`; send FP32 (or FP64, or FP16/BF16 as raw_input_contents)", echo(datatype)),
    )
}

fn has_contents(c: &oip::InferTensorContents) -> bool {
    !(c.bool_contents.is_empty()
        && c.int_contents.is_empty()
        && c.int64_contents.is_empty()
        && c.uint_contents.is_empty()
        && c.uint64_contents.is_empty()
        && c.fp32_contents.is_empty()
        && c.fp64_contents.is_empty()
        && c.bytes_contents.is_empty())
}

/// One output a request wants.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Requested {
    name: &'static str,
    /// Triton's classification extension: the top `k` classes as BYTES
    /// `"<probability>:<index>:<label>"` instead of the probabilities.
    top: Option<usize>,
}

/// The outputs a request wants, in its order; none listed means all.
fn requested_outputs(request: &oip::ModelInferRequest) -> Result<Vec<Requested>, ServeError> {
    if request.outputs.is_empty() {
        return Ok(vec![Requested { name: PROBABILITIES, top: None }, Requested { name: PREDICTION, top: None }]);
    }
    request
        .outputs
        .iter()
        .enumerate()
        .map(|(i, output)| {
            let name = match output.name.as_str() {
                PROBABILITIES => PROBABILITIES,
                PREDICTION => PREDICTION,
                other => {
                    return Err(ServeError::invalid(
                        format!("outputs[{i}].name"),
                        format!("is `{}`; the model's outputs are `{PROBABILITIES}` and `{PREDICTION}`", echo(other)),
                    ));
                }
            };
            let field = || format!("outputs[{i}].parameters[{CLASSIFICATION}]");
            let top = match output.parameters.get(CLASSIFICATION).and_then(|p| p.parameter_choice.as_ref()) {
                None => None,
                Some(_) if name == PREDICTION => {
                    return Err(ServeError::invalid(
                        field(),
                        format!("applies to `{PROBABILITIES}`: classify the probabilities, not the predicted index"),
                    ));
                }
                Some(ParameterChoice::Int64Param(k)) if *k >= 1 => Some(*k as usize),
                Some(ParameterChoice::Uint64Param(k)) if *k >= 1 => Some(*k as usize),
                Some(other) => {
                    return Err(ServeError::invalid(
                        field(),
                        format!("is {other:?}; send the number of top classes wanted as an integer of at least 1"),
                    ));
                }
            };
            Ok(Requested { name, top })
        })
        .collect()
}

/// The scores as the requested output tensors, raw when the request was raw.
fn encode_outputs(
    model: &LoadedModel,
    id: String,
    scores: &Scores,
    outputs: &[Requested],
    raw: bool,
) -> oip::ModelInferResponse {
    let rows = scores.rows().len() as i64;
    let mut tensors = Vec::with_capacity(outputs.len());
    let mut raw_contents = Vec::new();
    for output in outputs {
        let (datatype, shape, contents) = match *output {
            Requested { top: Some(k), .. } => {
                let top = classified(scores, k.min(scores.classes), &model.manifest.labels);
                let shape = vec![rows, k.min(scores.classes) as i64];
                let contents = if raw {
                    raw_contents.push(length_prefixed(&top));
                    None
                } else {
                    Some(oip::InferTensorContents { bytes_contents: top, ..Default::default() })
                };
                ("BYTES", shape, contents)
            }
            Requested { name: PROBABILITIES, .. } => {
                let contents = if raw {
                    raw_contents.push(little_endian(&scores.probabilities, f32::to_le_bytes));
                    None
                } else {
                    Some(oip::InferTensorContents { fp32_contents: scores.probabilities.clone(), ..Default::default() })
                };
                ("FP32", vec![rows, scores.classes as i64], contents)
            }
            Requested { .. } => {
                let classes: Vec<i64> = scores.rows().map(|row| Scores::class_of(row) as i64).collect();
                let contents = if raw {
                    raw_contents.push(little_endian(&classes, i64::to_le_bytes));
                    None
                } else {
                    Some(oip::InferTensorContents { int64_contents: classes, ..Default::default() })
                };
                ("INT64", vec![rows, 1], contents)
            }
        };
        tensors.push(InferOutputTensor {
            name: output.name.to_string(),
            datatype: datatype.to_string(),
            shape,
            parameters: Default::default(),
            contents,
        });
    }
    oip::ModelInferResponse {
        model_name: model.segment.clone(),
        model_version: model.version.to_string(),
        id,
        parameters: Default::default(),
        outputs: tensors,
        raw_output_contents: raw_contents,
    }
}

/// Each row's `k` most probable classes, most probable first (the lower
/// index on a tie), as Triton writes them: `"<probability>:<index>:<label>"`.
fn classified(scores: &Scores, k: usize, labels: &[String]) -> Vec<Vec<u8>> {
    let mut top = Vec::with_capacity(scores.rows().len() * k);
    for row in scores.rows() {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        top.extend(order[..k].iter().map(|&i| format!("{:.6}:{i}:{}", row[i], labels[i]).into_bytes()));
    }
    top
}

/// BYTES elements as a raw tensor: each a 4-byte little-endian length, then its bytes.
pub fn length_prefixed(elements: &[Vec<u8>]) -> Bytes {
    let mut bytes = Vec::with_capacity(elements.iter().map(|e| e.len() + 4).sum());
    for element in elements {
        bytes.extend_from_slice(&(element.len() as u32).to_le_bytes());
        bytes.extend_from_slice(element);
    }
    Bytes::from(bytes)
}

/// Values as the raw little-endian bytes of a tensor's contents.
pub fn little_endian<T: Copy, const N: usize>(values: &[T], to_bytes: fn(T) -> [u8; N]) -> Bytes {
    let mut bytes = Vec::with_capacity(values.len() * N);
    for value in values {
        bytes.extend_from_slice(&to_bytes(*value));
    }
    Bytes::from(bytes)
}

/// A model's statistics in the protocol's form.
fn statistics(model: &ServedModel) -> oip::ModelStatistics {
    let stats = &model.stats;
    let duration = |(count, ns): (u64, u64)| Some(oip::StatisticDuration { count, ns });
    let batch_stats = stats
        .by_batch_size()
        .into_iter()
        .map(|(size, c)| oip::InferBatchStatistics {
            batch_size: size,
            compute_input: duration((c.executions, c.input_ns)),
            compute_infer: duration((c.executions, c.infer_ns)),
            compute_output: duration((c.executions, c.output_ns)),
        })
        .collect();
    oip::ModelStatistics {
        name: model.segment.clone(),
        version: model.version.to_string(),
        last_inference: stats.last_inference_ms(),
        inference_count: stats.rows(),
        execution_count: stats.executions(),
        inference_stats: Some(oip::InferStatistics {
            success: duration(stats.success.get()),
            fail: duration(stats.fail.get()),
            queue: duration(stats.queue.get()),
            compute_input: duration(stats.compute_input.get()),
            compute_infer: duration(stats.compute_infer.get()),
            compute_output: duration(stats.compute_output.get()),
            cache_hit: None,
            cache_miss: None,
        }),
        batch_stats,
        memory_usage: Vec::new(),
    }
}

/// How the protocol names the parts of the input tensor, in violations.
pub struct InputFields;

impl Fields for InputFields {
    fn width(&self, declared: usize) -> (&'static str, String) {
        ("inputs[0].shape", format!("has {declared} columns"))
    }

    fn values(&self) -> &'static str {
        "inputs[0]"
    }

    fn row(&self, row: usize) -> String {
        format!("inputs[0][{row}]")
    }

    fn cell(&self, row: usize, col: usize) -> String {
        format!("inputs[0][{row}][{col}]")
    }
}
