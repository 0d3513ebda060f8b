//! Bring your own model: XGBoost (JSON and UBJSON), LightGBM and ONNX (from
//! skl2onnx, onnxmltools and both torch.onnx.export exporters: networks,
//! linear models and tree ensembles behind imputing and scaling) models, and PyTorch
//! safetensors with the model.json `scripts/torch_to_candela.py` writes, each
//! made by the real library
//! (`tests/fixtures/formats/make_fixtures.py`), served from one repository
//! and answered through gRPC within 1e-6 (trees) and 1e-5 (ONNX, against
//! onnxruntime) of the library's own probabilities, missing values included
//! (the averaged forests, LightGBM's rf and XGBoost's DART, over HTTP too).
//! Also: a NaN is a missing value for trees and still refused for networks,
//! and malformed or unsupported models are refused at load naming the cause.

mod common;

use candela_server::testing::{TestServer, repo_root, settings};
use common::wait_for;
use std::path::{Path, PathBuf};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/formats/repo")
}

/// The rows (null: missing) and the library's probabilities for `segment`.
fn expected(segment: &str) -> (Vec<f32>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(fixtures().join(segment).join("expected.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows: Vec<f32> = expected["rows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().map_or(f32::NAN, |v| v as f32)))
        .collect();
    let probabilities = serde_json::from_value(expected["probabilities"].clone()).unwrap();
    (rows, probabilities)
}

async fn serve(root: &Path) -> TestServer {
    let server = TestServer::start_with(settings(root, &[])).await;
    wait_for(&mut common::client(&server).await, "", ServingStatus::Serving).await;
    server
}

