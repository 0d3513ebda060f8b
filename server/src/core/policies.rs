//! The segments' rollout policies as the live repository reads them, and
//! the status `rollout status` reports. Each reload reads every served
//! segment's `rollout.json` (a few bytes): an unchanged file keeps its state
//! (the canary's share, a rollback, the guard's and the shadow's counts); a
//! changed one is parsed and checked against the versions being served and
//! then replaces it, or is refused with the reason (log, metric, status) and
//! the previous policy stays; so does one that cannot be read (a FIFO, a
//! device, a dangling link, too large, not UTF-8). Only a removed file
//! returns the segment to the newest-version rule.

use crate::core::drift::DriftReport;
use crate::core::registry::Registry;
use crate::core::rollout::{PolicyState, RolloutReport};
use crate::model::error::LoadError;
use crate::model::rollout_policy::{self, ROLLOUT_FILE};
use crate::observe::metrics::Metrics;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The policy in force per segment, and the last file refused.
#[derive(Default)]
pub struct Policies {
    segments: BTreeMap<String, Segment>,
}

#[derive(Default)]
struct Segment {
    state: Option<Arc<PolicyState>>,
    /// What was last refused (the file's text, or why it could not be
    /// read), and why: a refusal is counted once, not on every scan.
    refused: Option<(String, String)>,
}

impl Policies {
    /// Reads the policy of every segment in `served` (its served versions)
    /// under `root`; problems go to `problems`. Says whether the policies in
    /// force changed.
    pub fn read(
        &mut self,
        root: &Path,
        served: &BTreeMap<String, Vec<u64>>,
        metrics: &Arc<Metrics>,
        problems: &mut Vec<LoadError>,
    ) -> bool {
        let mut changed = false;
        self.segments.retain(|segment, books| {
            let keep = served.contains_key(segment);
            if !keep && books.state.is_some() {
                metrics.release.policy_removed(segment);
                changed = true;
            }
            keep
        });
        for (segment, versions) in served {
            let dir = root.join(segment);
            let books = self.segments.entry(segment.clone()).or_default();
            let text = match rollout_policy::read(&dir) {
                Ok(text) => text,
                // Unreadable is not removed: refused like an invalid file (only
                // deleting the file drops the policy in force).
                Err(error) => {
                    let (dropped, reason) =
                        books.refuse(segment, format!("unreadable: {error}"), &error, versions, metrics);
                    problems.push(LoadError::Refused { path: dir.join(ROLLOUT_FILE), reason });
                    changed |= dropped;
                    continue;
                }
            };
            let Some(text) = text else {
                books.refused = None;
                if books.state.take().is_some() {
                    metrics.release.policy_removed(segment);
                    tracing::info!(segment, "rollout.json removed: the newest version serves requests that pin none");
                    changed = true;
                }
                continue;
            };
            let current = books.state.as_ref().filter(|state| state.text == text);
            if let Some(state) = current
                && state.policy.check(versions).is_ok()
            {
                // The file in force (again, if a refused one was reverted).
                books.refused = None;
                continue;
            }
            let checked = rollout_policy::parse(&text).and_then(|policy| policy.check(versions).map(|()| policy));
            match checked {
                Ok(policy) => {
                    tracing::info!(segment, policy = %text.trim(), "rollout policy in force");
                    books.state = Some(Arc::new(PolicyState::new(segment, policy, text, metrics.clone())));
                    books.refused = None;
                    changed = true;
                }
                Err(why) => {
                    let (dropped, reason) = books.refuse(segment, text, &why, versions, metrics);
                    problems.push(LoadError::Refused { path: dir.join(ROLLOUT_FILE), reason });
                    changed |= dropped;
                }
            }
        }
        changed
    }

    /// The policies in force.
    pub fn states(&self) -> Vec<Arc<PolicyState>> {
        self.segments.values().filter_map(|books| books.state.clone()).collect()
    }

    /// Why the last `rollout.json` of each segment was refused, where one was.
    pub fn refusals(&self) -> BTreeMap<String, String> {
        self.segments
            .iter()
            .filter_map(|(segment, books)| books.refused.as_ref().map(|(_, reason)| (segment.clone(), reason.clone())))
            .collect()
    }
}

impl Segment {
    /// Refuses the segment's policy file (`refused`: its text, or why it
    /// could not be read; `why`: what is wrong with it), counting a refusal
    /// once however many scans meet it. The policy in force stays while the
    /// versions it names are served (`versions`). Says whether the policy in
    /// force was dropped, and the reason to report.
    fn refuse(
        &mut self,
        segment: &str,
        refused: String,
        why: &dyn std::fmt::Display,
        versions: &[u64],
        metrics: &Metrics,
    ) -> (bool, String) {
        if self.refused.as_ref().is_none_or(|(before, _)| *before != refused) {
            metrics.release.policy_refused(segment);
        }
        let dropped = self.state.as_ref().is_some_and(|state| state.policy.check(versions).is_err());
        if dropped {
            self.state = None;
            metrics.release.policy_removed(segment);
        }
        let kept = match self.state {
            Some(_) => "the previous policy stays in force",
            None => "the newest version serves requests that pin none",
        };
        let reason = format!("refused: {why}; {kept}");
        self.refused = Some((refused, reason.clone()));
        (dropped, reason)
    }
}

/// One segment's release state, as `rollout status` shows it.
#[derive(Debug, Clone)]
pub struct SegmentStatus {
    pub segment: String,
    /// The policy in force and what it has seen; none: the newest version serves.
    pub rollout: Option<RolloutReport>,
    /// Why the last policy file was refused.
    pub refused: Option<String>,
    pub versions: Vec<VersionRelease>,
}

/// One served version's part in a segment's release.
#[derive(Debug, Clone)]
pub struct VersionRelease {
    pub version: u64,
    /// `stable`, `canary`, `shadow`, `newest`, or `pinned only`.
    pub role: &'static str,
    /// Requests answered and failed since the version was loaded.
    pub requests: u64,
    pub errors: u64,
    /// Drift over the drift window; none without statistics or enough rows.
    pub drift: Option<DriftReport>,
}

/// The status of every served segment (or only `only`), with the reasons
/// policy files were `refused`.
pub fn status(registry: &Registry, refused: &BTreeMap<String, String>, only: Option<&str>) -> Vec<SegmentStatus> {
    let mut segments: BTreeMap<&str, SegmentStatus> = BTreeMap::new();
    for model in registry.models().filter(|model| only.is_none_or(|segment| model.segment == segment)) {
        let state = registry.rollout(&model.segment).map(|rollout| &rollout.state);
        let policy = state.map(|state| &state.policy);
        let role = match policy {
            Some(policy) if policy.stable == model.version => "stable",
            Some(policy) if policy.canary.is_some_and(|share| share.version == model.version) => "canary",
            Some(policy) if policy.shadow.is_some_and(|share| share.version == model.version) => "shadow",
            None if registry.is_latest(model) => "newest",
            _ => "pinned only",
        };
        let entry = segments.entry(model.segment.as_str()).or_insert_with(|| SegmentStatus {
            segment: model.segment.clone(),
            rollout: state.map(|state| state.report()),
            refused: refused.get(&model.segment).cloned(),
            versions: Vec::new(),
        });
        let (ok, failed) = (model.stats.success.get().0, model.stats.fail.get().0);
        entry.versions.push(VersionRelease {
            version: model.version,
            role,
            requests: ok + failed,
            errors: failed,
            drift: model.stats.drift.as_ref().and_then(|drift| drift.report()),
        });
    }
    segments.into_values().collect()
}
