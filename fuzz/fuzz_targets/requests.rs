//! Arbitrary bytes as a candela.v1 BatchPredictRequest / PredictRequest, as
//! an Open Inference Protocol ModelInferRequest, and as the HTTP port's
//! bodies (a REST infer request, JSON or with binary tensor data after a
//! split the first byte picks; a `/score` request), through decoding and the
//! same validation the server runs, for the demo model and for a model taking
//! an input per feature with string categories. Any panic, or an allocation sized by a
//! declared (rather than sent) shape, is a bug. The hand-coded `Rows`
//! (src/rows.rs) must also agree with prost's generated code on every input
//! (its category columns of strings included):
//! the same values or an error from both, and the same bytes re-encoded.
#![no_main]

use candela::inference::ModelInferRequest;
use candela::v1::{BatchPredictRequest, PredictRequest, Rows};
use candela_server::api::grpc::v1::{RowsField, batch_rows};
use candela_server::api::http::{body, infer_json, score};
use candela_server::api::oip::tensors::decode_input;
use candela_server::core::scoring::check_rows;
use candela_server::model::LoadedModel;
use candela_server::model::repository::{DEFAULT_MAX_MODEL_BYTES, load_version};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::LazyLock;

static MODEL: LazyLock<LoadedModel> = LazyLock::new(|| {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/retail/1");
    load_version("retail", 1, &dir, &candle_core::Device::Cpu, "cpu", DEFAULT_MAX_MODEL_BYTES)
        .expect("the demo model loads")
});

/// A model converted from a DataFrame: an input per feature, two of them string categories.
static TYPED: LazyLock<LoadedModel> = LazyLock::new(|| {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/formats/repo/onnx-dataframe/1");
    load_version("onnx-dataframe", 1, &dir, &candle_core::Device::Cpu, "cpu", DEFAULT_MAX_MODEL_BYTES)
        .expect("the DataFrame fixture loads")
});

/// What prost generates for `candela.v1.Rows`.
#[derive(Clone, PartialEq, prost::Message)]
struct GeneratedRows {
    #[prost(uint32, tag = "1")]
    feature_count: u32,
    #[prost(float, repeated, tag = "2")]
    values: Vec<f32>,
    #[prost(message, repeated, tag = "3")]
    text: Vec<candela::v1::TextColumn>,
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

fuzz_target!(|data: &[u8]| {
    match (Rows::decode(data), GeneratedRows::decode(data)) {
        (Ok(ours), Ok(generated)) => {
            assert_eq!(ours.feature_count, generated.feature_count);
            assert_eq!(bits(&ours.values), bits(&generated.values));
            assert_eq!(ours.text, generated.text);
            assert_eq!(ours.encode_to_vec(), generated.encode_to_vec());
        }
        (Err(_), Err(_)) => {}
        (ours, generated) => panic!("Rows decoded {:?}, prost's code {:?}", ours.is_ok(), generated.is_ok()),
    }
    let model = &*MODEL;
    if let Ok(request) = BatchPredictRequest::decode(data) {
        for model in [model, &*TYPED] {
            if let Ok(rows) = batch_rows(model, request.rows.clone(), 1000) {
                let _ = check_rows(model, rows.fields, rows.width, &rows.values, rows.max_rows);
            }
        }
    }
    if let Ok(request) = PredictRequest::decode(data) {
        let _ = check_rows(model, &RowsField::Features, request.features.len(), &request.features, 1);
    }
    for model in [model, &*TYPED] {
        if let Ok(request) = ModelInferRequest::decode(data)
            && let Ok(rows) = decode_input(model, &request, 1000)
        {
            let _ = check_rows(model, rows.fields, rows.width, &rows.values, rows.max_rows);
        }
        let split = data.first().map(|b| http::HeaderValue::from(*b as usize % (data.len() + 1)));
        for split in [None, split] {
            if let Ok((request, _)) =
                infer_json::decode(split, bytes::Bytes::copy_from_slice(data), "retail".into(), String::new())
                && let Ok(rows) = decode_input(model, &request, 1000)
            {
                let _ = check_rows(model, rows.fields, rows.width, &rows.values, rows.max_rows);
            }
        }
        if let Ok(request) = body::parse::<score::ScoreRequest>(data)
            && let Ok(rows) = score::rows(model, request.features, 1000)
        {
            let _ = check_rows(model, rows.fields, rows.width, &rows.values, rows.max_rows);
        }
    }
});
