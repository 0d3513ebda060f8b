//! Runs a model's forward pass off the async reactor and turns probabilities
//! into predictions. Compute goes to tokio's blocking pool so a large batch
//! never stalls the workers that drive every other connection.

use crate::error::ServeError;
use crate::repository::Model;
use candela::v1;
use std::sync::Arc;

/// Scores `values` (already validated for `model`) and returns one prediction per row.
pub async fn predict(model: Arc<Model>, values: Vec<f32>, request_id: &str) -> Result<Vec<v1::Prediction>, ServeError> {
    let computed = tokio::task::spawn_blocking(move || {
        let probabilities = model.network.forward(&values);
        (model, probabilities)
    })
    .await;
    let internal = |message: String| {
        tracing::error!(request_id, %message, "inference failed");
        ServeError::Internal { request_id: request_id.to_string(), message }
    };
    match computed {
        Ok((model, Ok(probabilities))) => Ok(predictions(&model, &probabilities)),
        Ok((_, Err(error))) => Err(internal(format!("forward pass failed: {error}"))),
        Err(join) => Err(internal(format!("inference task failed: {join}"))),
    }
}

/// Splits row-major probabilities into per-row predictions (argmax and its label).
fn predictions(model: &Model, probabilities: &[f32]) -> Vec<v1::Prediction> {
    probabilities
        .chunks_exact(model.network.classes())
        .map(|row| {
            let class_index = row.iter().enumerate().fold(0, |best, (i, p)| if *p > row[best] { i } else { best });
            v1::Prediction {
                class_index: class_index as u32,
                label: model.manifest.labels[class_index].clone(),
                probabilities: row.to_vec(),
            }
        })
        .collect()
}
