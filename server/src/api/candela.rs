//! `candela.v1.Inference`: translates protobuf requests into calls on the
//! serving core (routing, validation, inference) and results back. No model
//! logic lives here.

use super::serving::Serving;
use super::{ResponseStream, message_stream};
use crate::error::ServeError;
use crate::inference::{self, Call, RowsRequest, Scores};
use crate::repository::Model;
use crate::routing::ModelMap;
use crate::validation::{RowsField, check_rows};
use candela::v1::{self, inference_server::Inference};
use prost::Message;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The service name in metrics.
const SERVICE: &str = "candela.v1.Inference";

/// The `candela.v1.Inference` service.
pub struct CandelaApi {
    serving: Arc<Serving>,
}

impl CandelaApi {
    pub fn new(serving: Arc<Serving>) -> CandelaApi {
        CandelaApi { serving }
    }
}

#[tonic::async_trait]
impl Inference for CandelaApi {
    async fn predict(&self, request: Request<v1::PredictRequest>) -> Result<Response<v1::PredictResponse>, Status> {
        let call = self.serving.call(request.metadata(), SERVICE, "Predict");
        let result = async {
            let _permit = self.serving.admitted(request.extensions())?;
            let request = request.into_inner();
            self.serving.check_message_size(request.encoded_len())?;
            let model = self.serving.models()?.resolve(&request.segment, request.version)?.clone();
            let rows = RowsRequest {
                field: RowsField::Features,
                feature_count: request.features.len(),
                values: request.features,
                max_rows: 1,
            };
            let scores = inference::serve(&model, rows, &call).await?;
            let prediction = predictions(&model, &scores).pop();
            tracing::debug!(request = call.log_id, segment = model.segment, version = model.version, "predict");
            Ok(v1::PredictResponse { prediction, model: Some(model_ref(&model)), request_id: call.request_id.clone() })
        }
        .await;
        self.serving.finish(&call, result).map(Response::new)
    }

    async fn batch_predict(
        &self,
        request: Request<v1::BatchPredictRequest>,
    ) -> Result<Response<v1::BatchPredictResponse>, Status> {
        let call = self.serving.call(request.metadata(), SERVICE, "BatchPredict");
        let result = async {
            let _permit = self.serving.admitted(request.extensions())?;
            let request = request.into_inner();
            self.serving.check_message_size(request.encoded_len())?;
            let (model, rows) = batch_rows(&self.serving, &request.segment, request.version, request.rows)?;
            let scores = inference::serve(&model, rows, &call).await?;
            let predictions = predictions(&model, &scores);
            let rows = predictions.len();
            tracing::debug!(
                request = call.log_id,
                segment = model.segment,
                version = model.version,
                rows,
                "batch_predict"
            );
            Ok(v1::BatchPredictResponse {
                predictions,
                model: Some(model_ref(&model)),
                request_id: call.request_id.clone(),
            })
        }
        .await;
        self.serving.finish(&call, result).map(Response::new)
    }

    type BatchPredictStreamStream = ResponseStream<v1::BatchPredictChunk>;

