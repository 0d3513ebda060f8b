//! A segment's rollout policy, `<segment>/rollout.json`: which version serves
//! requests that pin none (`stable`), which takes a share of them (`canary`),
//! which scores a copy of them without answering anyone (`shadow`), and the
//! guard that rolls a canary back. Read with the repository (so it comes from
//! object storage too and every replica follows the same file); parsed and
//! checked here, at load; the serving core applies it.

use super::error::LoadError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The name of a segment's rollout policy file.
pub const ROLLOUT_FILE: &str = "rollout.json";

/// The most bytes a policy file may hold.
const MAX_POLICY_BYTES: u64 = 64 * 1024;

/// A segment's rollout policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutPolicy {
    /// The version requests that pin none get (outside the canary's share).
    pub stable: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Share>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Share>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Guard>,
}

/// A version and the share of unpinned requests (0–100 %) it gets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    pub version: u64,
    pub percent: f64,
}

impl Share {
    /// The share in basis points (0–10,000).
    pub fn basis_points(&self) -> u32 {
        (self.percent * 100.0).round() as u32
    }
}

/// When a canary is rolled back: after `breaches_to_rollback` windows in a
/// row in which the canary breached a limit: its error rate or p95 latency
/// over its limit and over the stable version's in the same window (judged
/// with at least `min_requests` canary requests), or its live AUC minus the
/// stable version's below `min_auc_delta` (classifiers), or its live mean
/// absolute error over `max_mae_ratio` times the stable version's
/// (regressors), over the quality window (judged once both have
/// `min_outcomes` joined outcomes there).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    #[serde(default = "default_window_seconds")]
    pub window_seconds: f64,
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p95_ms: Option<f64>,
    #[serde(default = "default_breaches")]
    pub breaches_to_rollback: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_auc_delta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mae_ratio: Option<f64>,
    #[serde(default = "default_min_outcomes")]
    pub min_outcomes: u64,
}

fn default_min_outcomes() -> u64 {
    100
}

fn default_window_seconds() -> f64 {
    60.0
}

fn default_min_requests() -> u64 {
    100
}

fn default_breaches() -> u32 {
    2
}

/// The window over which request counts and latencies are reported when a
/// policy has no guard.
pub const DEFAULT_WINDOW_SECONDS: f64 = 60.0;

impl RolloutPolicy {
    /// The measurement window, in seconds.
    pub fn window_seconds(&self) -> f64 {
        self.guard.map_or(DEFAULT_WINDOW_SECONDS, |guard| guard.window_seconds)
    }

    /// Checks the policy against the versions of its segment that are served
    /// (`served`); says what to fix.
    pub fn check(&self, served: &[u64]) -> Result<(), String> {
        let known = || served.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        let mut named = vec![("stable", self.stable)];
        for (role, share) in [("canary", &self.canary), ("shadow", &self.shadow)] {
            let Some(share) = share else { continue };
            if !(share.percent.is_finite() && (0.0..=100.0).contains(&share.percent)) {
                return Err(format!("`{role}.percent` is {}: give 0 to 100", share.percent));
            }
            if share.version == self.stable {
                return Err(format!("`{role}.version` is the stable version {}: name another version", self.stable));
            }
            named.push((role, share.version));
        }
        if let Some(guard) = &self.guard {
            if !(guard.window_seconds.is_finite() && guard.window_seconds >= 0.1) {
                return Err(format!("`guard.window_seconds` is {}: give at least 0.1", guard.window_seconds));
            }
            if let Some(delta) = guard.min_auc_delta
                && !(delta.is_finite() && (-1.0..=1.0).contains(&delta))
            {
                return Err(format!(
                    "`guard.min_auc_delta` is {delta}: an AUC difference is -1 to 1 (-0.03: the canary may score at most 0.03 below the stable version)"
                ));
            }
            if let Some(ratio) = guard.max_mae_ratio
                && !(ratio.is_finite() && ratio > 0.0)
            {
                return Err(format!(
                    "`guard.max_mae_ratio` is {ratio}: give a positive ratio (1.1: the canary's mean absolute error may be at most 10 % above the stable version's)"
                ));
            }
            if (guard.min_auc_delta.is_some() || guard.max_mae_ratio.is_some()) && guard.min_outcomes == 0 {
                return Err("`guard.min_outcomes` is 0: give at least 1 (100 by default)".into());
            }
            if guard.breaches_to_rollback == 0 {
                return Err("`guard.breaches_to_rollback` is 0: give at least 1".into());
            }
            if let Some(rate) = guard.max_error_rate
                && !(0.0..=1.0).contains(&rate)
            {
                return Err(format!("`guard.max_error_rate` is {rate}: a rate is 0 to 1 (0.02 is 2 %)"));
            }
            if let Some(ms) = guard.max_p95_ms
                && !(ms.is_finite() && ms > 0.0)
            {
                return Err(format!("`guard.max_p95_ms` is {ms}: give a positive number of milliseconds"));
            }
        }
        for (role, version) in named {
            if !served.contains(&version) {
                return Err(format!(
                    "`{role}` names version {version}, which is not loaded (served versions: {}); publish it first",
                    known()
                ));
            }
        }
        Ok(())
    }
}

