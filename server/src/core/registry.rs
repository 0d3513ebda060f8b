//! The served models: each loaded model with its request queue and
//! statistics (`ServedModel`), and segment + version → model (`Registry`).
//! The registry is built once from the loaded repository and never mutated,
//! so every request reads it without a lock.

use crate::core::batching::{Batcher, Overrides, Policy};
use crate::core::error::{ServeError, echo};
use crate::core::stats::ModelStats;
use crate::core::workers::Workers;
use crate::model::LoadedModel;
use crate::observe::metrics::Metrics;
use std::collections::BTreeMap;
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

/// How many compute workers each model gets, and how many threads each.
#[derive(Debug, Clone, Copy)]
pub struct Compute {
    pub workers: usize,
    pub threads: usize,
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
        let policy = Policy::resolve(&loaded.manifest.batching, overrides);
        let (loaded, stats) = (Arc::new(loaded), Arc::new(ModelStats::default()));
        let batcher = Arc::new(Batcher::new(policy, metrics));
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

/// Every served model, by segment then version.
pub struct Registry {
    segments: BTreeMap<String, BTreeMap<u64, Arc<ServedModel>>>,
    default_segment: Option<String>,
}

impl Registry {
    /// Indexes `models`. The default segment is `configured` when given (it must
    /// exist), else the only segment when there is exactly one, else none.
    pub fn new(models: Vec<Arc<ServedModel>>, configured: Option<&str>) -> Result<Registry, String> {
        let mut segments: BTreeMap<String, BTreeMap<u64, Arc<ServedModel>>> = BTreeMap::new();
        for model in models {
            segments.entry(model.segment.clone()).or_default().insert(model.version, model);
        }
        let default_segment = match configured {
            Some(name) if segments.contains_key(name) => Some(name.to_string()),
            Some(name) => {
                return Err(format!(
                    "the default segment `{name}` is not in the model repository (it has: {})",
                    segments.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            None if segments.len() == 1 => segments.keys().next().cloned(),
            None => None,
        };
        Ok(Registry { segments, default_segment })
    }

    /// The model for a request: `segment` empty → the default segment,
    /// `version` 0 → the newest version.
    pub fn resolve(&self, segment: &str, version: u64) -> Result<&Arc<ServedModel>, ServeError> {
        let segment = if segment.is_empty() {
            self.default_segment.as_deref().ok_or_else(|| {
                ServeError::invalid(
                    "segment",
                    format!("is required: this server has no default segment; name one of: {}", self.segment_list()),
                )
            })?
        } else {
            segment
        };
        let versions = self.segments.get(segment).ok_or_else(|| {
            ServeError::NotFound(format!(
                "unknown segment `{}`; this server serves: {}",
                echo(segment),
                self.segment_list()
            ))
        })?;
        let found = if version == 0 { versions.values().next_back() } else { versions.get(&version) };
        found.ok_or_else(|| {
            let known: Vec<String> = versions.keys().map(u64::to_string).collect();
            ServeError::NotFound(format!(
                "segment `{segment}` has no version {version}; it has versions: {} (send 0 for the newest)",
                known.join(", ")
            ))
        })
    }

    /// Every model, ordered by segment then version.
    pub fn models(&self) -> impl Iterator<Item = &Arc<ServedModel>> {
        self.segments.values().flat_map(BTreeMap::values)
    }

    /// Every version of `segment`, oldest first (none for an unknown segment).
    pub fn versions(&self, segment: &str) -> impl Iterator<Item = u64> + '_ {
        self.segments.get(segment).into_iter().flat_map(|versions| versions.keys().copied())
    }

    /// Whether `model` is the version a request pinning none would get.
    pub fn is_latest(&self, model: &LoadedModel) -> bool {
        self.segments
            .get(&model.segment)
            .and_then(|v| v.keys().next_back())
            .is_some_and(|newest| *newest == model.version)
    }

    pub fn default_segment(&self) -> Option<&str> {
        self.default_segment.as_deref()
    }

    fn segment_list(&self) -> String {
        if self.segments.is_empty() {
            return "none (every segment is unloaded or failed to load)".into();
        }
        self.segments.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}
