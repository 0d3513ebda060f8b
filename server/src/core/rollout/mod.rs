//! Release safety for one segment, as its rollout policy says
//! (`model::rollout_policy`): requests that pin no version go to the canary
//! for its share, chosen by hashing a routing key so one customer stays on
//! one version, and to the stable version otherwise (here); a share of the
//! rows the stable version answers is scored again by the shadow version
//! after the caller has its answer (`shadow`); per window the guard judges
//! the canary against its limits and the stable version, and after enough
//! breached windows in a row sets the canary's share to 0 by itself
//! (`guard`).
//!
//! A policy's state (`PolicyState`: the canary's share, the guard's books,
//! the shadow's tally) lives as long as the policy file is unchanged, across
//! reloads; each published registry binds it to the served models
//! (`Rollout`).

mod guard;
mod shadow;

pub use shadow::{SHADOW_QUEUE_ROWS, Shadow, ShadowReport};

use crate::core::served::ServedModel;
use crate::core::stats::Window;
use crate::model::rollout_policy::RolloutPolicy;
use crate::observe::metrics::Metrics;
use guard::GuardBooks;
use sha2::{Digest, Sha256};
use shadow::ShadowTally;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::runtime::Handle;

/// A policy in force for one segment and what it has seen.
pub struct PolicyState {
    pub segment: String,
    pub policy: RolloutPolicy,
    /// The policy file's text: a reload that reads the same text keeps this state.
    pub text: String,
    /// The canary's share now, in basis points: the policy's, or 0 once rolled back.
    canary_basis_points: AtomicU32,
    guard: Mutex<GuardBooks>,
    shadow: ShadowTally,
    metrics: Arc<Metrics>,
}

/// A segment's rollout as `rollout status` reports it.
#[derive(Debug, Clone)]
pub struct RolloutReport {
    pub policy: RolloutPolicy,
    pub text: String,
    /// The canary's share now (0 once rolled back).
    pub canary_percent: f64,
    pub rolled_back: Option<String>,
    /// Breached windows in a row so far.
    pub breaches: u32,
    /// The last complete window of each version the policy names.
    pub windows: BTreeMap<u64, Window>,
    pub window_seconds: f64,
    pub shadow: ShadowReport,
}

impl PolicyState {
    /// The state of `policy` (read as `text`) for `segment`, starting now.
    pub fn new(segment: &str, policy: RolloutPolicy, text: String, metrics: Arc<Metrics>) -> PolicyState {
        let basis_points = policy.canary.map_or(0, |canary| canary.basis_points());
        metrics.release.set_canary_percent(segment, f64::from(basis_points) / 100.0);
        PolicyState {
            segment: segment.to_string(),
            policy,
            text,
            canary_basis_points: AtomicU32::new(basis_points),
            guard: Mutex::new(GuardBooks::new()),
            shadow: ShadowTally::default(),
            metrics,
        }
    }

    fn books(&self) -> MutexGuard<'_, GuardBooks> {
        self.guard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the canary's share to 0 until the policy file changes. Fails when
    /// there is no canary, or it is already rolled back.
    pub fn roll_back(&self, reason: &str, by: &'static str) -> Result<(), String> {
        let Some(canary) = self.policy.canary else {
            return Err(format!("segment `{}` has no canary in its rollout policy", self.segment));
        };
        let mut books = self.books();
        if let Some(earlier) = &books.rolled_back {
            return Err(format!("segment `{}`'s canary is already rolled back: {earlier}", self.segment));
        }
        self.canary_basis_points.store(0, Relaxed);
        books.rolled_back = Some(reason.to_string());
        self.metrics.release.set_canary_percent(&self.segment, 0.0);
        self.metrics.release.rolled_back(&self.segment, by);
        tracing::warn!(
            segment = self.segment,
            canary = canary.version,
            stable = self.policy.stable,
            reason,
            "canary rolled back: requests that pin no version go to the stable version until rollout.json changes"
        );
        Ok(())
    }

    /// What the policy has done so far.
    pub fn report(&self) -> RolloutReport {
        let books = self.books();
        RolloutReport {
            policy: self.policy.clone(),
            text: self.text.clone(),
            canary_percent: f64::from(self.canary_basis_points.load(Relaxed)) / 100.0,
            rolled_back: books.rolled_back.clone(),
            breaches: books.breaches,
            windows: books.last.clone(),
            window_seconds: self.policy.window_seconds(),
            shadow: self.shadow.report(),
        }
    }
}

/// Which of 10,000 buckets `key` falls in for a draw named `draw`: the same
/// key always lands in the same bucket, on every replica.
fn bucket(draw: &[u8], key: &str) -> u32 {
    let digest = Sha256::new().chain_update(draw).chain_update(key.as_bytes()).finalize();
    let head: [u8; 8] = digest[..8].try_into().expect("a SHA-256 has 32 bytes");
    (u64::from_le_bytes(head) % 10_000) as u32
}

/// Whether `key` is drawn into a share of `basis_points` (of 10,000) by the
/// draw named `draw`; no hashing for a share of none or all.
fn drawn(basis_points: u32, draw: &[u8], key: &str) -> bool {
    basis_points >= 10_000 || (basis_points > 0 && bucket(draw, key) < basis_points)
}

/// A segment's policy bound to the models a registry serves.
pub struct Rollout {
    pub state: Arc<PolicyState>,
    pub stable: Arc<ServedModel>,
    pub canary: Option<Arc<ServedModel>>,
    shadow: Option<Shadow>,
}

/// Where a request goes: the model that answers it, and the shadow that
/// scores its rows again afterwards, when it was drawn for one.
pub struct Route {
    pub model: Arc<ServedModel>,
    pub shadow: Option<Shadow>,
}

impl Route {
    /// A route to `model` alone.
    pub fn to(model: Arc<ServedModel>) -> Route {
        Route { model, shadow: None }
    }
}

impl Rollout {
    /// Binds `state` to the served `stable`, `canary` and `shadow` models;
    /// the shadow's queue is served by a task on `runtime`.
    pub fn new(
        runtime: &Handle,
        state: Arc<PolicyState>,
        stable: Arc<ServedModel>,
        canary: Option<Arc<ServedModel>>,
        shadow: Option<Arc<ServedModel>>,
    ) -> Rollout {
        state.books().watch(std::iter::once(&stable).chain(&canary));
        let shadow = shadow.zip(state.policy.shadow).map(|(model, share)| Shadow::new(runtime, model, &state, share));
        Rollout { state, stable, canary, shadow }
    }

    /// Routes a request that pins no version, drawn by `key`.
    pub fn route(&self, key: &str) -> Route {
        if let Some(canary) = &self.canary
            && drawn(self.state.canary_basis_points.load(Relaxed), b"canary", key)
        {
            return Route::to(canary.clone());
        }
        let shadow = self.shadow.as_ref().filter(|shadow| drawn(shadow.basis_points(), b"shadow", key)).cloned();
        Route { model: self.stable.clone(), shadow }
    }
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn draws_are_stable_per_key_and_spread_evenly() {
        assert_eq!(bucket(b"canary", "customer-42"), bucket(b"canary", "customer-42"));
        let under: usize = (0..20_000).filter(|i| bucket(b"canary", &format!("key-{i}")) < 2_000).count();
        let share = under as f64 / 20_000.0;
        assert!((share - 0.2).abs() < 0.01, "{share}");
    }
}
