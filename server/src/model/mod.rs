//! The model layer: what a model version is once loaded, and everything that
//! happens at load time only: the repository scan (`repository`), mirroring
//! one in object storage (`remote`), reading
//! files within limits (`files`), the `model.json` manifest (`manifest`,
//! with its training statistics in `monitoring`), a segment's rollout
//! policy file (`rollout`),
//! building and warming the network (`network`, with `hints` for tensors
//! that are not where the manifest says) and opening the device (`device`).
//! The network's forward pass is the one model interface the serving core
//! calls; nothing else here runs on the request path. This layer imports
//! nothing from the core or the front.

pub mod device;
pub mod error;
pub mod files;
mod hints;
pub mod manifest;
pub mod monitoring;
pub mod network;
pub mod remote;
pub mod repository;
pub mod rollout;

use manifest::Manifest;
use network::Network;

/// The name of a model version's description file.
pub const MANIFEST_FILE: &str = "model.json";
/// The name of a model version's weights file.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// One loaded, warmed model version.
pub struct LoadedModel {
    pub segment: String,
    pub version: u64,
    pub manifest: Manifest,
    pub network: Network,
    /// The device the network runs on, as configured (`cpu`, `cuda:0`).
    pub device: String,
}
