//! Explanations on every front. Trees: each contribution within 1e-4 of the
//! library's own TreeSHAP (`contributions.json`, written by XGBoost's
//! `pred_contribs` and LightGBM's `pred_contrib` in
//! `tests/fixtures/formats/make_fixtures.py`), categorical splits included,
//! through Predict, BatchPredict, BatchPredictStream, StreamPredict (rows
//! and columns), the Open Inference Protocol over gRPC and HTTP, and
//! `/score`. Every other model (ONNX and safetensors networks, INT8, a
//! scikit-learn pipeline, a forest lowered from ONNX): Shapley values equal
//! to the ones this test computes itself by scoring every coalition against
//! model.json's background rows through plain predictions; the bundled
//! 30-feature networks' sampled values sum to their log-odds. Reasons are
//! the largest positive contributions, named; bad `explain` values are
//! refused naming the field; asking for nothing changes nothing.

mod common;

use candela::inference::{self as oip, grpc_inference_service_client::GrpcInferenceServiceClient};
use candela_client::{Client, ModelId, proto, stream_batch};
use candela_server::testing::{TestServer, repo_root, rows, settings};
use common::{free_port, metric, post_json, wait_for};
use futures::StreamExt;
use oip::infer_parameter::ParameterChoice;
use serde_json::Value;
use std::path::Path;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const TREES: [&str; 3] = ["xgboost-binary", "xgboost-multi", "lightgbm-binary"];
const FEATURES: usize = 8;

