//! `candela.v1.Inference`: translates protobuf requests into calls on the
//! serving core (routing, validation, inference) and results back. No model
//! logic lives here.

use super::explanations;
use super::streams::{ResponseStream, message_stream};
use crate::api::call::Call;
use crate::api::serving::Serving;
use crate::api::{feedback, gate};
use crate::core::cells::{self, Cell};
use crate::core::engine::{Answer, Chunks};
use crate::core::error::ServeError;
use crate::core::explaining::Explanation;
use crate::core::outcomes::Joined;
use crate::core::registry::Registry;
use crate::core::scores::Scores;
use crate::core::scoring::{Fields, Rows};
use crate::model::LoadedModel;
use crate::model::manifest::Task;
use crate::model::scorer::predicted_class;
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
        let call = self.serving.call(request.metadata().as_ref(), SERVICE, "Predict");
        let result = async {
            let _permit = self.serving.admitted(request.extensions())?;
            let request = request.into_inner();
            self.serving.check_message_size(request.encoded_len())?;
            let (mut features, text) = (request.features, request.text);
            let rows = |model: &LoadedModel| {
                text_columns(model, "", features.len(), &mut features, &text)?;
                Ok(Rows { fields: &RowsField::Features, width: features.len(), values: features, max_rows: 1 })
            };
            let inference = call.inference(&request.segment, request.version, request.explain);
            let Answer { model, scores, explanation } = self.serving.engine.infer(&inference, &call, rows).await?;
            let model = &model;
            let prediction = predictions(model, &scores, explanation.as_ref()).pop();
            tracing::debug!(request = call.log_id, segment = model.segment, version = model.version, "predict");
            Ok(v1::PredictResponse { prediction, model: Some(model_ref(model)), request_id: call.request_id.clone() })
        }
        .await;
        call.finish(result).map(Response::new)
    }

    async fn batch_predict(
        &self,
        request: Request<v1::BatchPredictRequest>,
    ) -> Result<Response<v1::BatchPredictResponse>, Status> {
        let call = self.serving.call(request.metadata().as_ref(), SERVICE, "BatchPredict");
        let result = async {
            let _permit = self.serving.admitted(request.extensions())?;
            let request = request.into_inner();
            self.serving.check_message_size(request.encoded_len())?;
            let inference = call.inference(&request.segment, request.version, request.explain);
            let max_rows = self.serving.limits.max_rows;
            let decode = |model: &LoadedModel| batch_rows(model, request.rows, max_rows);
            let Answer { model, scores, explanation } = self.serving.engine.infer(&inference, &call, decode).await?;
            let model = &model;
            let predictions = predictions(model, &scores, explanation.as_ref());
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
                model: Some(model_ref(model)),
                request_id: call.request_id.clone(),
            })
        }
        .await;
        call.finish(result).map(Response::new)
    }

    type BatchPredictStreamStream = ResponseStream<v1::BatchPredictChunk>;

    async fn batch_predict_stream(
        &self,
        request: Request<v1::BatchPredictRequest>,
    ) -> Result<Response<Self::BatchPredictStreamStream>, Status> {
        let call = self.serving.call(request.metadata().as_ref(), SERVICE, "BatchPredictStream");
        let started = async {
            let permit = self.serving.admitted(request.extensions())?;
            let request = request.into_inner();
            self.serving.check_message_size(request.encoded_len())?;
            let inference = call.inference(&request.segment, request.version, request.explain);
            let (max_rows, chunk_rows) = (self.serving.limits.max_rows, self.serving.limits.stream_chunk_rows);
            let decode = |model: &LoadedModel| batch_rows(model, request.rows, max_rows);
            // The whole batch is checked before the first chunk, so a bad row
            // ends the call with a status rather than halfway through the results.
            let chunks = self.serving.engine.open(&inference, &call, chunk_rows, decode)?;
            Ok((permit, chunks))
        }
        .await;
        let (permit, mut chunks) = started.map_err(|error| call.refuse(error))?;
        // Room for every chunk (at most --max-rows rows): scoring never waits
        // for the reader, so the call holds its --max-concurrent-requests slot
        // only while it computes, and a caller that never reads holds none.
        let (sender, receiver) = mpsc::channel(chunks.parts() + 1);
        tokio::spawn(async move {
            let _permit = permit;
            let outcome = send_chunks(&mut chunks, &call, &sender).await;
            let outcome = chunks.finish(outcome);
            if let Err(error) = call.finished(outcome) {
                // The same Status, details included, as a unary call would get.
                let _ = sender.send(Err(Status::from(error))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    type StreamPredictStream = ResponseStream<v1::StreamPredictResponse>;

    async fn stream_predict(
        &self,
        request: Request<Streaming<v1::StreamPredictRequest>>,
    ) -> Result<Response<Self::StreamPredictStream>, Status> {
        let stream = self.serving.call(request.metadata().as_ref(), SERVICE, "StreamPredict");
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
            models: map.models().map(|m| model_info(&map, m)).collect(),
            default_segment: map.default_segment().unwrap_or_default().to_string(),
        }))
    }

    async fn get_model(&self, request: Request<v1::GetModelRequest>) -> Result<Response<v1::ModelInfo>, Status> {
        let request = request.into_inner();
        let map = self.serving.models()?;
        let model = map.resolve(&request.segment, request.version)?;
        Ok(Response::new(model_info(&map, model)))
    }

    async fn feedback(&self, request: Request<v1::FeedbackRequest>) -> Result<Response<v1::FeedbackResponse>, Status> {
        let call = self.serving.call(request.metadata().as_ref(), SERVICE, "Feedback");
        let result = async {
            let _permit = self.serving.admitted(request.extensions())?;
            let request = request.into_inner();
            self.serving.check_message_size(request.encoded_len())?;
            feedback::take(&self.serving, request)
        }
        .await;
        call.finish(result).map(|joined| Response::new(feedback::response(joined)))
    }

    async fn feedback_stream(
        &self,
        request: Request<Streaming<v1::FeedbackRequest>>,
    ) -> Result<Response<v1::FeedbackResponse>, Status> {
        let call = self.serving.call(request.metadata().as_ref(), SERVICE, "FeedbackStream");
        let idle = self.serving.limits.stream_idle;
        let mut inbound = request.into_inner();
        let mut total = Joined::default();
        let result = loop {
            let message = match tokio::time::timeout(idle, inbound.message()).await {
                Ok(Ok(Some(message))) => message,
                Ok(Ok(None)) => break Ok(total),
                Ok(Err(status)) => match gate::undecodable(&status) {
                    Some(error) => break Err(error),
                    None => return Err(status),
                },
                Err(_elapsed) => {
                    break Err(ServeError::Unavailable(format!(
                        "the stream sent no message for {} s (--stream-idle-seconds); the outcomes sent so far were taken: {} matched",
                        idle.as_secs_f64(),
                        total.matched
                    )));
                }
            };
            let joined = self.serving.admit().and_then(|_permit| {
                self.serving.check_message_size(message.encoded_len())?;
                feedback::take(&self.serving, message)
            });
            match joined {
                Ok(joined) => total += joined,
                Err(error) => break Err(error),
            }
        };
        call.finish(result).map(|joined| Response::new(feedback::response(joined)))
    }
}

/// Scores an opened BatchPredictStream request part by part, sending each
/// part's predictions as soon as it is scored.
async fn send_chunks(
    chunks: &mut Chunks,
    call: &Call,
    sender: &mpsc::Sender<Result<v1::BatchPredictChunk, Status>>,
) -> Result<(), ServeError> {
    while let Some(chunk) = chunks.next(call).await {
        let chunk = chunk?;
        let model = chunks.model();
        let chunk = v1::BatchPredictChunk {
            first_row: chunk.first_row,
            predictions: predictions(model, &chunk.scores, chunk.explanation.as_ref()),
            model: Some(model_ref(model)),
            request_id: call.request_id.clone(),
        };
        if sender.send(Ok(chunk)).await.is_err() {
            return Err(ServeError::Unavailable("the caller went away mid-stream".into()));
        }
    }
    Ok(())
}

/// A batch request's rows for `model` (public for the fuzz targets in `fuzz/`).
pub fn batch_rows(model: &LoadedModel, rows: Option<v1::Rows>, max_rows: usize) -> Result<Rows, ServeError> {
    let mut rows = rows.ok_or_else(|| {
        ServeError::invalid(
            "rows",
            format!("is required: send `feature_count` ({}) and the row-major `values`", model.scorer.inputs()),
        )
    })?;
    let width = rows.feature_count as usize;
    text_columns(model, "rows.", width, &mut rows.values, &rows.text)?;
    Ok(Rows { fields: &RowsField::Rows, width, values: rows.values, max_rows })
}

/// Writes the category features sent as strings (`text`, named under
/// `prefix`) into `values`, rows of `width`, as the model's codes for them.
/// Rows of another width than the model's are left for the core to refuse.
fn text_columns(
    model: &LoadedModel,
    prefix: &str,
    width: usize,
    values: &mut [f32],
    text: &[v1::TextColumn],
) -> Result<(), ServeError> {
    let features = &model.manifest.features;
    if text.is_empty() || width == 0 || width != features.len() || !values.len().is_multiple_of(width) {
        return Ok(());
    }
    let rows = values.len() / width;
    let mut seen = vec![false; width];
    for (i, column) in text.iter().enumerate() {
        let field = format!("{prefix}text[{i}]");
        let feature = column.feature as usize;
        let refused = match (features.get(feature), seen.get(feature)) {
            (None, _) => format!("is {feature}; the model's features are 0 to {}", width - 1),
            (Some(_), Some(true)) => format!("is {feature} again: send each feature's column once"),
            (Some(name), _) if model.scorer.categories(feature).is_none() => {
                format!("is {feature}, `{name}`, which takes numbers: send it in the values")
            }
            _ => String::new(),
        };
        if !refused.is_empty() {
            return Err(ServeError::invalid(format!("{field}.feature"), refused));
        }
        seen[feature] = true;
        if column.values.len() != rows {
            let sent = column.values.len();
            return Err(ServeError::invalid(
                format!("{field}.values"),
                format!("has {sent} values for {rows} rows: send one per row"),
            ));
        }
        let mut missing = vec![false; rows];
        for (k, &row) in column.missing.iter().enumerate() {
            let Some(slot) = missing.get_mut(row as usize) else {
                let problem = format!("is {row}; the column's rows are 0 to {}", rows.saturating_sub(1));
                return Err(ServeError::invalid(format!("{field}.missing[{k}]"), problem));
            };
            *slot = true;
        }
        for (row, text) in column.values.iter().enumerate() {
            let cell = if missing[row] { Cell::Missing } else { Cell::Text(text) };
            values[row * width + feature] = cells::encode(model, feature, cell)
                .map_err(|description| ServeError::invalid(format!("{field}.values[{row}]"), description))?;
        }
    }
    Ok(())
}

/// Scores one StreamPredict message; its failure becomes that message's error response.
async fn score_stream_message(
    serving: &Serving,
    message: v1::StreamPredictRequest,
    call: &Call,
) -> v1::StreamPredictResponse {
    let id = message.id.clone();
    let call = &call.named(&id);
    let outcome = async {
        let _permit = serving.admit()?;
        serving.check_message_size(message.encoded_len())?;
        let inference = call.inference(&message.segment, message.version, message.explain);
        let max_rows = serving.limits.max_rows;
        let decode = |model: &LoadedModel| batch_rows(model, message.rows, max_rows);
        let Answer { model, scores, explanation } = serving.engine.infer(&inference, call, decode).await?;
        let explanation = explanation.as_ref();
        let predictions = if message.columnar { Vec::new() } else { predictions(&model, &scores, explanation) };
        let columns = message.columnar.then(|| columns(&model, scores, explanation));
        Ok::<_, ServeError>(v1::BatchResult { predictions, model: Some(model_ref(&model)), columns })
    }
    .await;
    let outcome = match call.finished(outcome) {
        Ok(result) => v1::stream_predict_response::Outcome::Result(result),
        Err(error) => {
            tracing::debug!(request = call.log_id, %error, "stream batch refused");
            v1::stream_predict_response::Outcome::Error(super::status::batch_error(&error))
        }
    };
    v1::StreamPredictResponse { id, outcome: Some(outcome) }
}

/// Each row's prediction: the most probable class, its label, all
/// probabilities; a regressor's value; why, when asked.
fn predictions(model: &LoadedModel, scores: &Scores, explanation: Option<&Explanation>) -> Vec<v1::Prediction> {
    let regressor = model.manifest.task() == Task::Regression;
    scores
        .rows()
        .enumerate()
        .map(|(index, row)| {
            let explanation = explanation.map(|e| explanations::message(model, e, index));
            match regressor {
                true => v1::Prediction { value: row[0], explanation, ..Default::default() },
                false => {
                    let class_index = predicted_class(row);
                    v1::Prediction {
                        class_index: class_index as u32,
                        label: model.manifest.labels[class_index].clone(),
                        probabilities: row.to_vec(),
                        value: 0.0,
                        explanation,
                    }
                }
            }
        })
        .collect()
}

/// Every row's prediction as packed columns (the scores' own buffer): two
/// for a classifier, the values for a regressor.
fn columns(model: &LoadedModel, scores: Scores, explanation: Option<&Explanation>) -> v1::PredictionColumns {
    let explanations = explanations::messages(model, explanation);
    if model.manifest.task() == Task::Regression {
        return v1::PredictionColumns { values: scores.probabilities, explanations, ..Default::default() };
    }
    v1::PredictionColumns {
        label_count: scores.classes as u32,
        class_index: scores.rows().map(|row| predicted_class(row) as u32).collect(),
        probabilities: scores.probabilities,
        values: Vec::new(),
        explanations,
    }
}

fn model_ref(model: &LoadedModel) -> v1::ModelRef {
    v1::ModelRef { segment: model.segment.clone(), version: model.version }
}

fn model_info(map: &Registry, model: &LoadedModel) -> v1::ModelInfo {
    let manifest = &model.manifest;
    v1::ModelInfo {
        segment: model.segment.clone(),
        version: model.version,
        is_latest: map.is_latest(model),
        features: manifest.features.clone(),
        labels: manifest.labels.clone(),
        dtype: model.scorer.dtype().to_string(),
        layers: model.scorer.description().to_vec(),
        provenance: Some(v1::Provenance {
            created: manifest.provenance.created.clone(),
            training_data: manifest.provenance.training_data.clone(),
            metrics: manifest.provenance.metrics.clone().into_iter().collect(),
            notes: manifest.provenance.notes.clone(),
        }),
        device: model.device.clone(),
        format: manifest.format.as_str().to_string(),
        task: manifest.task().as_str().to_string(),
        feature_types: manifest
            .features
            .iter()
            .enumerate()
            .map(|(feature, name)| {
                let categories = model.scorer.categories(feature);
                v1::FeatureInfo {
                    name: name.clone(),
                    kind: if categories.is_some() { "category" } else { "number" }.to_string(),
                    categories: categories.map(|c| c.values().to_vec()).unwrap_or_default(),
                }
            })
            .collect(),
    }
}

/// How candela.v1 names the fields that carry rows, in violations.
#[derive(Debug, Clone, Copy)]
pub enum RowsField {
    /// One row in Predict's repeated `features` field.
    Features,
    /// Packed rows in a `rows` message (BatchPredict, the streams).
    Rows,
}

impl Fields for RowsField {
    fn width(&self, declared: usize) -> (&'static str, String) {
        match self {
            RowsField::Features => ("features", format!("has {declared} values")),
            RowsField::Rows => ("rows.feature_count", format!("is {declared}")),
        }
    }

    fn values(&self) -> &'static str {
        match self {
            RowsField::Features => "features",
            RowsField::Rows => "rows.values",
        }
    }

    fn row(&self, row: usize) -> String {
        match self {
            RowsField::Features => "features".to_string(),
            RowsField::Rows => format!("rows.values[{row}]"),
        }
    }

    fn cell(&self, row: usize, col: usize) -> String {
        match self {
            RowsField::Features => format!("features[{col}]"),
            RowsField::Rows => format!("rows.values[{row}][{col}]"),
        }
    }
}