#[tokio::test]
async fn every_format_answers_as_its_own_library_does() {
    let server = serve(&fixtures()).await;
    let mut client = common::client(&server).await;
    for (segment, tolerance) in [
        ("xgboost-binary", 1e-6),
        ("xgboost-ubj", 1e-6),
        ("xgboost-multi", 1e-6),
        ("lightgbm-binary", 1e-6),
        ("lightgbm-zero", 1e-6),
        ("lightgbm-multi", 1e-6),
        // LightGBM's random forest mode (trees averaged) and XGBoost's DART (trees weighted).
        ("lightgbm-rf", 1e-6),
        ("xgboost-dart", 1e-6),
        ("sklearn-binary", 1e-5),
        ("sklearn-multi", 1e-5),
        // ONNX-ML: Scaler + LinearClassifier, with skl2onnx's default ZipMap (binary) and its
        // L1 Normalizer (multinomial), against onnxruntime.
        ("sklearn-logistic", 1e-5),
        ("sklearn-logistic-multi", 1e-5),
        // Tree ensembles inside ONNX (TreeEnsembleClassifier on the native forest) behind
        // per-column steps (Imputer, Scaler, MinMaxScaler's Mul/Add/Clip), against onnxruntime.
        ("onnx-forest", 1e-5),
        ("onnx-forest-multi", 1e-5),
        ("onnx-gradient-boosting", 1e-5),
        ("onnx-hist-boosting", 1e-5),
        ("onnx-lightgbm-pipeline", 1e-5),
        ("onnx-xgboost", 1e-5),
        ("onnx-minmax-logistic", 1e-5),
        ("onnx-every-mode", 1e-5),
        // ml opset 5's TreeEnsemble: every mode, set splits, SOFTMAX over 3 targets.
        ("onnx-opset5-classifier", 1e-5),
        // INT8 (quantize_dynamic) against onnxruntime answering each row alone.
        ("onnx-int8", 1e-5),
        ("onnx-int8-multi", 1e-5),
        ("torch-softmax", 1e-5),
        ("torch-sigmoid", 1e-5),
        ("torch-dynamo", 1e-5),
        // model.json written by scripts/torch_to_candela.py; against torch itself.
        ("torch-safetensors", 1e-5),
        // The helper's trace of nested blocks, and of a module whose forward calls layers and functions.
        ("torch-nested", 1e-5),
        ("torch-module", 1e-5),
    ] {
        let (rows, want) = expected(segment);
        let missing = rows.iter().filter(|v| v.is_nan()).count();
        let answer = client.batch_predict(segment, 8, rows).await.unwrap_or_else(|e| panic!("{segment}: {e:?}"));
        assert_eq!(answer.predictions.len(), want.len(), "{segment}");
        let mut worst = 0.0f64;
        for (row, (got, want)) in answer.predictions.iter().zip(&want).enumerate() {
            assert_eq!(got.probabilities.len(), want.len(), "{segment} row {row}");
            for (g, w) in got.probabilities.iter().zip(want) {
                worst = worst.max((f64::from(*g) - w).abs());
            }
            let top = (0..want.len()).max_by(|&a, &b| want[a].total_cmp(&want[b])).unwrap();
            let runner_up = (0..want.len()).filter(|&k| k != top).map(|k| want[k]).fold(0.0, f64::max);
            if want[top] - runner_up > 1e-4 {
                assert_eq!(got.class_index as usize, top, "{segment} row {row}");
            }
        }
        println!("{segment}: {} rows ({missing} missing values), largest |Δp| {worst:.2e}", want.len());
        assert!(worst <= tolerance, "{segment}: largest difference {worst:e} > {tolerance:e}");
        // One row at a time (Predict) answers the same as the batch.
        let (rows, _) = expected(segment);
        let single = client.predict(segment, rows[..8].to_vec()).await.unwrap().prediction.unwrap();
        assert!((f64::from(single.probabilities[0]) - want[0][0]).abs() <= tolerance, "{segment}");
    }
    let info = client.get_model("xgboost-multi").await.unwrap();
    assert!(info.layers[0].starts_with("xgboost multi:softprob: 120 trees"), "{:?}", info.layers);
    // model.json says only {"format": "onnx"}: the graph's input width and class labels name the rest.
    let info = client.get_model("onnx-every-mode").await.unwrap();
    assert_eq!((info.features.len(), info.features[7].as_str()), (8, "f7"));
    assert_eq!(info.labels, ["low", "mid", "high"]);
    let info = client.get_model("onnx-forest-multi").await.unwrap();
    assert_eq!(info.labels, ["0", "1", "2"], "integer class labels as written");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn nan_is_missing_for_trees_and_refused_for_networks() {
    let http = common::free_port();
    let server = TestServer::start_with(settings(&fixtures(), &["--http-listen", &http])).await;
    wait_for(&mut common::client(&server).await, "", ServingStatus::Serving).await;
    let mut client = common::client(&server).await;
    let mut row = vec![0.5f32; 8];
    row[3] = f32::NAN;
    let by_grpc = client.predict("lightgbm-binary", row.clone()).await.expect("trees take NaN as missing");
    // Over HTTP /score, null is the missing value (JSON has no NaN): the same answer,
    // and a network refuses it naming the cell.
    let body = |segment: &str| {
        format!(r#"{{"segment": "{segment}", "features": [[0.5, 0.5, 0.5, null, 0.5, 0.5, 0.5, 0.5]]}}"#)
    };
    let answer = common::post_json(&http, "/score", &body("lightgbm-binary")).await;
    let p = answer["probability"][0][1].as_f64().unwrap_or_else(|| panic!("{answer}"));
    assert!((p - f64::from(by_grpc.prediction.unwrap().probabilities[1])).abs() < 1e-7, "{answer}");
    let refused = common::post_json(&http, "/score", &body("sklearn-binary")).await;
    assert!(refused.to_string().contains("features[0][3]"), "{refused}");
    let status = client.predict("sklearn-binary", row.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("features must be finite numbers"), "{}", status.message());
    row[3] = f32::INFINITY;
    let status = client.predict("xgboost-binary", row).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("or NaN for a missing value"), "{}", status.message());
    server.stop().await.unwrap();
}

/// A one-version repository of `segment` copied from the fixtures, with
/// `edit` applied to its directory.
fn broken(root: &Path, segment: &str, edit: impl FnOnce(&Path)) {
    let from = fixtures().join(segment).join("1");
    let dir = root.join(segment).join("1");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    edit(&dir);
}

fn rewrite(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn unsupported_and_malformed_models_are_refused_naming_the_cause() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    // A categorical LightGBM split (decision_type bit 0) naming a bitset its tree lacks.
    broken(root, "lightgbm-binary", |dir| rewrite(&dir.join("lightgbm.txt"), "decision_type=10", "decision_type=11"));
    // An XGBoost model whose child points outside its tree.
    broken(root, "xgboost-binary", |dir| {
        rewrite(&dir.join("xgboost.json"), "\"left_children\":[1,", "\"left_children\":[999,")
    });
    // Labels that do not match the model's classes.
    broken(root, "xgboost-multi", |dir| rewrite(&dir.join("model.json"), "\"class2\"", "\"class2\", \"class3\""));
    // An ONNX graph with the wrong feature count for model.json.
    broken(root, "torch-softmax", |dir| rewrite(&dir.join("model.json"), "\"f7\"", "\"f7\", \"f8\""));
    // Not an ONNX file at all.
    broken(root, "sklearn-binary", |dir| std::fs::write(dir.join("model.onnx"), b"not onnx").unwrap());
    // model.json's labels in another order than the graph names them.
    broken(root, "onnx-every-mode", |dir| {
        std::fs::write(dir.join("model.json"), r#"{"format": "onnx", "labels": ["mid", "low", "high"]}"#).unwrap()
    });
    let device = candle_core::Device::Cpu;
    let Err(errors) = candela_server::model::repository::load(root, &device, "cpu", 1 << 30) else {
        panic!("the broken repository loaded");
    };
    let errors = errors.to_string();
    for needle in [
        "tree 0 node 0 names category set 0, which its tree lacks",
        "tree 0 names node 999",
        "gives 3 class probabilities but model.json lists 4 labels",
        "takes 8 features per row but model.json lists 9",
        "not an ONNX model file",
        r#"labels` are ["mid", "low", "high"] but the graph names its classes ["low", "mid", "high"]"#,
    ] {
        assert!(errors.contains(needle), "`{needle}` not in:\n{errors}");
    }
    assert!(errors.contains("6 problems"), "{errors}");
}

/// The averaged forests (LightGBM's random forest mode, XGBoost's DART) over
/// HTTP as well: `/score` with every row (null: missing), and the Open
/// Inference Protocol's REST infer with the rows that have no missing value
/// (JSON has no NaN), within 1e-6 of the library's probabilities.
#[tokio::test]
async fn averaged_forests_answer_alike_over_http() {
    let http = common::free_port();
    let server = TestServer::start_with(settings(&fixtures(), &["--http-listen", &http])).await;
    wait_for(&mut common::client(&server).await, "", ServingStatus::Serving).await;
    let worst = |got: Vec<f64>, want: &[Vec<f64>]| {
        assert_eq!(got.len(), want.len() * 2);
        got.iter().zip(want.concat()).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max)
    };
    for segment in ["lightgbm-rf", "xgboost-dart"] {
        let (rows, want) = expected(segment);
        let as_json = |row: &[f32]| row.iter().map(|v| (!v.is_nan()).then_some(*v)).collect::<Vec<_>>();
        let body = serde_json::json!({"segment": segment, "features": rows.chunks(8).map(as_json).collect::<Vec<_>>()});
        let answer = common::post_json(&http, "/score", &body.to_string()).await;
        let rows_answered = answer["probability"].as_array().unwrap_or_else(|| panic!("{segment}: {answer}"));
        let got = rows_answered.iter().flat_map(|r| r.as_array().unwrap().iter().map(|p| p.as_f64().unwrap()));
        let scored = worst(got.collect(), &want);
        assert!(scored <= 1e-6, "{segment} over /score: {scored:e}");

        let full: Vec<usize> =
            (0..want.len()).filter(|&r| rows[r * 8..(r + 1) * 8].iter().all(|v| !v.is_nan())).collect();
        let data: Vec<f32> = full.iter().flat_map(|&r| rows[r * 8..(r + 1) * 8].to_vec()).collect();
        let input = serde_json::json!({"name": "features", "datatype": "FP32", "shape": [full.len(), 8], "data": data});
        let body = serde_json::json!({"inputs": [input]}).to_string();
        let answer = common::post_json(&http, &format!("/v2/models/{segment}/infer"), &body).await;
        let outputs = answer["outputs"].as_array().unwrap_or_else(|| panic!("{segment}: {answer}"));
        let probabilities = outputs.iter().find(|o| o["name"] == "probabilities").unwrap();
        let got = probabilities["data"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect();
        let want_full: Vec<Vec<f64>> = full.iter().map(|&r| want[r].clone()).collect();
        let inferred = worst(got, &want_full);
        assert!(inferred <= 1e-6, "{segment} over the REST infer: {inferred:e}");
        println!(
            "{segment}: /score {scored:.1e} ({} rows), REST infer {inferred:.1e} ({} rows)",
            want.len(),
            full.len()
        );
    }
    server.stop().await.unwrap();
}
