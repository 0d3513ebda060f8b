//! `candela model init`: model.json drafted from a model file, by the same
//! loader the server runs, so what it writes is what the server will serve.
//! The format comes from the file's name (or is given); a booster's or an
//! ONNX graph's features, categories (written out for a booster), labels
//! and task come from the file,
//! a safetensors network's layers and features from the caller. What
//! cannot be inferred is refused naming the model.json key (and so the
//! flag) that says it. The draft lists the file's SHA-256, so a copy still
//! in progress is never served, and the time it was drafted.

use super::manifest::{Format, LayerSpec, Manifest, Task};
use super::monitoring::{Bins, Monitoring};
use super::repository::{self, DEFAULT_MAX_MODEL_BYTES};
use super::scorer::{Scorer, scored_class};
use super::{MANIFEST_FILE, files};
use candle_core::Device;
use std::path::Path;

/// What the caller says about a model file that it may not say itself.
#[derive(Debug, Default)]
pub struct DraftOptions {
    /// The format, when the file's name does not tell it.
    pub format: Option<Format>,
    pub features: Vec<String>,
    pub labels: Vec<String>,
    pub task: Option<Task>,
    /// A candle network's layers (its safetensors file names only tensors).
    pub layers: Vec<LayerSpec>,
}

/// A drafted model.json and the model it describes, loaded and warmed.
pub struct Draft {
    pub manifest: Manifest,
    pub scorer: Box<dyn Scorer>,
}

/// The format a model file's name says it is in.
fn format_of(path: &Path) -> Result<Format, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let ext = name.rsplit_once('.').map(|(_, ext)| ext).unwrap_or_default();
    Ok(match ext {
        "onnx" => Format::Onnx,
        "txt" => Format::Lightgbm,
        "json" | "ubj" => Format::Xgboost,
        "safetensors" => Format::Candle,
        _ => {
            return Err(format!(
                "cannot tell the format of `{name}` from its name: pass --format onnx, lightgbm, xgboost or candle"
            ));
        }
    })
}

/// Drafts model.json for the model file at `path` (beside which it will be
/// written) and loads the model it describes.
pub fn draft(path: &Path, options: DraftOptions, created: &str) -> Result<Draft, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name == MANIFEST_FILE {
        return Err(format!("`{name}` is the manifest itself: name the model file beside it"));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let format = match options.format {
        Some(format) => format,
        None => format_of(path)?,
    };
    if format == Format::Candle && options.layers.is_empty() {
        return Err(
            "`layers`: a safetensors file names tensors, not the layers between them: pass --layers with model.json's \
             `layers` (for example '[{\"type\": \"linear\"}, {\"type\": \"relu\"}, {\"type\": \"linear\"}, {\"type\": \"softmax\"}]'), \
             or export with scripts/torch_to_candela.py, which writes both"
                .into(),
        );
    }
    if format == Format::Candle && options.features.is_empty() {
        return Err("`features`: a safetensors file does not name its inputs: pass --features, in row order".into());
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let draft = serde_json::json!({
        "features": options.features,
        "labels": options.labels,
        "task": options.task,
        "format": format,
        "file": name,
        "layers": options.layers,
        "files": {name.as_str(): files::sha256_hex(&bytes)},
        "provenance": {"created": created, "notes": format!("model.json drafted by `candela model init {name}`")},
    });
    drop(bytes);
    let mut manifest = repository::parse_manifest(&draft.to_string())?;
    let scorer = repository::build_scorer(dir, &mut manifest, &Device::Cpu, DEFAULT_MAX_MODEL_BYTES)
        .map_err(|e| e.to_string())?;
    // A booster's categories, written out so model.json says what callers send (the same as the file's).
    if matches!(format, Format::Xgboost | Format::Lightgbm) {
        for (feature, name) in manifest.features.iter().enumerate() {
            if let Some(categories) = scorer.categories(feature) {
                manifest.categories.insert(name.clone(), categories.values().to_vec());
            }
        }
    }
    if let Some(line) = scorer.description().first() {
        manifest.provenance.notes = format!("{}: {line}", manifest.provenance.notes);
    }
    Ok(Draft { manifest, scorer })
}

impl Draft {
    /// Adds training statistics from `rows` (row-major, the model's
    /// features; categories as codes): each number feature's deciles and the
    /// score's (as drift reads it: `scored_class`), so the server measures
    /// drift against them. Category features are left out.
    pub fn monitor(&mut self, rows: &[f32]) -> Result<(), String> {
        let width = self.scorer.inputs();
        if rows.is_empty() || !rows.len().is_multiple_of(width) {
            return Err(format!("the sample must hold whole rows of {width} features, and at least one"));
        }
        let pass = self.scorer.forward(rows).map_err(|e| format!("scoring the sample: {e}"))?;
        let outputs = self.scorer.outputs();
        let scores: Vec<f64> =
            pass.probabilities.chunks(outputs).map(|row| f64::from(row[scored_class(row)])).collect();
        let mut features = std::collections::BTreeMap::new();
        for (column, name) in self.manifest.features.iter().enumerate() {
            if self.scorer.categories(column).is_some() {
                continue;
            }
            let values = rows.iter().skip(column).step_by(width).map(|v| f64::from(*v));
            let values: Vec<f64> = values.filter(|v| v.is_finite()).collect();
            if !values.is_empty() {
                features.insert(name.clone(), Bins::deciles(values));
            }
        }
        self.manifest.monitoring = Some(Monitoring { features, score: Some(Bins::deciles(scores)) });
        Ok(())
    }
}
