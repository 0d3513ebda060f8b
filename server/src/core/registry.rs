//! The served set: segment + version → served model (`Registry`), with each
//! segment's rollout policy bound to its models. The registry is built once
//! per reload and never mutated, so every request reads it without a lock.

use crate::core::error::{ServeError, echo};
use crate::core::rollout::{PolicyState, Rollout, Route};
use crate::core::served::ServedModel;
use crate::model::LoadedModel;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Every served model, by segment then version, and the segments' rollouts.
pub struct Registry {
    segments: BTreeMap<String, BTreeMap<u64, Arc<ServedModel>>>,
    default_segment: Option<String>,
    rollouts: BTreeMap<String, Rollout>,
}

impl Registry {
    /// Indexes `models` and binds `policies` (checked against them) to them.
    /// The default segment is `configured` when given (it must exist), else
    /// the only segment when there is exactly one, else none.
    pub fn new(
        models: Vec<Arc<ServedModel>>,
        configured: Option<&str>,
        policies: Vec<Arc<PolicyState>>,
    ) -> Result<Registry, String> {
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
        let mut rollouts = BTreeMap::new();
        for state in policies {
            let Some(versions) = segments.get(&state.segment) else { continue };
            let find = |version: u64| versions.get(&version).cloned();
            let policy = &state.policy;
            let Some(stable) = find(policy.stable) else { continue };
            let canary = policy.canary.and_then(|share| find(share.version));
            let shadow = policy.shadow.and_then(|share| find(share.version));
            rollouts.insert(state.segment.clone(), Rollout::new(state.clone(), stable, canary, shadow));
        }
        Ok(Registry { segments, default_segment, rollouts })
    }

    /// Where a request goes: a pinned version, else, under a rollout policy,
    /// the canary or the stable version as the routing `key` draws (see
    /// `Rollout::route`), else the newest version.
    pub fn route(&self, segment: &str, version: u64, key: &str) -> Result<Route, ServeError> {
        let name = self.segment_name(segment)?;
        if version == 0
            && let Some(rollout) = self.rollouts.get(name)
        {
            return Ok(rollout.route(key));
        }
        self.resolve(name, version).map(|model| Route::to(model.clone()))
    }

    /// The model a request names: `segment` empty → the default segment,
    /// `version` 0 → the stable version of a rollout policy, else the newest.
    pub fn resolve(&self, segment: &str, version: u64) -> Result<&Arc<ServedModel>, ServeError> {
        let segment = self.segment_name(segment)?;
        let versions = self.segments.get(segment).ok_or_else(|| {
            ServeError::NotFound(format!(
                "unknown segment `{}`; this server serves: {}",
                echo(segment),
                self.segment_list()
            ))
        })?;
        let found = match (version, self.rollouts.get(segment)) {
            (0, Some(rollout)) => Some(&rollout.stable),
            (0, None) => versions.values().next_back(),
            _ => versions.get(&version),
        };
        found.ok_or_else(|| {
            let known: Vec<String> = versions.keys().map(u64::to_string).collect();
            ServeError::NotFound(format!(
                "segment `{segment}` has no version {version}; it has versions: {} (send 0 for the newest)",
                known.join(", ")
            ))
        })
    }

    /// The segment a request names (`""`: the default segment).
    fn segment_name<'a>(&'a self, segment: &'a str) -> Result<&'a str, ServeError> {
        if segment.is_empty() {
            self.default_segment.as_deref().ok_or_else(|| {
                ServeError::invalid(
                    "segment",
                    format!("is required: this server has no default segment; name one of: {}", self.segment_list()),
                )
            })
        } else {
            Ok(segment)
        }
    }

    /// Every segment's rollout.
    pub fn rollouts(&self) -> impl Iterator<Item = &Rollout> {
        self.rollouts.values()
    }

    /// The rollout of `segment`, if it has a policy in force.
    pub fn rollout(&self, segment: &str) -> Option<&Rollout> {
        self.rollouts.get(segment)
    }

    /// Every model, ordered by segment then version.
    pub fn models(&self) -> impl Iterator<Item = &Arc<ServedModel>> {
        self.segments.values().flat_map(BTreeMap::values)
    }

    /// Every version of `segment`, oldest first (none for an unknown segment).
    pub fn versions(&self, segment: &str) -> impl Iterator<Item = u64> + '_ {
        self.segments.get(segment).into_iter().flat_map(|versions| versions.keys().copied())
    }

    /// Whether `model` is the version a request pinning none would get
    /// (the stable version, under a rollout policy).
    pub fn is_latest(&self, model: &LoadedModel) -> bool {
        if let Some(rollout) = self.rollouts.get(&model.segment) {
            return rollout.stable.version == model.version;
        }
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
