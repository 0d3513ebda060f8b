//! The README's export recipes, run as a reader pastes them
//! (tests/peers/readme_recipes.py, in the recipes' Python environment:
//! scikit-learn, skl2onnx, onnxmltools, LightGBM, XGBoost, onnxruntime), each
//! model they write served from one repository by the real server with its
//! one-line model.json, and answered within 1e-5 of onnxruntime: rows over
//! candela.v1 BatchPredict, the DataFrame model's columns by name over HTTP
//! `/score`.

mod common;

use candela_server::testing::{TestServer, recipes_python, repo_root, settings};
use common::wait_for;
use serde_json::Value;
use std::process::Command;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn every_readme_recipe_exports_a_model_that_answers_as_onnxruntime_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(recipes_python());
    command.arg(repo_root().join("tests/peers/readme_recipes.py")).arg(repo_root().join("README.md")).arg(dir.path());
    let output = tokio::task::spawn_blocking(move || command.output().expect("the recipes run")).await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the README's recipes failed:\n{text}");
    let expected: Value = serde_json::from_slice(&std::fs::read(dir.path().join("expected.json")).unwrap()).unwrap();
    let http = common::free_port();
    let server = TestServer::start_with(settings(&dir.path().join("models"), &["--http-listen", &http])).await;
    let mut client = common::client(&server).await;
    wait_for(&mut client, "", ServingStatus::Serving).await;
    let segments = expected.as_object().unwrap();
    assert_eq!(segments.len(), 5, "{text}");
    for (segment, record) in segments {
        let want: Vec<Vec<f64>> = serde_json::from_value(record["probabilities"].clone()).unwrap();
        let got: Vec<Vec<f64>> = match record.get("rows") {
            Some(rows) => {
                let rows = rows.as_array().unwrap();
                let width = rows[0].as_array().unwrap().len();
                let values = rows
                    .iter()
                    .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().map_or(f32::NAN, |v| v as f32)))
                    .collect();
                let answer = client.batch_predict(segment.as_str(), width, values).await.unwrap();
                answer.predictions.iter().map(|p| p.probabilities.iter().map(|v| f64::from(*v)).collect()).collect()
            }
            None => {
                let columns = record["columns"].as_object().unwrap();
                let rows: Vec<Value> = (0..want.len())
                    .map(|r| columns.iter().map(|(name, values)| (name.clone(), values[r].clone())).collect())
                    .collect();
                let body = serde_json::json!({"segment": segment, "features": rows}).to_string();
                let answer = common::post_json(&http, "/score", &body).await;
                serde_json::from_value(answer["probability"].clone()).unwrap_or_else(|_| panic!("{answer}"))
            }
        };
        assert_eq!(got.len(), want.len(), "{segment}");
        let worst = got.iter().flatten().zip(want.iter().flatten()).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
        println!("{segment}: {} rows, largest |Δp| {worst:.2e}", want.len());
        assert!(worst <= 1e-5, "{segment}: largest difference {worst:e}");
    }
    server.stop().await.unwrap();
}