/// Reads `segment_dir/rollout.json` through the repository's bounded reader
/// (a regular file of at most 64 KiB of UTF-8, never a FIFO or a device):
/// `None` only when no such entry exists, else its text or why it cannot be
/// read. A link that leads nowhere is a refusal, not a removal.
pub fn read(segment_dir: &Path) -> Result<Option<String>, LoadError> {
    match super::files::read_text(&segment_dir.join(ROLLOUT_FILE), MAX_POLICY_BYTES, "a policy holds at most 64 KiB") {
        Ok(text) => Ok(Some(text)),
        Err(LoadError::Missing { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Parses a policy file's text.
pub fn parse(text: &str) -> Result<RolloutPolicy, String> {
    super::files::parse_json(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses_and_checks() {
        let policy = parse(
            r#"{"stable": 3, "canary": {"version": 4, "percent": 10}, "shadow": {"version": 5, "percent": 100},
                "guard": {"window_seconds": 60, "min_requests": 100, "max_error_rate": 0.02,
                          "max_p95_ms": 250, "breaches_to_rollback": 2}}"#,
        )
        .unwrap();
        assert_eq!(policy.canary.unwrap().basis_points(), 1000);
        assert!(policy.check(&[3, 4, 5]).is_ok());
        let refused = policy.check(&[3, 5]).unwrap_err();
        assert!(refused.contains("`canary` names version 4, which is not loaded (served versions: 3, 5)"), "{refused}");
    }

    #[test]
    fn bad_policies_say_what_to_fix() {
        assert!(parse(r#"{"stable": 1, "canary": {"version": 2}}"#).unwrap_err().contains("percent"));
        assert!(parse(r#"{"stable": 1, "canry": {}}"#).unwrap_err().contains("canry"));
        let over = parse(r#"{"stable": 1, "canary": {"version": 2, "percent": 120}}"#).unwrap();
        assert!(over.check(&[1, 2]).unwrap_err().contains("0 to 100"));
        let same = parse(r#"{"stable": 1, "shadow": {"version": 1, "percent": 5}}"#).unwrap();
        assert!(same.check(&[1]).unwrap_err().contains("stable version"));
        let rate = parse(r#"{"stable": 1, "guard": {"max_error_rate": 2}}"#).unwrap();
        assert!(rate.check(&[1]).unwrap_err().contains("0.02 is 2 %"));
        let auc = parse(r#"{"stable": 1, "guard": {"min_auc_delta": -3}}"#).unwrap();
        assert!(auc.check(&[1]).unwrap_err().contains("-1 to 1"));
        let mae = parse(r#"{"stable": 1, "guard": {"max_mae_ratio": -1}}"#).unwrap();
        assert!(mae.check(&[1]).unwrap_err().contains("give a positive ratio"));
        let none = parse(r#"{"stable": 1, "guard": {"min_auc_delta": -0.03, "min_outcomes": 0}}"#).unwrap();
        assert!(none.check(&[1]).unwrap_err().contains("min_outcomes"));
        let fine = parse(r#"{"stable": 1, "guard": {"min_auc_delta": -0.03}}"#).unwrap();
        assert_eq!(fine.guard.unwrap().min_outcomes, 100);
        assert!(fine.check(&[1]).is_ok());
    }
}
