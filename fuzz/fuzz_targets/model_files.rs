//! Arbitrary bytes as a model file of each format (the first byte picks
//! XGBoost JSON, XGBoost UBJSON, LightGBM text or ONNX; the second the label
//! count, or a regressor): loading (a booster's schema settled with model.json, categorical
//! splits included) must refuse it with a message or build a model that then scores rows
//! (missing values included) without panicking or looping.
#![no_main]

use candela_server::model::manifest::{DTypeName, Manifest, Task};
use candela_server::model::scorer::{Answers, Scorer};
use candela_server::model::trees::{self, Ensemble, Forest, schema::FileSchema};
use candela_server::model::{onnx, repository};
use libfuzzer_sys::fuzz_target;

const FEATURES: usize = 8;

/// A booster's forest as the loader builds it: the file's schema settled
/// with a model.json of `FEATURES` features (`f0`…) answering `answers`.
fn forest(read: Result<(Ensemble, FileSchema), String>, answers: Answers) -> Option<Box<dyn Scorer>> {
    let (ensemble, schema) = read.ok()?;
    let names: Vec<String> = (0..FEATURES).map(|i| format!("\"f{i}\"")).collect();
    let text = format!(r#"{{"features": [{}], "format": "xgboost"}}"#, names.join(", "));
    let mut manifest: Manifest = repository::parse_manifest(&text).ok()?;
    match answers {
        Answers::Classes(classes) => manifest.labels = (0..classes).map(|k| k.to_string()).collect(),
        Answers::Value => manifest.task = Some(Task::Regression),
    }
    let categories = trees::schema::settle(schema, &ensemble, &mut manifest).ok()?;
    let forest = Forest::build(ensemble, manifest.features.len(), manifest.answers()).ok()?;
    Some(Box::new(forest.with_categories(categories)))
}

fuzz_target!(|data: &[u8]| {
    let [format, classes, file @ ..] = data else { return };
    let answers = match classes % 4 {
        3 => Answers::Value,
        k => Answers::Classes(2 + usize::from(k)),
    };
    let scorer: Option<Box<dyn Scorer>> = match format % 4 {
        0 | 1 => forest(trees::xgboost::read(file, format % 4 == 1).and_then(|d| trees::xgboost::booster(&d)), answers),
        2 => forest(trees::lightgbm::parse(file), answers),
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
