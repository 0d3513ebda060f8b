//! The model layer: what a model version is once loaded, and everything that
//! happens at load time only: the repository scan (`repository`), mirroring
//! one in object storage (`remote`), reading
//! files within limits (`files`), the `model.json` manifest (`manifest`,
//! with its training statistics in `monitoring`), a segment's rollout
//! policy file (`rollout_policy`),
//! building and warming the network (`network`, with `hints` for tensors
//! that are not where the manifest says; `onnx` turns an ONNX graph into the
//! same network or the native forest, behind a `pipeline` of per-column
//! steps), tree ensembles (`trees`: XGBoost and LightGBM files
//! evaluated natively) and opening the device (`device`).
//! `scorer` is the one model interface the serving core calls, whatever the
//! format; nothing else here runs on the request path. This layer imports
//! nothing from the core or the front.

pub mod categories;
mod columns;
pub mod device;
pub mod draft;
pub mod error;
pub mod files;
mod hints;
pub mod manifest;
pub mod monitoring;
pub mod network;
pub mod onnx;
pub mod pipeline;
pub mod publish;
pub mod remote;
pub mod repository;
pub mod rollout_policy;
pub mod scorer;
pub mod shapley;
pub mod trees;

use manifest::Manifest;
use scorer::Scorer;

/// The name of a model version's description file.
pub const MANIFEST_FILE: &str = "model.json";
/// The name of a candle network's weights file (the default `file` of the
/// `candle` format).
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// One loaded, warmed model version.
pub struct LoadedModel {
    pub segment: String,
    pub version: u64,
    pub manifest: Manifest,
    /// The model's forward pass, whatever its format.
    pub scorer: Box<dyn Scorer>,
    /// The device the model runs on, as configured (`cpu`, `cuda:0`; trees
    /// always compute on the CPU).
    pub device: String,
    /// What the model is explained against when it does not explain itself
    /// (`shapley`), or why it cannot be.
    pub baseline: Result<shapley::Baseline, String>,
}
