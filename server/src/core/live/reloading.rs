//! One reload, under the books' lock on a blocking thread: what the scan
//! found is narrowed to the versions wanted (the version policy, the
//! per-segment and total bounds), each new or changed version is loaded,
//! checked and warmed (a panic in a parser refuses that version alone), the
//! new registry is published in one atomic store, and what changed or
//! failed is logged and counted once.

use super::{Books, Entry, LiveRepository, Reloaded, State, VersionPolicy, lock};
use crate::core::registry::Registry;
use crate::core::served::ServedModel;
use crate::model::MANIFEST_FILE;
use crate::model::error::LoadError;
use crate::model::remote::Synced;
use crate::model::repository::{self, Found};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

impl LiveRepository {
    pub(super) fn reload_locked(&self, books: &mut Books, synced: Result<Synced, LoadError>) -> Reloaded {
        let mut report = Reloaded::default();
        // A failed sync leaves the cache as it was: what is served stays served.
        match synced {
            Ok(synced) => {
                if synced.downloaded + synced.removed > 0 {
                    tracing::info!(downloaded = synced.downloaded, removed = synced.removed, "model cache synced");
                }
                for (key, reason) in synced.skipped {
                    report.skipped.push(LoadError::Refused { path: key.into(), reason });
                }
            }
            Err(error) => report.problems.push(error),
        }
        let scan = match repository::scan(self.options.location.dir()) {
            Ok(scan) => scan,
            Err(error) => {
                report.problems.push(error);
                return report;
            }
        };
        report.problems = scan.problems;
        let found: BTreeSet<(String, u64)> = scan.found.iter().map(|f| (f.segment.clone(), f.version)).collect();
        // A version without model.json is being published (its files first,
        // model.json last) or unpublished (model.json first): not a problem,
        // not served (a served one is released), and not counted by the
        // version policy.
        let (published, pending): (Vec<Found>, Vec<Found>) = scan.found.into_iter().partition(|f| f.published);
        for version in &pending {
            let reason = format!("waiting for {MANIFEST_FILE}: publish it last, after the files it names");
            self.set_status(&version.segment, version.version, State::Unavailable, reason);
        }
        report.pending = pending;
        let wanted = self.wanted(published, &books.unloaded);
        let keys: BTreeSet<(String, u64)> = wanted.iter().map(|f| (f.segment.clone(), f.version)).collect();
        for found in wanted {
            let key = (found.segment.clone(), found.version);
            let previous = books.entries.remove(&key);
            let entry = match previous {
                Some(entry) if entry.fingerprint == found.fingerprint => {
                    if let Some(reason) = &entry.failure {
                        report.problems.push(LoadError::Refused { path: found.dir.clone(), reason: reason.clone() });
                    }
                    entry
                }
                previous => self.load_version(&found, previous.and_then(|p| p.served), &mut report),
            };
            books.entries.insert(key, entry);
        }
        let gone: Vec<(String, u64)> = books.entries.keys().filter(|key| !keys.contains(*key)).cloned().collect();
        for key in gone {
            if let Some(entry) = books.entries.remove(&key)
                && let Some(model) = entry.served
            {
                self.metrics.model_unloaded(&key.0, key.1);
                self.metrics.release.drift_removed(&key.0, key.1, &model.manifest.features);
                report.removed.push(key);
            }
        }
        let mut served: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for ((segment, version), entry) in &books.entries {
            if entry.served.is_some() {
                served.entry(segment.clone()).or_default().push(*version);
            }
        }
        let root = self.options.location.dir();
        let policies_changed = books.policies.read(root, &served, &self.metrics, &mut report.problems);
        *lock(&self.refused) =
            books.policies.refusals().into_iter().map(|(segment, reason)| (segment, self.relative(reason))).collect();
        if report.changed() || policies_changed || self.served.load().is_none() {
            self.publish(books, &mut report);
        }
        // The index follows what requests see: updated after the swap.
        lock(&self.status).retain(|key, _| found.contains(key));
        for (segment, version) in &report.loaded {
            self.set_status(segment, *version, State::Ready, String::new());
        }
        report
    }