fn fixture(segment: &str, file: &str) -> Value {
    let path = repo_root().join("tests/fixtures/formats/repo").join(segment).join(file);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The fixture's rows (null: missing) and the library's contributions, each row flat.
fn trees(segment: &str) -> (Vec<f32>, Vec<Vec<f64>>) {
    let rows: Vec<Vec<Option<f64>>> =
        serde_json::from_value(fixture(segment, "expected.json")["rows"].clone()).unwrap();
    let values = rows[..60].iter().flatten().map(|v| v.map_or(f32::NAN, |v| v as f32)).collect();
    let contributions: Vec<Vec<f64>> =
        serde_json::from_value(fixture(segment, "contributions.json")["contributions"].clone()).unwrap();
    (values, contributions[..60].to_vec())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A repository of `segments` from the format fixtures, each model.json edited by `edit`.
fn repository(segments: &[&str], edit: impl Fn(&str, &mut Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for segment in segments {
        let from = repo_root().join("tests/fixtures/formats/repo").join(segment).join("1");
        let to = dir.path().join(segment).join("1");
        copy_dir(&from, &to);
        let mut manifest: Value = serde_json::from_slice(&std::fs::read(to.join("model.json")).unwrap()).unwrap();
        edit(segment, &mut manifest);
        std::fs::write(to.join("model.json"), serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    }
    dir
}

fn worst(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(g, w)| (f64::from(*g) - w).abs()).fold(0.0, f64::max)
}

/// Checks one row's reasons: at most `k`, the largest positive
/// contributions to the output they are about, largest first, named, with the row's values.
fn check_reasons(explanation: &proto::Explanation, about: usize, row: &[f32], features: &[String], k: usize) {
    let width = row.len() + 1;
    let output = &explanation.contributions[about * width..(about + 1) * width];
    let mut positive: Vec<(usize, f32)> =
        output[..row.len()].iter().copied().enumerate().filter(|(_, c)| *c > 0.0).collect();
    positive.sort_by(|a, b| b.1.total_cmp(&a.1));
    positive.truncate(k);
    let named: Vec<(&str, f32)> = positive.iter().map(|(f, c)| (features[*f].as_str(), *c)).collect();
    let got: Vec<(&str, f32)> = explanation.reasons.iter().map(|r| (r.feature.as_str(), r.contribution)).collect();
    assert_eq!(got, named);
    for (reason, (feature, _)) in explanation.reasons.iter().zip(&positive) {
        assert!(
            reason.value.to_bits() == row[*feature].to_bits(),
            "{} = {} not {}",
            reason.feature,
            reason.value,
            row[*feature]
        );
    }
}

async fn serve(dir: &Path, extra: &[&str]) -> (TestServer, Client) {
    let server = TestServer::start_with(settings(dir, extra)).await;
    let mut client = common::client(&server).await;
    wait_for(&mut client, "", ServingStatus::Serving).await;
    (server, client)
}

#[tokio::test]
async fn trees_explain_as_their_libraries_on_every_candela_v1_call() {
    let dir = repository(&TREES, |_, _| {});
    let (_server, mut client) = serve(dir.path(), &[]).await;
    for segment in TREES {
        let (values, want) = trees(segment);
        let count = values.len() / FEATURES;
        let features = client.get_model(segment).await.unwrap().features;
        let rows = proto::Rows { feature_count: FEATURES as u32, values: values.clone(), text: vec![] };
        let plain = client.batch_predict_rows(segment, rows.clone()).await.unwrap();
        let explained = client.batch_predict_explained(segment, rows.clone(), 3).await.unwrap();
        for (r, prediction) in explained.predictions.iter().enumerate() {
            let explanation = prediction.explanation.as_ref().expect("every row explained");
            assert_eq!(explanation.method, "tree");
            let off = worst(&explanation.contributions, &want[r]);
            assert!(off <= 1e-4, "{segment} row {r}: off by {off:e}");
            let about = if segment.ends_with("multi") { prediction.class_index as usize } else { 0 };
            check_reasons(explanation, about, &values[r * FEATURES..(r + 1) * FEATURES], &features, 3);
        }
        // The answers themselves are unchanged, and without `explain` nothing is added.
        let stripped: Vec<proto::Prediction> =
            explained.predictions.iter().map(|p| proto::Prediction { explanation: None, ..p.clone() }).collect();
        assert_eq!(stripped, plain.predictions, "{segment}");
        // Without `explain` no explanation field is written at all: the answer's bytes are as before.
        assert!(plain.predictions.iter().all(|p| p.explanation.is_none()));

        // Predict: one row.
        let one = client.predict_explained(segment, values[..FEATURES].to_vec(), 2).await.unwrap();
        let explanation = one.prediction.unwrap().explanation.unwrap();
        assert!(worst(&explanation.contributions, &want[0]) <= 1e-4, "{segment} Predict");
        assert!(explanation.reasons.len() <= 2);

        // BatchPredictStream, in chunks.
        let request =
            proto::BatchPredictRequest { segment: segment.into(), version: 0, rows: Some(rows.clone()), explain: 1 };
        let mut chunks = client.inference().batch_predict_stream(request).await.unwrap().into_inner();
        let mut seen = 0;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.unwrap();
            for (i, prediction) in chunk.predictions.iter().enumerate() {
                let r = chunk.first_row as usize + i;
                let explanation = prediction.explanation.as_ref().unwrap();
                assert!(worst(&explanation.contributions, &want[r]) <= 1e-4, "{segment} stream row {r}");
                assert!(explanation.reasons.len() <= 1);
                seen += 1;
            }
        }
        assert_eq!(seen, count);

        // StreamPredict, per row and in columns.
        let model = ModelId::latest(segment);
        let mut per_row = stream_batch("rows", &model, FEATURES, values.clone());
        per_row.explain = 2;
        let mut columnar = stream_batch("columns", &model, FEATURES, values.clone());
        (columnar.explain, columnar.columnar) = (2, true);
        let mut answers = client.stream_predict(futures::stream::iter([per_row, columnar])).await.unwrap();
        for _ in 0..2 {
            let answer = answers.next().await.unwrap().unwrap();
            let Some(proto::stream_predict_response::Outcome::Result(result)) = answer.outcome else {
                panic!("{answer:?}")
            };
            let explanations: Vec<proto::Explanation> = match answer.id.as_str() {
                "rows" => result.predictions.into_iter().map(|p| p.explanation.unwrap()).collect(),
                _ => result.columns.unwrap().explanations,
            };
            assert_eq!(explanations.len(), count, "{segment} {}", answer.id);
            for (r, explanation) in explanations.iter().enumerate() {
                assert!(worst(&explanation.contributions, &want[r]) <= 1e-4, "{segment} {} row {r}", answer.id);
            }
        }
    }
}

#[tokio::test]
async fn trees_explain_over_the_open_inference_protocol_and_score() {
    let segments = ["xgboost-binary", "xgboost-multi", "lightgbm-categorical", "xgboost-categorical"];
    let dir = repository(&segments, |_, _| {});
    let http = free_port();
    let (server, mut client) = serve(dir.path(), &["--http-listen", &http]).await;
    let mut oip_client = GrpcInferenceServiceClient::connect(server.url.clone()).await.unwrap();
    for segment in ["xgboost-binary", "xgboost-multi"] {
        let (values, want) = trees(segment);
        let count = values.len() / FEATURES;
        let contents = oip::InferTensorContents { fp32_contents: values.clone(), ..Default::default() };
        let mut request = oip::ModelInferRequest {
            model_name: segment.into(),
            inputs: vec![oip::model_infer_request::InferInputTensor {
                name: "features".into(),
                datatype: "FP32".into(),
                shape: vec![count as i64, FEATURES as i64],
                contents: Some(contents),
                ..Default::default()
            }],
            ..Default::default()
        };
        request
            .parameters
            .insert("explain".into(), oip::InferParameter { parameter_choice: Some(ParameterChoice::Int64Param(3)) });
        let response = oip_client.model_infer(request).await.unwrap().into_inner();
        let names: Vec<&str> = response.outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["probabilities", "prediction", "contributions"]);
        let tensor = &response.outputs[2];
        let expected_shape = match segment {
            "xgboost-multi" => vec![count as i64, 3, FEATURES as i64 + 1],
            _ => vec![count as i64, FEATURES as i64 + 1],
        };
        assert_eq!((tensor.datatype.as_str(), &tensor.shape), ("FP32", &expected_shape));
        let got = &tensor.contents.as_ref().unwrap().fp32_contents;
        assert!(worst(got, &want.concat()) <= 1e-4, "{segment} over gRPC ModelInfer");

        // The REST infer: the rows without a missing value (JSON has no NaN).
        let whole: Vec<usize> =
            (0..count).filter(|r| values[r * FEATURES..(r + 1) * FEATURES].iter().all(|v| !v.is_nan())).collect();
        let data: Vec<f32> = whole.iter().flat_map(|r| values[r * FEATURES..(r + 1) * FEATURES].to_vec()).collect();
        let body = serde_json::json!({
            "parameters": {"explain": 2},
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [whole.len(), FEATURES], "data": data}],
        });
        let answer = post_json(&http, &format!("/v2/models/{segment}/infer"), &body.to_string()).await;
        let output =
            answer["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "contributions").expect("contributions");
        let got: Vec<f32> = output["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let want_whole: Vec<f64> = whole.iter().flat_map(|r| want[*r].clone()).collect();
        assert!(worst(&got, &want_whole) <= 1e-4, "{segment} over REST infer");
    }

    // /score: rows by name (categories by name, null for missing), contributions by feature name.
    for segment in ["lightgbm-categorical", "xgboost-categorical"] {
        let expected = fixture(segment, "expected.json");
        let columns = expected["columns"].as_object().unwrap();
        let want: Vec<Vec<f64>> =
            serde_json::from_value(fixture(segment, "contributions.json")["contributions"].clone()).unwrap();
        let names = ["amount", "merchant", "hour", "country"];
        let rows: Vec<Value> = (0..40)
            .map(|r| Value::Object(names.iter().map(|n| (n.to_string(), columns[*n][r].clone())).collect()))
            .collect();
        let info = client.get_model(segment).await.unwrap();
        let known: std::collections::HashMap<&str, Vec<String>> =
            info.feature_types.iter().map(|f| (f.name.as_str(), f.categories.clone())).collect();
        let body = serde_json::json!({"segment": segment, "features": rows, "explain": 4});
        let answer = post_json(&http, "/score", &body.to_string()).await;
        let contributions = answer["contributions"].as_array().unwrap_or_else(|| panic!("{answer}"));
        for (r, row) in contributions.iter().enumerate() {
            let got: Vec<f32> = names
                .iter()
                .map(|n| row[*n].as_f64().unwrap() as f32)
                .chain([answer["base"][r].as_f64().unwrap() as f32])
                .collect();
            assert!(worst(&got, &want[r]) <= 1e-4, "{segment} /score row {r}: {got:?} vs {:?}", want[r]);
            let reasons = answer["reasons"][r].as_array().unwrap();
            let mut last = f64::INFINITY;
            for reason in reasons {
                let (feature, contribution) =
                    (reason["feature"].as_str().unwrap(), reason["contribution"].as_f64().unwrap());
                assert!(
                    contribution > 0.0 && contribution <= last,
                    "{segment} row {r}: reasons largest first, positive"
                );
                assert!((contribution - row[feature].as_f64().unwrap()).abs() < 1e-6);
                // A category's value is its name as the model read it (null: missing or unseen).
                let sent = &columns[feature][r];
                let read = match sent.as_str() {
                    Some(name) if !known[feature].iter().any(|c| c == name) => Value::Null,
                    _ => sent.clone(),
                };
                match (reason["value"].as_f64(), read.as_f64()) {
                    (Some(got), Some(want)) => assert_eq!(got as f32, want as f32, "{segment} row {r} {feature}"),
                    _ => assert_eq!(reason["value"], read, "{segment} row {r} {feature}"),
                }
                last = contribution;
            }
        }
    }
    // Without `explain`, /score's answer has exactly its old keys.
    let plain = post_json(&http, "/score", r#"{"segment": "xgboost-binary", "features": [[0,0,0,0,0,0,0,0]]}"#).await;
    let keys: Vec<&str> = plain.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["labels", "prediction", "probability", "request_id", "segment", "version"]);
}

/// The explained output of one row's probabilities (two labels: log-odds; more: centred log-probabilities).
fn explained(probabilities: &[f32]) -> Vec<f64> {
    let log: Vec<f64> = probabilities.iter().map(|p| f64::from(*p).max(f64::from(f32::MIN_POSITIVE)).ln()).collect();
    match log.len() {
        2 => vec![log[1] - log[0]],
        n => log.iter().map(|l| l - log.iter().sum::<f64>() / n as f64).collect(),
    }
}

#[tokio::test]
async fn networks_get_shapley_values_exact_over_every_coalition() {
    // Networks (ONNX from torch, safetensors, INT8), a scikit-learn pipeline and a forest lowered from ONNX.
    let segments = ["torch-sigmoid", "torch-safetensors", "onnx-int8", "sklearn-binary", "onnx-forest"];
    let table = |segment: &str| -> Vec<Vec<Option<f64>>> {
        serde_json::from_value(fixture(segment, "expected.json")["rows"].clone()).unwrap()
    };
    let background = |segment: &str| table(segment)[100..104].to_vec();
    let dir =
        repository(&segments, |segment, manifest| manifest["background"] = serde_json::json!(background(segment)));
    let (_server, mut client) = serve(dir.path(), &[]).await;
    for segment in segments {
        let value = |v: &Option<f64>| v.map_or(f32::NAN, |v| v as f32);
        let base: Vec<f32> = background(segment).concat().iter().map(value).collect();
        let values: Vec<f32> = table(segment)[..3].concat().iter().map(value).collect();
        let rows_proto = proto::Rows { feature_count: FEATURES as u32, values: values.clone(), text: vec![] };
        let answer = client.batch_predict_explained(segment, rows_proto, 3).await.unwrap();
        let features = client.get_model(segment).await.unwrap().features;
        for (r, prediction) in answer.predictions.iter().enumerate() {
            let row = &values[r * FEATURES..(r + 1) * FEATURES];
            // Every coalition against every background row, through plain BatchPredict.
            let mut hybrids = Vec::new();
            for coalition in 0..1usize << FEATURES {
                for b in base.chunks(FEATURES) {
                    hybrids.extend((0..FEATURES).map(|i| if coalition >> i & 1 == 1 { row[i] } else { b[i] }));
                }
            }
            let mut v: Vec<Vec<f64>> = Vec::new();
            for part in hybrids.chunks(FEATURES * 1000) {
                let scored = client.batch_predict(segment, FEATURES, part.to_vec()).await.unwrap();
                v.extend(scored.predictions.iter().map(|p| explained(&p.probabilities)));
            }
            let outputs = v[0].len();
            let factorial = |n: usize| (1..=n).map(|k| k as f64).product::<f64>();
            let mut exact = Vec::new();
            for output in 0..outputs {
                // v of a coalition: the mean over the four background rows.
                let value = |c: usize| v[c * 4..c * 4 + 4].iter().map(|o| o[output]).sum::<f64>() / 4.0;
                for i in 0..FEATURES {
                    let phi: f64 = (0..1usize << FEATURES)
                        .filter(|c| c >> i & 1 == 0)
                        .map(|c| {
                            let s = c.count_ones() as usize;
                            factorial(s) * factorial(FEATURES - s - 1) / factorial(FEATURES)
                                * (value(c | 1 << i) - value(c))
                        })
                        .sum();
                    exact.push(phi);
                }
                exact.push(value(0));
            }
            let explanation = prediction.explanation.as_ref().unwrap();
            assert_eq!(explanation.method, "exact");
            let off = worst(&explanation.contributions, &exact);
            assert!(off <= 1e-3, "{segment} row {r}: off by {off:e}");
            let about = if outputs == 1 { 0 } else { prediction.class_index as usize };
            check_reasons(explanation, about, row, &features, 3);
        }
    }
}

#[tokio::test]
async fn bundled_networks_sampled_values_sum_to_their_log_odds() {
    let metrics = free_port();
    let server = TestServer::start(&["--metrics-listen", &metrics]).await;
    let mut client = common::client(&server).await;
    for segment in ["retail", "corporate", "sme"] {
        let data = rows(segment, 5);
        let rows_proto = proto::Rows { feature_count: 30, values: data.values.clone(), text: vec![] };
        let answer = client.batch_predict_explained(segment, rows_proto, 4).await.unwrap();
        let features = client.get_model(segment).await.unwrap().features;
        for (r, prediction) in answer.predictions.iter().enumerate() {
            let explanation = prediction.explanation.as_ref().unwrap();
            assert_eq!((explanation.method.as_str(), explanation.contributions.len()), ("sampled", 31));
            let total: f64 = explanation.contributions.iter().map(|c| f64::from(*c)).sum();
            let log_odds = explained(&prediction.probabilities)[0];
            assert!(
                (total - log_odds).abs() <= 1e-3 * log_odds.abs().max(1.0),
                "{segment} row {r}: {total} vs {log_odds}"
            );
            check_reasons(explanation, 0, &data.values[r * 30..(r + 1) * 30], &features, 4);
        }
    }
    let counted =
        metric(&metrics, "candela_explained_rows_total", &[("segment", "retail"), ("method", "sampled")]).await;
    assert_eq!(counted, 5.0);
}

#[tokio::test]
async fn bad_explain_values_are_refused_naming_the_field() {
    let http = free_port();
    let server = TestServer::start(&["--http-listen", &http, "--max-explain", "5", "--max-explain-rows", "3"]).await;
    let mut client = common::client(&server).await;
    let row = rows("retail", 4).values;
    let status = client.predict_explained("retail", row[..30].to_vec(), 6).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("explain is 6; this server gives at most 5 reasons (--max-explain)"),
        "{}",
        status.message()
    );
    let many = proto::Rows { feature_count: 30, values: row.clone(), text: vec![] };
    let status = client.batch_predict_explained("retail", many.clone(), 1).await.unwrap_err();
    assert!(
        status.message().starts_with("rows.values holds 4 rows to explain; this server explains at most 3"),
        "{}",
        status.message()
    );
    // The same rows without explanations are no trouble.
    assert_eq!(client.batch_predict_explained("retail", many, 0).await.unwrap().predictions.len(), 4);

    for (explain, shown) in [("-1", "-1"), ("2.5", "2.5"), ("\"3\"", "\"3\"")] {
        let body = format!(r#"{{"segment": "retail", "features": [{:?}], "explain": {explain}}}"#, &row[..30]);
        let answer = post_json(&http, "/score", &body).await;
        let message = answer["error"].as_str().unwrap_or_else(|| panic!("{answer}"));
        assert!(message.starts_with(&format!("explain is {shown}; send the number of reasons")), "{message}");
    }
    let mut oip_client = GrpcInferenceServiceClient::connect(server.url.clone()).await.unwrap();
    let request = |parameter: Option<ParameterChoice>, outputs: &[&str]| {
        let mut request = oip::ModelInferRequest {
            model_name: "retail".into(),
            inputs: vec![oip::model_infer_request::InferInputTensor {
                name: "features".into(),
                datatype: "FP32".into(),
                shape: vec![1, 30],
                contents: Some(oip::InferTensorContents { fp32_contents: row[..30].to_vec(), ..Default::default() }),
                ..Default::default()
            }],
            outputs: outputs
                .iter()
                .map(|name| oip::model_infer_request::InferRequestedOutputTensor {
                    name: name.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        if let Some(choice) = parameter {
            request.parameters.insert("explain".into(), oip::InferParameter { parameter_choice: Some(choice) });
        }
        request
    };
    let status =
        oip_client.model_infer(request(Some(ParameterChoice::StringParam("three".into())), &[])).await.unwrap_err();
    assert!(
        status.message().starts_with("parameters[explain] must be an integer of at least 0"),
        "{}",
        status.message()
    );
    let status = oip_client.model_infer(request(None, &["contributions"])).await.unwrap_err();
    assert!(
        status.message().starts_with("outputs[0].name is `contributions`; set the request parameter `explain`"),
        "{}",
        status.message()
    );
    let answer = oip_client
        .model_infer(request(Some(ParameterChoice::Int64Param(2)), &["prediction"]))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = answer.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["prediction", "contributions"], "an explained request gets its contributions too");

    // Explanations off: any k above 0 is refused; 0 is as if not asked.
    let off = TestServer::start(&["--max-explain", "0"]).await;
    let mut client = common::client(&off).await;
    let status = client.predict_explained("retail", row[..30].to_vec(), 1).await.unwrap_err();
    assert!(
        status.message().contains("this server does not explain answers (--max-explain 0)"),
        "{}",
        status.message()
    );
    assert!(client.predict_explained("retail", row[..30].to_vec(), 0).await.is_ok());
}

#[tokio::test]
async fn a_network_without_a_background_cannot_explain_and_says_what_to_add() {
    let dir = repository(&["torch-sigmoid"], |_, _| {});
    let (_server, mut client) = serve(dir.path(), &[]).await;
    let row: Vec<f32> = vec![0.1; FEATURES];
    let status = client.predict_explained("torch-sigmoid", row.clone(), 2).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("has no training statistics (`monitoring.features`) and model.json gives no `background` rows"),
        "{}",
        status.message()
    );
    assert!(client.predict("torch-sigmoid", row).await.is_ok(), "plain scoring is untouched");
}

#[tokio::test]
async fn plain_calls_are_answered_between_the_parts_of_an_explained_one() {
    let server = TestServer::start(&[]).await;
    let (mut explaining, mut plain) = (common::client(&server).await, common::client(&server).await);
    // 100 rows of a 30-feature network: 185,800 hybrid rows, scored one explained row per pass.
    let many = proto::Rows { feature_count: 30, values: rows("retail", 100).values, text: vec![] };
    let explained = tokio::spawn(async move { explaining.batch_predict_explained("retail", many, 3).await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    for _ in 0..5 {
        plain.predict("retail", rows("retail", 1).values).await.unwrap();
    }
    assert!(!explained.is_finished(), "five plain calls were answered while the explained one was still being scored");
    let answer = explained.await.unwrap().unwrap();
    assert_eq!(answer.predictions.len(), 100);
}
