//! Segment + version → model. The `ModelMap` is built once from the loaded
//! repository and never mutated, so every request reads it without a lock.

use crate::error::{ServeError, echo};
use crate::repository::Model;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Every served model, by segment then version.
pub struct ModelMap {
    segments: BTreeMap<String, BTreeMap<u64, Arc<Model>>>,
    default_segment: Option<String>,
}

impl ModelMap {
    /// Indexes `models`. The default segment is `configured` when given (it must
    /// exist), else the only segment when there is exactly one, else none.
    pub fn new(models: Vec<Model>, configured: Option<&str>) -> Result<ModelMap, String> {
        let mut segments: BTreeMap<String, BTreeMap<u64, Arc<Model>>> = BTreeMap::new();
        for model in models {
            segments.entry(model.segment.clone()).or_default().insert(model.version, Arc::new(model));
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
        Ok(ModelMap { segments, default_segment })
    }

    /// The model for a request: `segment` empty → the default segment,
    /// `version` 0 → the newest version.
    pub fn resolve(&self, segment: &str, version: u64) -> Result<&Arc<Model>, ServeError> {
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
    pub fn models(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.segments.values().flat_map(BTreeMap::values)
    }

    /// Every version of `segment`, oldest first (none for an unknown segment).
    pub fn versions(&self, segment: &str) -> impl Iterator<Item = u64> + '_ {
        self.segments.get(segment).into_iter().flat_map(|versions| versions.keys().copied())
    }

    /// Whether `model` is the version a request pinning none would get.
    pub fn is_latest(&self, model: &Model) -> bool {
        self.segments
            .get(&model.segment)
            .and_then(|v| v.keys().next_back())
            .is_some_and(|newest| *newest == model.version)
    }

    pub fn default_segment(&self) -> Option<&str> {
        self.default_segment.as_deref()
    }

    fn segment_list(&self) -> String {
        self.segments.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}
