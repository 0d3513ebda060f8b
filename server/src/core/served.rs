//! One served model version: the loaded model, the queue its compute workers
//! take merged forward passes from, the workers, and its statistics (drift
//! included). The registry indexes them; requests and rollouts hold them.

use crate::core::batching::{BatchPolicy, Batcher, Overrides};
use crate::core::drift::{Drift, DriftSettings};
use crate::core::stats::ModelStats;
use crate::core::workers::Workers;
use crate::model::LoadedModel;
use crate::observe::metrics::Metrics;
use std::ops::Deref;
use std::sync::Arc;

/// A loaded model as the core serves it: the model, the queue its compute
/// workers take merged forward passes from, the workers, and what it has
/// served. Requests hold it (`Arc`) while they run; when the last holder
/// lets go (the registry dropped it and its requests finished), its queue
/// closes and its workers finish what is queued and exit, releasing the
/// model's memory.
pub struct ServedModel {
    pub loaded: Arc<LoadedModel>,
    pub batcher: Arc<Batcher>,
    pub stats: Arc<ModelStats>,
    _workers: Workers,
}

/// How many compute workers each model gets, how many threads each, and
/// how drift is measured.
#[derive(Debug, Clone, Copy)]
pub struct Compute {
    pub workers: usize,
    pub threads: usize,
    pub drift: DriftSettings,
}

impl ServedModel {
    /// Serves `loaded` under its manifest's batching policy as `overrides`
    /// change it, on `compute` workers of its own, reporting to `metrics`.
    pub fn new(
        loaded: LoadedModel,
        overrides: &Overrides,
        compute: Compute,
        metrics: Arc<Metrics>,
    ) -> Result<ServedModel, rayon::ThreadPoolBuildError> {
        let policy = BatchPolicy::resolve(&loaded.manifest.batching, overrides);
        let drift = Drift::new(loaded.manifest.monitoring.as_ref(), &loaded.manifest.features, compute.drift);
        let (loaded, stats) = (Arc::new(loaded), Arc::new(ModelStats::new(drift)));
        let inline = overrides.inline_lone && loaded.device == "cpu";
        let queue_metrics = metrics.queue_series(&loaded.segment, loaded.version);
        let batcher = Arc::new(Batcher::new(policy, inline, queue_metrics));
        let workers = Workers::start(&loaded, &batcher, &stats, compute.workers, compute.threads)?;
        Ok(ServedModel { loaded, batcher, stats, _workers: workers })
    }
}

impl Drop for ServedModel {
    fn drop(&mut self) {
        self.batcher.close();
    }
}

/// A served model is its loaded model (segment, version, manifest, network)
/// plus serving state; requests read both through it.
impl Deref for ServedModel {
    type Target = LoadedModel;
    fn deref(&self) -> &LoadedModel {
        &self.loaded
    }
}
