//! Arbitrary bytes as a model file of each format (the first byte picks
//! XGBoost JSON, XGBoost UBJSON, LightGBM text or ONNX; the second the label
//! count, or a regressor): loading must refuse it with a message or build a model that then
//! scores rows (missing values included) without panicking or looping.
#![no_main]

use candela_server::model::manifest::{DTypeName, Task};
use candela_server::model::scorer::{Answers, Scorer};
use candela_server::model::{onnx, trees};
use libfuzzer_sys::fuzz_target;

const FEATURES: usize = 8;

fuzz_target!(|data: &[u8]| {
    let [format, classes, file @ ..] = data else { return };
    let answers = match classes % 4 {
        3 => Answers::Value,
        k => Answers::Classes(2 + usize::from(k)),
    };
    let scorer: Option<Box<dyn Scorer>> = match format % 4 {
        0 => trees::xgboost::parse(file, false, FEATURES, answers).ok().map(|f| Box::new(f) as Box<dyn Scorer>),
        1 => trees::xgboost::parse(file, true, FEATURES, answers).ok().map(|f| Box::new(f) as Box<dyn Scorer>),
        2 => trees::lightgbm::parse(file, FEATURES, answers).ok().map(|f| Box::new(f) as Box<dyn Scorer>),
        _ => {
            let names: Vec<String> = (0..FEATURES).map(|i| format!("f{i}")).collect();
            let (labels, task) = match answers {
                Answers::Classes(classes) => ((0..classes).map(|k| k.to_string()).collect(), None),
                Answers::Value => (Vec::new(), Some(Task::Regression)),
            };
            let device = candle_core::Device::Cpu;
            onnx::compile(file, &names, &labels, task, DTypeName::F32, &device).ok().map(|compiled| compiled.scorer)
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
