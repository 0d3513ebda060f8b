//! Regressors: ONNX graphs whose model answers one value per row (skl2onnx's
//! LinearRegressor and TreeEnsembleRegressor from scikit-learn, LightGBM
//! and XGBoost, ml opset 5's TreeEnsemble, and a network's one output) and
//! XGBoost/LightGBM files under regression objectives (identity and log
//! links), made by the real libraries (`tests/fixtures/formats/make_fixtures.py
//! regressor_models opset5_models native_regressor_models`) and served
//! from the same repository as the classifiers: every front answers the
//! value (candela.v1's `value`, the Open Inference Protocol's `prediction`
//! FP32 `[batch, 1]`, `/score`'s `prediction`) within 1e-4 relative of
//! onnxruntime or the library's own predict; outcomes fed back as numbers give the live error; a
//! model.json that contradicts the graph is refused.

mod common;

use candela::inference::{self as oip, grpc_inference_service_client::GrpcInferenceServiceClient};
use candela::v1::Outcome;
use candela_server::testing::{TestServer, eventually, repo_root, settings};
use common::{free_port, metric, post_json, wait_for};
use oip::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const REGRESSORS: [&str; 12] = [
    "onnx-reg-linear",
    "onnx-reg-forest",
    "onnx-reg-gradient-boosting",
    "onnx-reg-hist-boosting",
    "onnx-reg-lightgbm",
    "onnx-reg-xgboost",
    "onnx-reg-mlp",
    // ml opset 5's TreeEnsemble, its base value an Add after it.
    "onnx-opset5-regressor",
    // The libraries' own files (against their own predict): identity and log links.
    "xgboost-regression",
    "xgboost-poisson",
    "lightgbm-regression",
    "lightgbm-tweedie",
];

/// The largest relative difference from onnxruntime's value allowed.
const TOLERANCE: f64 = 1e-4;

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/formats/repo")
}

/// The rows (null: missing) and onnxruntime's values for `segment`.
fn expected(segment: &str) -> (Vec<f32>, Vec<f64>) {
    let text = std::fs::read_to_string(fixtures().join(segment).join("expected.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = expected["rows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().map_or(f32::NAN, |v| v as f32)))
        .collect();
    (rows, serde_json::from_value(expected["values"].clone()).unwrap())
}

/// The largest |got − want| / max(|want|, 1).
fn worst(got: impl IntoIterator<Item = f32>, want: &[f64]) -> f64 {
    let got: Vec<f32> = got.into_iter().collect();
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(g, w)| (f64::from(*g) - w).abs() / w.abs().max(1.0)).fold(0.0, f64::max)
}