    /// The found versions the policy serves, out of unloaded segments, within
    /// the bounds on versions loaded: per segment the newest, across the
    /// repository each segment's newest first, then each one's second newest,
    /// and so on.
    fn wanted(&self, found: Vec<Found>, unloaded: &BTreeSet<String>) -> Vec<Found> {
        let mut by_segment: BTreeMap<String, Vec<Found>> = BTreeMap::new();
        for found in found {
            by_segment.entry(found.segment.clone()).or_default().push(found);
        }
        let per_segment = self.options.max_versions_per_segment;
        let mut ranked: Vec<(usize, Found)> = Vec::new();
        for (segment, mut versions) in by_segment {
            versions.sort_by_key(|f| std::cmp::Reverse(f.version));
            let (kept, reason) = match self.options.policy {
                VersionPolicy::Latest(n) if n <= per_segment => {
                    (n, format!("not served: --version-policy latest:{n} serves the {n} newest versions"))
                }
                _ => (
                    per_segment,
                    format!(
                        "not loaded: --max-versions-per-segment {per_segment} holds the {per_segment} newest versions of a segment"
                    ),
                ),
            };
            for older in versions.drain(kept.min(versions.len())..) {
                self.set_status(&older.segment, older.version, State::Unavailable, reason.clone());
            }
            if unloaded.contains(&segment) {
                for version in &versions {
                    let reason = "unloaded (RepositoryModelUnload); load the segment to serve it again".to_string();
                    self.set_status(&segment, version.version, State::Unavailable, reason);
                }
                continue;
            }
            ranked.extend(versions.into_iter().enumerate());
        }
        ranked.sort_by(|(a, x), (b, y)| (a, &x.segment).cmp(&(b, &y.segment)));
        let total = self.options.max_loaded_versions;
        for (_, over) in ranked.drain(total.min(ranked.len())..) {
            let reason =
                format!("not loaded: --max-loaded-versions {total} versions are loaded (each segment's newest first)");
            self.set_status(&over.segment, over.version, State::Unavailable, reason);
        }
        ranked.into_iter().map(|(_, found)| found).collect()
    }