    async fn batch_predict_stream(
        &self,
        request: Request<v1::BatchPredictRequest>,
    ) -> Result<Response<Self::BatchPredictStreamStream>, Status> {
        let call = self.serving.call(request.metadata(), SERVICE, "BatchPredictStream");
        let started = async {
            let permit = self.serving.admitted(request.extensions())?;
            let request = request.into_inner();
            self.serving.check_message_size(request.encoded_len())?;
            let (model, rows) = batch_rows(&self.serving, &request.segment, request.version, request.rows)?;
            call.routed(&model);
            // The whole batch is checked before the first chunk, so a bad row
            // ends the call with a status rather than halfway through the results.
            if let Err(error) = check_rows(&model, rows.field, rows.feature_count, &rows.values, rows.max_rows) {
                model.stats.record_request(call.received.elapsed(), false);
                return Err(error);
            }
            Ok((permit, model, rows))
        }
        .await;
        let (permit, model, rows) = match started {
            Ok(started) => started,
            Err(error) => return Err(self.serving.refuse(&call, error)),
        };
        let chunk_values = self.serving.limits.stream_chunk_rows * model.network.inputs();
        let serving = self.serving.clone();
        // Room for every chunk (at most --max-rows rows): scoring never waits
        // for the reader, so the call holds its --max-concurrent-requests slot
        // only while it computes, and a caller that never reads holds none.
        let chunks = rows.values.len().div_ceil(chunk_values).max(1);
        let (sender, receiver) = mpsc::channel(chunks + 1);
        tokio::spawn(async move {
            let _permit = permit;
            let mut outcome = Ok(());
            for (index, chunk) in rows.values.chunks(chunk_values).enumerate() {
                let first_row = (index * chunk_values / model.network.inputs()) as u64;
                let scored =
                    inference::score(model.clone(), chunk.to_vec(), RowsField::Rows, first_row as usize, &call).await;
                let item = scored.map(|scores| v1::BatchPredictChunk {
                    first_row,
                    predictions: predictions(&model, &scores),
                    model: Some(model_ref(&model)),
                    request_id: call.request_id.clone(),
                });
                let (item, failed) = match item {
                    Ok(chunk) => (Ok(chunk), None),
                    // The same Status, details included, as a unary call would get.
                    Err(error) => (Err(Status::from(error.clone())), Some(error)),
                };
                if let Some(error) = failed {
                    let _ = sender.send(item).await;
                    outcome = Err(error);
                    break;
                }
                if sender.send(item).await.is_err() {
                    outcome = Err(ServeError::Unavailable("the caller went away mid-stream".into()));
                    break;
                }
            }
            model.stats.record_request(call.received.elapsed(), outcome.is_ok());
            let _ = serving.finish(&call, outcome);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    type StreamPredictStream = ResponseStream<v1::StreamPredictResponse>;

    async fn stream_predict(
        &self,
        request: Request<Streaming<v1::StreamPredictRequest>>,
    ) -> Result<Response<Self::StreamPredictStream>, Status> {
        let stream = self.serving.call(request.metadata(), SERVICE, "StreamPredict");
        let answers =
            message_stream(&self.serving, stream, request.into_inner(), |serving, message, call| async move {
                score_stream_message(&serving, message, &call).await
            });
        Ok(Response::new(answers))
    }

    async fn list_models(
        &self,
        _request: Request<v1::ListModelsRequest>,
    ) -> Result<Response<v1::ListModelsResponse>, Status> {
        let map = self.serving.models()?;
        Ok(Response::new(v1::ListModelsResponse {
            models: map.models().map(|m| model_info(map, m)).collect(),
            default_segment: map.default_segment().unwrap_or_default().to_string(),
        }))
    }

    async fn get_model(&self, request: Request<v1::GetModelRequest>) -> Result<Response<v1::ModelInfo>, Status> {
        let request = request.into_inner();
        let map = self.serving.models()?;
        let model = map.resolve(&request.segment, request.version)?;
        Ok(Response::new(model_info(map, model)))
    }
}

/// Routes a batch request and unpacks its rows for the core.
fn batch_rows(
    serving: &Serving,
    segment: &str,
    version: u64,
    rows: Option<v1::Rows>,
) -> Result<(Arc<Model>, RowsRequest), ServeError> {
    let model = serving.models()?.resolve(segment, version)?.clone();
    let rows = rows.ok_or_else(|| {
        ServeError::invalid(
            "rows",
            format!("is required: send `feature_count` ({}) and the row-major `values`", model.network.inputs()),
        )
    })?;
    let rows = RowsRequest {
        field: RowsField::Rows,
        feature_count: rows.feature_count as usize,
        values: rows.values,
        max_rows: serving.limits.max_rows,
    };
    Ok((model, rows))
}

/// Scores one StreamPredict message; its failure becomes that message's error response.
async fn score_stream_message(
    serving: &Serving,
    message: v1::StreamPredictRequest,
    call: &Call,
) -> v1::StreamPredictResponse {
    let id = message.id.clone();
    let outcome = async {
        let _permit = serving.admit()?;
        serving.check_message_size(message.encoded_len())?;
        let (model, rows) = batch_rows(serving, &message.segment, message.version, message.rows)?;
        let scores = inference::serve(&model, rows, call).await?;
        Ok::<_, ServeError>(v1::BatchResult {
            predictions: predictions(&model, &scores),
            model: Some(model_ref(&model)),
        })
    }
    .await;
    call.finished(outcome.as_ref().err());
    let outcome = match outcome {
        Ok(result) => v1::stream_predict_response::Outcome::Result(result),
        Err(error) => {
            tracing::debug!(request = call.log_id, %error, "stream batch refused");
            v1::stream_predict_response::Outcome::Error(super::status::batch_error(&error))
        }
    };
    v1::StreamPredictResponse { id, outcome: Some(outcome) }
}

/// Each row's prediction: the most probable class, its label, all probabilities.
fn predictions(model: &Model, scores: &Scores) -> Vec<v1::Prediction> {
    scores
        .rows()
        .map(|row| {
            let class_index = Scores::class_of(row);
            v1::Prediction {
                class_index: class_index as u32,
                label: model.manifest.labels[class_index].clone(),
                probabilities: row.to_vec(),
            }
        })
        .collect()
}

fn model_ref(model: &Model) -> v1::ModelRef {
    v1::ModelRef { segment: model.segment.clone(), version: model.version }
}

fn model_info(map: &ModelMap, model: &Model) -> v1::ModelInfo {
    let manifest = &model.manifest;
    v1::ModelInfo {
        segment: model.segment.clone(),
        version: model.version,
        is_latest: map.is_latest(model),
        features: manifest.features.clone(),
        labels: manifest.labels.clone(),
        dtype: manifest.dtype.as_str().to_string(),
        layers: model.network.description().to_vec(),
        provenance: Some(v1::Provenance {
            created: manifest.provenance.created.clone(),
            training_data: manifest.provenance.training_data.clone(),
            metrics: manifest.provenance.metrics.clone().into_iter().collect(),
            notes: manifest.provenance.notes.clone(),
        }),
        device: model.device.clone(),
    }
}