/// A repository holding only the regressors (the same files as the fixtures').
fn regressors_only(root: &Path) {
    for segment in REGRESSORS {
        let (from, to) = (fixtures().join(segment).join("1"), root.join(segment).join("1"));
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn infer_request(segment: &str, rows: &[f32], outputs: &[&str]) -> oip::ModelInferRequest {
    let contents = oip::InferTensorContents { fp32_contents: rows.to_vec(), ..Default::default() };
    oip::ModelInferRequest {
        model_name: segment.into(),
        inputs: vec![InferInputTensor {
            name: "features".into(),
            datatype: "FP32".into(),
            shape: vec![(rows.len() / 8) as i64, 8],
            parameters: Default::default(),
            contents: Some(contents),
        }],
        outputs: outputs
            .iter()
            .map(|name| InferRequestedOutputTensor { name: name.to_string(), ..Default::default() })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_regressor_answers_its_value_on_every_front_as_onnxruntime_does() {
    let root = tempfile::tempdir().unwrap();
    regressors_only(root.path());
    let (http, metrics) = (free_port(), free_port());
    let extra = ["--http-listen", &http, "--metrics-listen", &metrics, "--quality-min-outcomes", "10"];
    let server = TestServer::start_with(settings(root.path(), &extra)).await;
    let mut client = common::client(&server).await;
    wait_for(&mut client, "", ServingStatus::Serving).await;
    let mut open_inference = GrpcInferenceServiceClient::connect(server.url.clone()).await.unwrap();
    for segment in REGRESSORS {
        let (rows, want) = expected(segment);
        // candela.v1: each Prediction's `value`, nothing of a classifier's.
        let answer =
            client.batch_predict(segment, 8, rows.clone()).await.unwrap_or_else(|e| panic!("{segment}: {e:?}"));
        let batch = worst(answer.predictions.iter().map(|p| p.value), &want);
        assert!(answer.predictions.iter().all(|p| p.probabilities.is_empty() && p.label.is_empty()), "{segment}");
        let single = client.predict(segment, rows[..8].to_vec()).await.unwrap().prediction.unwrap();
        assert!(worst([single.value], &want[..1]) <= TOLERANCE, "{segment}: Predict {}", single.value);
        // The Open Inference Protocol: `prediction` FP32 [batch, 1], the only output.
        let response = open_inference.model_infer(infer_request(segment, &rows, &[])).await.unwrap().into_inner();
        assert_eq!(response.outputs.len(), 1, "{segment}");
        let output = &response.outputs[0];
        assert_eq!((output.name.as_str(), output.datatype.as_str()), ("prediction", "FP32"));
        assert_eq!(output.shape, [want.len() as i64, 1]);
        let oip_worst = worst(output.contents.clone().unwrap().fp32_contents, &want);
        // `/score`: the values as `prediction`, no labels or probabilities; rows by name, null missing.
        let rows_json: Vec<serde_json::Value> = rows
            .chunks(8)
            .map(|row| {
                let cells = row
                    .iter()
                    .enumerate()
                    .map(|(f, v)| (format!("f{f}"), serde_json::json!((!v.is_nan()).then_some(*v))));
                serde_json::Value::Object(cells.collect())
            })
            .collect();
        let body = serde_json::json!({"segment": segment, "features": rows_json}).to_string();
        let answer = post_json(&http, "/score", &body).await;
        assert!(answer.get("labels").is_none() && answer.get("probability").is_none(), "{segment}: {answer}");
        let values = answer["prediction"].as_array().unwrap_or_else(|| panic!("{segment}: {answer}"));
        let score_worst = worst(values.iter().map(|v| v.as_f64().unwrap() as f32), &want);
        println!(
            "{segment}: {} rows, largest relative |Δ| {batch:.2e} (OIP {oip_worst:.2e}, /score {score_worst:.2e})",
            want.len()
        );
        for (front, worst) in [("BatchPredict", batch), ("ModelInfer", oip_worst), ("/score", score_worst)] {
            assert!(worst <= TOLERANCE, "{segment} over {front}: largest relative difference {worst:e}");
        }
        let info = client.get_model(segment).await.unwrap();
        assert_eq!((info.task.as_str(), info.labels.len()), ("regression", 0), "{segment}");
    }
    // Asking a regressor for probabilities is refused, naming the output it has.
    let (rows, want) = expected("onnx-reg-linear");
    let refused =
        open_inference.model_infer(infer_request("onnx-reg-linear", &rows[..8], &["probabilities"])).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("is a regressor: its one output is `prediction`"), "{}", refused.message());
    let metadata = open_inference
        .model_metadata(oip::ModelMetadataRequest { name: "onnx-reg-linear".into(), version: String::new() })
        .await
        .unwrap()
        .into_inner();
    let outputs: Vec<(&str, &str, &[i64])> =
        metadata.outputs.iter().map(|o| (o.name.as_str(), o.datatype.as_str(), o.shape.as_slice())).collect();
    assert_eq!(outputs, [("prediction", "FP32", &[-1i64, 1][..])]);

    // Outcomes fed back as numbers: the live error of the answered values.
    let answer = client.batch_predict("onnx-reg-linear", 8, rows.clone()).await.unwrap();
    let truths: Vec<f64> = want.iter().enumerate().map(|(i, v)| v + if i % 2 == 0 { 3.0 } else { -1.0 }).collect();
    let outcomes = (0..want.len())
        .map(|row| Outcome { request_id: answer.request_id.clone(), row: row as u64, label: truths[row].to_string() })
        .chain([Outcome { request_id: answer.request_id.clone(), row: 0, label: "fraud".into() }])
        .collect();
    let joined = client.feedback(outcomes).await.unwrap();
    assert_eq!((joined.matched, joined.unknown_label), (want.len() as u64, 1), "a word is no regressor's truth");
    let mae: f64 = answer.predictions.iter().zip(&truths).map(|(p, t)| (f64::from(p.value) - t).abs()).sum::<f64>()
        / want.len() as f64;
    let labels = [("segment", "onnx-reg-linear"), ("version", "1")];
    eventually(Duration::from_secs(10), "the live mean absolute error", async || {
        let live = metric(&metrics, "candela_model_mean_absolute_error", &labels).await;
        (live - mae).abs() < 1e-3
    })
    .await;
    assert_eq!(metric(&metrics, "candela_model_auc", &labels).await, 0.0, "a regressor has no AUC series");
    server.stop().await.unwrap();
}

#[test]
fn a_model_json_that_contradicts_the_graph_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let write = |segment: &str, from: &str, manifest: &str| {
        let dir = root.join(segment).join("1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(fixtures().join(from).join("1/model.onnx"), dir.join("model.onnx")).unwrap();
        std::fs::write(dir.join("model.json"), manifest).unwrap();
    };
    write("labelled", "onnx-reg-forest", r#"{"format": "onnx", "labels": ["low", "high"]}"#);
    write("classifying", "onnx-reg-lightgbm", r#"{"format": "onnx", "task": "classification"}"#);
    write("not-a-value", "sklearn-multi", r#"{"format": "onnx", "task": "regression"}"#);
    write("logits", "onnx-reg-mlp", r#"{"format": "onnx"}"#);
    // A booster file under a regression objective, its model.json a classifier's.
    let booster = root.join("booster/1");
    std::fs::create_dir_all(&booster).unwrap();
    std::fs::copy(fixtures().join("xgboost-regression/1/xgboost.json"), booster.join("xgboost.json")).unwrap();
    let features: Vec<String> = (0..8).map(|f| format!("f{f}")).collect();
    let manifest = serde_json::json!({"features": features, "labels": ["low", "high"], "format": "xgboost"});
    std::fs::write(booster.join("model.json"), manifest.to_string()).unwrap();
    let device = candle_core::Device::Cpu;
    let Err(errors) = candela_server::model::repository::load(root, &device, "cpu", 1 << 30) else {
        panic!("the contradicting repository loaded");
    };
    let errors = errors.to_string();
    for needle in [
        "the graph is a regressor, answering one value per row: remove model.json's `labels`",
        "the graph is a regressor (one value per row) but model.json's `task` is classification",
        "model.json's `task` is regression but the graph answers 3 numbers per row",
        r#"a regressor's one output is served as its value with `"task": "regression"` in model.json"#,
        r#"(xgboost reg:squarederror) is a regressor, answering one value per row: say "task": "regression""#,
    ] {
        assert!(errors.contains(needle), "`{needle}` not in:\n{errors}");
    }
    assert!(errors.contains("5 problems"), "{errors}");
}
