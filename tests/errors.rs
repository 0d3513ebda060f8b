//! Every error path of candela.v1, end to end: the gRPC code, a message that
//! says what to fix, and `google.rpc.BadRequest` field violations naming the
//! row and field. A server that has answered errors still answers good calls.

mod common;

use candela_client::{ModelId, proto};
use candela_server::testing::{FEATURES, TestServer, rows, settings};
use common::wait_for;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The (field, description) pairs of a status's BadRequest details.
fn violations(status: &Status) -> Vec<(String, String)> {
    let bad_request = status.get_details_bad_request().unwrap_or_else(|| panic!("no BadRequest details in {status:?}"));
    bad_request.field_violations.into_iter().map(|v| (v.field, v.description)).collect()
}

fn assert_invalid(status: &Status, field: &str, message_part: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains(message_part), "`{}` lacks `{message_part}`", status.message());
    let found = violations(status);
    assert_eq!(found[0].0, field, "{found:?}");
}

#[tokio::test]
async fn wrong_feature_count_is_invalid_argument_naming_the_expected_count() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let status = client.predict("retail", vec![1.0; FEATURES - 1]).await.unwrap_err();
    assert_invalid(&status, "features", "has 29 values; model `retail` version 1 expects 30 features");
    let status = client.batch_predict("retail", FEATURES + 2, vec![1.0; (FEATURES + 2) * 2]).await.unwrap_err();
    assert_invalid(&status, "rows.feature_count", "is 32; model `retail` version 1 expects 30");
    let status = client.batch_predict("retail", FEATURES, vec![1.0; FEATURES * 2 + 5]).await.unwrap_err();
    assert_invalid(&status, "rows.values", "65 values, not a whole number of rows of 30");
}

#[tokio::test]
async fn nan_and_infinity_are_named_by_row_column_and_feature() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let mut row = rows("retail", 1).values;
    row[0] = f32::INFINITY;
    let status = client.predict("retail", row).await.unwrap_err();
    assert_invalid(&status, "features[0]", "`amount_log`) is inf");

    let mut values = rows("retail", 5).values;
    values[2 * FEATURES + 9] = f32::NAN;
    values[4 * FEATURES + 29] = f32::NEG_INFINITY;
    let status = client.batch_predict("retail", FEATURES, values).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("2 non-finite feature values"), "{}", status.message());
    let found = violations(&status);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].0, "rows.values[2][9]");
    assert!(found[0].1.contains("`txn_count_1h`) is NaN"), "{found:?}");
    assert_eq!(found[1].0, "rows.values[4][29]");
}

#[tokio::test]
async fn violations_are_capped_but_the_message_counts_them_all() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let status = client.batch_predict("sme", FEATURES, vec![f32::NAN; FEATURES * 10]).await.unwrap_err();
    assert!(status.message().starts_with("300 non-finite feature values"), "{}", status.message());
    assert_eq!(violations(&status).len(), candela_server::core::error::MAX_VIOLATIONS);
}

#[tokio::test]
async fn empty_and_missing_batches_are_invalid() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let status = client.batch_predict("retail", FEATURES, vec![]).await.unwrap_err();
    assert_invalid(&status, "rows.values", "is empty: send at least one row");
    let status = client
        .inference()
        .batch_predict(proto::BatchPredictRequest { explain: 0, segment: "retail".into(), version: 0, rows: None })
        .await
        .unwrap_err();
    assert_invalid(&status, "rows", "is required");
    let status = client.predict("retail", vec![]).await.unwrap_err();
    assert_invalid(&status, "features", "has 0 values");
}

#[tokio::test]
async fn more_rows_than_the_limit_is_invalid_and_says_to_split() {
    let server = TestServer::start(&["--max-rows", "100"]).await;
    let mut client = common::client(&server).await;
    let data = rows("retail", 101);
    let status = client.batch_predict("retail", FEATURES, data.values.clone()).await.unwrap_err();
    assert_invalid(
        &status,
        "rows.values",
        "holds 101 rows; this server accepts at most 100 per request: split the batch",
    );
    let ok = client.batch_predict("retail", FEATURES, data.values[..100 * FEATURES].to_vec()).await.unwrap();
    assert_eq!(ok.predictions.len(), 100);
}

#[tokio::test]
async fn the_default_row_limit_is_1000() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let data = rows("corporate", 1001);
    let status = client.batch_predict("corporate", FEATURES, data.values.clone()).await.unwrap_err();
    assert_invalid(&status, "rows.values", "at most 1000 per request");
    let ok = client.batch_predict("corporate", FEATURES, data.values[..1000 * FEATURES].to_vec()).await.unwrap();
    assert_eq!(ok.predictions.len(), 1000);
}

