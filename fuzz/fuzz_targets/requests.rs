//! Arbitrary bytes as a candela.v1 BatchPredictRequest / PredictRequest and
//! as an Open Inference Protocol ModelInferRequest, through decoding and the
//! same validation the server runs. Any panic, or an allocation sized by a
//! declared (rather than sent) shape, is a bug.
#![no_main]

use candela::inference::ModelInferRequest;
use candela::v1::{BatchPredictRequest, PredictRequest};
use candela_server::api::v1::RowsField;
use candela_server::api::open_inference::decode_input;
use candela_server::core::scoring::check_rows;
use candela_server::model::LoadedModel;
use candela_server::model::repository::{DEFAULT_MAX_MODEL_BYTES, load_version};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::LazyLock;

static MODEL: LazyLock<LoadedModel> = LazyLock::new(|| {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/retail/1");
    load_version("retail", 1, &dir, &candle_core::Device::Cpu, "cpu", DEFAULT_MAX_MODEL_BYTES).expect("the demo model loads")
});

fuzz_target!(|data: &[u8]| {
    let model = &*MODEL;
    if let Ok(request) = BatchPredictRequest::decode(data)
        && let Some(rows) = &request.rows
    {
        let _ = check_rows(model, &RowsField::Rows, rows.feature_count as usize, &rows.values, 1000);
    }
    if let Ok(request) = PredictRequest::decode(data) {
        let _ = check_rows(model, &RowsField::Features, request.features.len(), &request.features, 1);
    }
    if let Ok(request) = ModelInferRequest::decode(data)
        && let Ok(rows) = decode_input(model, &request, 1000)
    {
        let _ = check_rows(model, rows.fields, rows.width, &rows.values, rows.max_rows);
    }
});
