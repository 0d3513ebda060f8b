//! The served set: segment + version → served model (`Registry`), with each
//! segment's rollout policy bound to its models. The registry is built once
//! per reload and never mutated, so every request reads it without a lock.

use crate::core::error::{ServeError, echo};
use crate::core::rollout::{PolicyState, Rollout, Route};
use crate::core::served::ServedModel;
use crate::model::LoadedModel;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::runtime::Handle;

/// Every served model, by segment then version, and the segments' rollouts.
pub struct Registry {
    segments: BTreeMap<String, BTreeMap<u64, Arc<ServedModel>>>,
    default_segment: Option<String>,
    rollouts: BTreeMap<String, Rollout>,
}

impl Registry {
    /// Indexes `models` and binds `policies` (checked against them) to them;
    /// their shadows are served on `runtime`. The default segment is
    /// `configured` when given (it must exist), else the only segment when
    /// there is exactly one, else none.
    pub fn new(
        runtime: &Handle,
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
            rollouts.insert(state.segment.clone(), Rollout::new(runtime, state.clone(), stable, canary, shadow));
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

#[cfg(test)]
mod tests {
    use super::Registry;
    use crate::core::batching::Overrides;
    use crate::core::drift::DriftSettings;
    use crate::core::error::ServeError;
    use crate::core::rollout::PolicyState;
    use crate::core::served::{Compute, ServedModel};
    use crate::model::{repository, rollout_policy};
    use crate::observe::metrics::Metrics;
    use candle_core::Device;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::runtime::Handle;

    /// The demo model of `from` served as `segment` version `version`.
    fn served(from: &str, segment: &str, version: u64) -> Arc<ServedModel> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(from).join("1");
        let loaded = repository::load_version(segment, version, &dir, &Device::Cpu, "cpu", u64::MAX).unwrap();
        let drift = DriftSettings { window: Duration::from_secs(60), min_rows: 100, max_rows: 1000 };
        let compute = Compute { workers: 1, threads: 1, drift };
        Arc::new(ServedModel::new(loaded, &Overrides::default(), compute, Arc::new(Metrics::new())).unwrap())
    }

    fn policy(segment: &str, text: &str) -> Arc<PolicyState> {
        let parsed = rollout_policy::parse(text).unwrap();
        Arc::new(PolicyState::new(segment, parsed, text.to_string(), Arc::new(Metrics::new())))
    }

    #[tokio::test]
    async fn a_request_goes_to_the_version_it_pins_else_the_newest_of_its_segment() {
        let models = vec![served("retail", "retail", 1), served("retail", "retail", 2), served("sme", "sme", 1)];
        let registry = Registry::new(&Handle::current(), models, Some("sme"), Vec::new()).unwrap();
        let route = |segment: &str, version: u64| registry.route(segment, version, "key").map(|r| r.model.version);
        assert_eq!(route("retail", 0).unwrap(), 2, "the newest");
        assert_eq!(route("retail", 1).unwrap(), 1, "pinned");
        assert_eq!(registry.route("", 0, "key").unwrap().model.segment, "sme", "the default segment");
        let Err(ServeError::NotFound(message)) = route("corporate", 0) else { panic!("an unknown segment") };
        assert!(message.contains("`corporate`") && message.contains("retail, sme"), "{message}");
        assert!(matches!(route("retail", 7), Err(ServeError::NotFound(_))));
        assert!(registry.route("retail", 0, "key").unwrap().shadow.is_none(), "no policy, no shadow");
    }

    #[tokio::test]
    async fn a_canary_takes_its_share_by_key_and_a_pinned_version_bypasses_the_policy() {
        let models = vec![served("retail", "retail", 1), served("retail", "retail", 2)];
        let state = policy("retail", r#"{"stable": 1, "canary": {"version": 2, "percent": 25}}"#);
        let registry = Registry::new(&Handle::current(), models, None, vec![state.clone()]).unwrap();
        let version = |key: &str| registry.route("retail", 0, key).unwrap().model.version;
        let canary = (0..4_000).filter(|i| version(&format!("customer-{i}")) == 2).count();
        assert!((800..1200).contains(&canary), "25 % of 4,000 keys to the canary: {canary}");
        assert_eq!(version("customer-7"), version("customer-7"), "one key stays on one version");
        assert_eq!(registry.route("retail", 1, "any").unwrap().model.version, 1);
        assert_eq!(registry.route("retail", 2, "any").unwrap().model.version, 2);
        // Rolled back: every unpinned request goes to the stable version.
        state.roll_back("test", "operator").unwrap();
        assert!((0..1_000).all(|i| version(&format!("customer-{i}")) == 1));
    }

    #[tokio::test]
    async fn a_shadowed_route_carries_the_shadow_for_its_share() {
        let models = vec![served("retail", "retail", 1), served("sme", "retail", 5)];
        let state = policy("retail", r#"{"stable": 1, "shadow": {"version": 5, "percent": 100}}"#);
        let registry = Registry::new(&Handle::current(), models, None, vec![state]).unwrap();
        let route = registry.route("retail", 0, "key").unwrap();
        assert_eq!(route.model.version, 1, "the stable version answers");
        assert!(route.shadow.is_some(), "every row is offered to the shadow");
        assert!(registry.route("retail", 5, "key").unwrap().shadow.is_none(), "a pinned call is not shadowed");
    }
}