    /// Loads one new or changed version; on failure, keeps serving `served`
    /// (the version's earlier files), if any.
    fn load_version(&self, found: &Found, served: Option<Arc<ServedModel>>, report: &mut Reloaded) -> Entry {
        let (segment, version) = (found.segment.as_str(), found.version);
        self.set_status(segment, version, State::Loading, String::new());
        let options = &self.options;
        // A parser's panic is this version's failure alone: caught at the
        // version's boundary, so the reload carries on with every other change.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            repository::load_version(
                segment,
                version,
                &found.dir,
                &self.device,
                &self.device_name,
                options.max_model_bytes,
            )
        }))
        .unwrap_or_else(|panic| Err(LoadError::Panicked { path: found.dir.clone(), message: panic_message(&*panic) }))
        .and_then(|loaded| {
            let (dtype, created) = (loaded.manifest.dtype.as_str(), loaded.manifest.provenance.created.clone());
            let model =
                ServedModel::new(loaded, &options.overrides, options.compute, self.metrics.clone()).map_err(|e| {
                    LoadError::Refused {
                        path: found.dir.clone(),
                        reason: format!("cannot start its compute threads: {e}"),
                    }
                })?;
            self.metrics.model_loaded(segment, version, dtype, &self.device_name, &created);
            Ok(model)
        });
        match loaded {
            Ok(model) => {
                // READY once published (see `reload_locked`).
                report.loaded.push((segment.to_string(), version));
                Entry { fingerprint: found.fingerprint.clone(), served: Some(Arc::new(model)), failure: None }
            }
            Err(error) => {
                let reason = error.to_string();
                let (state, shown) = match &served {
                    Some(_) => (State::Ready, format!("serving the files read earlier; the new ones failed: {reason}")),
                    None => (State::Unavailable, reason.clone()),
                };
                self.set_status(segment, version, state, shown);
                report.problems.push(error);
                Entry { fingerprint: found.fingerprint.clone(), served, failure: Some(reason) }
            }
        }
    }

    /// Builds the registry of every served version and publishes it.
    /// A configured default segment that is not served (unloaded, removed,
    /// broken) is reported, and requests naming no segment are then refused
    /// until it is served again; the other segments serve on.
    fn publish(&self, books: &Books, report: &mut Reloaded) {
        let models: Vec<Arc<ServedModel>> = books.entries.values().filter_map(|entry| entry.served.clone()).collect();
        let count = models.len();
        let mut default = self.options.default_segment.as_deref();
        if let Some(segment) = default
            && !models.iter().any(|model| model.segment == segment)
        {
            let reason = format!(
                "the default segment `{segment}` is not served: requests that name no segment are refused until it is"
            );
            report.problems.push(LoadError::Refused { path: self.options.location.dir().to_path_buf(), reason });
            default = None;
        }
        let registry = Registry::new(&self.runtime, models, default, books.policies.states())
            .expect("the default segment is among the models");
        self.served.store(Some(Arc::new(registry)));
        self.count.send_replace(count);
    }

    /// A reload, logged and counted (`report`).
    pub(super) fn reload_reported(&self, books: &mut Books, synced: Result<Synced, LoadError>) -> Reloaded {
        let report = self.reload_locked(books, synced);
        self.report(books, &report);
        report
    }

    /// Logs and counts a reload's outcome (`failed` when it met a problem
    /// not seen before, else `changed` or `unchanged`); warns once about
    /// each version past --max-model-age.
    pub(super) fn report(&self, books: &mut Books, report: &Reloaded) {
        let all = || report.problems.iter().chain(&report.skipped);
        let problems: BTreeSet<String> = all().map(ToString::to_string).collect();
        let new_problems = problems.difference(&books.logged).count() > 0;
        let result = if new_problems {
            "failed"
        } else if report.changed() {
            "changed"
        } else {
            "unchanged"
        };
        self.metrics.reloaded(result);
        let new = |problem: &&LoadError| !books.logged.contains(&problem.to_string());
        for problem in report.problems.iter().filter(new) {
            self.metrics.repository_refused(problem.reason());
            tracing::error!(problem = %problem, "model repository: a version cannot be served; the others are unaffected");
        }
        for skipped in report.skipped.iter().filter(new) {
            self.metrics.repository_refused("unsafe_key");
            tracing::warn!(problem = %skipped, "model repository: an object is not mirrored; everything else is");
        }
        books.logged = problems;
        let pending: BTreeSet<(String, u64)> = report.pending.iter().map(|f| (f.segment.clone(), f.version)).collect();
        for (segment, version) in pending.difference(&books.pending) {
            tracing::info!(segment, version, "model version waits for its model.json (published last)");
        }
        books.pending = pending;
        for (segment, version) in &report.loaded {
            tracing::info!(segment, version, "model version loaded and serving");
        }
        for (segment, version) in &report.removed {
            tracing::info!(segment, version, "model version removed: finishing its requests, then released");
        }
        if let Some(max_age) = self.options.max_model_age {
            let now = SystemTime::now();
            for ((segment, version), entry) in &books.entries {
                let Some(model) = &entry.served else { continue };
                let Ok(created) = humantime::parse_rfc3339_weak(&model.manifest.provenance.created) else { continue };
                let age = now.duration_since(created).unwrap_or_default();
                if age > max_age && books.stale.insert((segment.clone(), *version)) {
                    tracing::warn!(
                        segment,
                        version,
                        age_days = age.as_secs() / 86_400,
                        "model version is older than --max-model-age: publish a retrained version"
                    );
                }
            }
        }
    }
}

/// What a caught panic said, when it said it as text.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => text.to_string(),
        (_, Some(text)) => text.clone(),
        _ => "no message".into(),
    }
}