#[tokio::test]
async fn oversized_messages_are_invalid_argument_and_huge_ones_never_decoded() {
    let server = TestServer::start(&["--max-message-bytes", "20000", "--max-rows", "100000"]).await;
    let mut client = common::client(&server).await;
    // 200 rows × 30 features × 4 bytes = 24,000 bytes: over the limit, under twice it.
    let status = client.batch_predict("retail", FEATURES, rows("retail", 200).values).await.unwrap_err();
    assert_invalid(&status, "(message)", "this server accepts messages of at most 20000 bytes");
    // Far over: the transport refuses it before decoding.
    let status = client.batch_predict("retail", FEATURES, vec![0.5; FEATURES * 2000]).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // Within the limit still works.
    let ok = client.batch_predict("retail", FEATURES, rows("retail", 100).values).await.unwrap();
    assert_eq!(ok.predictions.len(), 100);
}

#[tokio::test]
async fn unknown_segments_and_versions_are_not_found_listing_what_exists() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let row = rows("retail", 1).values;
    let status = client.predict("wholesale", row.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "unknown segment `wholesale`; this server serves: corporate, retail, retail-gbt, sme");
    let status = client.predict(ModelId::pinned("retail", 7), row.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("segment `retail` has no version 7; it has versions: 1"), "{}", status.message());
    let status = client.get_model("wholesale").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client.batch_predict("wholesale", FEATURES, row.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client.batch_predict_stream("wholesale", FEATURES, row).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn naming_no_segment_without_a_default_is_invalid() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let status = client.predict("", rows("retail", 1).values).await.unwrap_err();
    assert_invalid(
        &status,
        "segment",
        "is required: this server has no default segment; name one of: corporate, retail, retail-gbt, sme",
    );
}

#[tokio::test]
async fn batch_predict_stream_validates_before_streaming() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    let mut values = rows("retail", 10).values;
    values[3] = f32::NAN;
    let status = client.batch_predict_stream("retail", FEATURES, values).await.unwrap_err();
    assert_invalid(&status, "rows.values[0][3]", "(`hour_cos`) is NaN; features must be finite numbers");
}

#[tokio::test]
async fn the_server_keeps_serving_after_every_kind_of_error() {
    let server = TestServer::start(&[]).await;
    let mut client = common::client(&server).await;
    for _ in 0..20 {
        let _ = client.predict("retail", vec![f32::NAN; 3]).await.unwrap_err();
        let _ = client.predict("nowhere", vec![]).await.unwrap_err();
        let _ = client.batch_predict("retail", 0, vec![]).await.unwrap_err();
    }
    assert!(client.predict("retail", rows("retail", 1).values).await.is_ok());
}

#[tokio::test]
async fn rows_that_overflow_the_model_are_invalid_argument_and_nothing_is_answered_for_them() {
    // A linear layer with a huge weight: finite features far from the
    // training scale overflow f32 inside the network, so the probabilities
    // would be NaN. The caller gets the rows named, never NaN scores.
    let dir = tempfile::tempdir().unwrap();
    let version = dir.path().join("wild").join("1");
    std::fs::create_dir_all(&version).unwrap();
    let manifest = serde_json::json!({
        "features": ["a", "b"],
        "labels": ["legit", "fraud"],
        "layers": [{"type": "linear"}, {"type": "softmax"}]
    });
    std::fs::write(version.join("model.json"), manifest.to_string()).unwrap();
    let weight = candle_core::Tensor::new(&[[1.0e30f32, 0.0], [0.0, 1.0]], &candle_core::Device::Cpu).unwrap();
    let bias = candle_core::Tensor::new(&[0.0f32, 0.0], &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("0.weight".to_string(), weight), ("0.bias".to_string(), bias)]),
        version.join("model.safetensors"),
    )
    .unwrap();
    let server = TestServer::start_with(settings(dir.path(), &[])).await;
    let mut client = common::client(&server).await;
    wait_for(&mut client, "", tonic_health::pb::health_check_response::ServingStatus::Serving).await;
    let status = client.batch_predict("wild", 2, vec![0.5, 1.0, 1.0e10, 1.0, 2.0e10, 2.0]).await.unwrap_err();
    assert_invalid(
        &status,
        "rows.values[1][0]",
        "2 rows overflow the model; the first: rows.values[1][0] (`a`) = 1e10 overflows model `wild` version 1 (dtype f32) inside the network",
    );
    assert_eq!(violations(&status)[1].0, "rows.values[2][0]", "the second row, blamed on `a` too");
    let fine = client.batch_predict("wild", 2, vec![0.5, 1.0]).await.unwrap();
    assert_eq!(fine.predictions.len(), 1);
}
