//! No silent wrong answers: a finite feature far outside the training scale
//! that overflows inside the network (standardisation to ±inf, then inf − inf
//! = NaN in a linear layer, then ReLU's NaN → 0) must never come back OK with
//! the biases' answer. Every such row is INVALID_ARGUMENT naming the row and
//! the feature; every row answered OK agrees with the same model computed in
//! f64, for f32, f16 and bf16 models alike; and a bad row never costs the
//! other callers merged into its forward pass.

mod common;

use candela_server::testing::{FEATURES, TestServer, rows, settings};
use common::wait_for;
use std::path::Path;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

/// A repository of the demo `retail` model in each dtype: `retail_f32`, …
fn repository_in_every_dtype(root: &Path) {
    let demo = candela_server::testing::demo_models().join("retail").join("1");
    for dtype in ["f32", "f16", "bf16", "f64"] {
        let dir = root.join(format!("retail_{dtype}")).join("1");
        std::fs::create_dir_all(&dir).unwrap();
        let mut manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(demo.join("model.json")).unwrap()).unwrap();
        manifest["dtype"] = dtype.into();
        std::fs::write(dir.join("model.json"), manifest.to_string()).unwrap();
        std::fs::copy(demo.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    }
}

async fn start(extra: &[&str]) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    repository_in_every_dtype(dir.path());
    let server = TestServer::start_with(settings(dir.path(), extra)).await;
    wait_for(&mut common::client(&server).await, "", ServingStatus::Serving).await;
    (server, dir)
}

/// Asserts an overflow refusal names feature `column` of `row` in `field` form.
fn assert_names(status: &tonic::Status, field: &str, name: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let violations = status.get_details_bad_request().expect("BadRequest details").field_violations;
    assert!(
        violations.iter().any(|v| v.field == field && v.description.contains(&format!("`{name}`"))),
        "{field} (`{name}`) not named in {violations:?}"
    );
    assert!(status.message().contains("far outside the scale the model was trained on"), "{}", status.message());
}

#[tokio::test]
async fn extreme_features_are_refused_naming_the_feature_or_answered_as_f64_answers_them() {
    let (server, _dir) = start(&[]).await;
    let mut client = common::client(&server).await;
    let info = client.get_model("retail_f32").await.unwrap();
    let base = rows("retail", 1).values;
    let mut refused = 0;
    let mut answered = 0;
    for dtype in ["f32", "f16", "bf16"] {
        let segment = format!("retail_{dtype}");
        // How far an answer may be from f64's: the dtype's own precision.
        let tolerance = if dtype == "f32" { 1e-4 } else { 3e-2 };
        for column in 0..FEATURES {
            for value in [3.0e38f32, -3.0e38, 1.0e30, -1.0e20, 1.0e12, 6.0e4] {
                let mut row = base.clone();
                row[column] = value;
                let reference = client.predict("retail_f64", row.clone()).await.unwrap().prediction.unwrap();
                match client.predict(segment.as_str(), row).await {
                    Ok(response) => {
                        let got = response.prediction.unwrap();
                        for (p, q) in got.probabilities.iter().zip(&reference.probabilities) {
                            assert!(
                                (p - q).abs() <= tolerance,
                                "{segment}: feature {column} = {value:e} answered OK with {:?}; f64 says {:?}",
                                got.probabilities,
                                reference.probabilities
                            );
                        }
                        answered += 1;
                    }
                    Err(status) => {
                        assert_names(&status, &format!("features[{column}]"), &info.features[column]);
                        refused += 1;
                    }
                }
            }
        }
    }
    println!("refused {refused}, answered (agreeing with f64) {answered}");
    assert!(refused >= FEATURES, "extreme values must overflow f32/f16 somewhere: only {refused} refused");
}

#[tokio::test]
async fn a_batch_names_only_its_overflowing_rows_and_merged_callers_are_answered() {
    // A 200 ms batching window merges the concurrent calls into one pass.
    let (server, _dir) = start(&["--max-queue-delay-us", "200000"]).await;
    let mut client = common::client(&server).await;
    let info = client.get_model("retail_f32").await.unwrap();
    let good = rows("retail", 8).values;
    let alone = client.batch_predict("retail_f32", FEATURES, good.clone()).await.unwrap().predictions;

    let mut bad = rows("retail", 4).values;
    bad[FEATURES + 6] = 3.0e38; // row 1, feature 6
    bad[3 * FEATURES + 6] = -3.0e38; // row 3, feature 6
    let mut other = common::client(&server).await;
    let (merged, refused) = tokio::join!(
        client.batch_predict("retail_f32", FEATURES, good),
        other.batch_predict("retail_f32", FEATURES, bad)
    );
    let merged = merged.expect("a caller merged with an overflowing row is answered");
    for (a, b) in merged.predictions.iter().zip(&alone) {
        assert_eq!(a.class_index, b.class_index);
        for (p, q) in a.probabilities.iter().zip(&b.probabilities) {
            assert!((p - q).abs() < 1e-6);
        }
    }
    let status = refused.unwrap_err();
    assert_names(&status, "rows.values[1][6]", &info.features[6]);
    assert_names(&status, "rows.values[3][6]", &info.features[6]);
    let violations = status.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations.len(), 2, "only the overflowing rows are named: {violations:?}");
    assert!(status.message().starts_with("2 rows overflow the model"), "{}", status.message());

    // The stream path names rows the same way, and the stream carries on.
    let model = candela_client::ModelId::latest("retail_f32");
    let batches = vec![
        candela_client::stream_batch("bad", &model, FEATURES, bad_row(&info.features)),
        candela_client::stream_batch("good", &model, FEATURES, rows("retail", 2).values),
    ];
    let mut responses = client.stream_predict(futures::stream::iter(batches)).await.unwrap();
    let first = responses.message().await.unwrap().unwrap();
    let Some(candela_client::proto::stream_predict_response::Outcome::Error(error)) = first.outcome else {
        panic!("an overflowing batch was answered: {first:?}")
    };
    assert_eq!(error.code, Code::InvalidArgument as i32);
    assert_eq!(error.field_violations[0].field, "rows.values[0][2]");
    let second = responses.message().await.unwrap().unwrap();
    assert!(matches!(second.outcome, Some(candela_client::proto::stream_predict_response::Outcome::Result(_))));

    // BatchPredictStream: the chunk's status carries the same BadRequest details.
    let mut chunks = client.batch_predict_stream("retail_f32", FEATURES, bad_row(&info.features)).await.unwrap();
    let status = chunks.message().await.unwrap_err();
    assert_names(&status, "rows.values[0][2]", &info.features[2]);
}

/// One row with feature 2 at f32's largest magnitude.
fn bad_row(features: &[String]) -> Vec<f32> {
    let mut row = rows("retail", 1).values;
    assert_eq!(row.len(), features.len());
    row[2] = f32::MAX;
    row
}
