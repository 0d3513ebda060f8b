//! Arbitrary bytes as a model file of each format (the first byte picks
//! XGBoost JSON, XGBoost UBJSON, LightGBM text or ONNX; the second the label
//! count): loading must refuse it with a message or build a model that then
//! scores rows (missing values included) without panicking or looping.
#![no_main]

use candela_server::model::scorer::Scorer;
use candela_server::model::{manifest::DTypeName, onnx, trees};
use libfuzzer_sys::fuzz_target;

const FEATURES: usize = 8;

fuzz_target!(|data: &[u8]| {
    let [format, classes, file @ ..] = data else { return };
    let classes = 2 + usize::from(*classes % 3);
    let scorer: Option<Box<dyn Scorer>> = match format % 4 {
        0 => trees::xgboost::parse(file, false, FEATURES, classes).ok().map(|f| Box::new(f) as Box<dyn Scorer>),
        1 => trees::xgboost::parse(file, true, FEATURES, classes).ok().map(|f| Box::new(f) as Box<dyn Scorer>),
        2 => trees::lightgbm::parse(file, FEATURES, classes).ok().map(|f| Box::new(f) as Box<dyn Scorer>),
        _ => {
            let names: Vec<String> = (0..FEATURES).map(|i| format!("f{i}")).collect();
            let labels: Vec<String> = (0..classes).map(|k| k.to_string()).collect();
            let device = candle_core::Device::Cpu;
            onnx::compile(file, &names, &labels, DTypeName::F32, &device).ok().map(|compiled| compiled.scorer)
        }
    };
    if let Some(scorer) = scorer {
        let mut rows = vec![0.5f32; FEATURES * 3];
        rows[FEATURES] = f32::NAN;
        rows[2 * FEATURES + 1] = -1e30;
        if scorer.accepts_missing() || rows.iter().all(|v| v.is_finite()) {
            let _ = scorer.forward(&rows);
        } else {
            let _ = scorer.forward(&rows[..FEATURES]);
        }
    }
});
