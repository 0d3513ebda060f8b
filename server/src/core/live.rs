//! The live model repository: the set of served models, swapped atomically
//! as the repository on disk changes, without a restart. A reload scans the
//! repository (metadata only), loads, checks and warms each new or changed
//! version off the request path, keeps unchanged versions as they are, and
//! publishes the new registry in one atomic store: a request takes one
//! snapshot and finishes on the models it started with; a version no longer
//! published stops taking requests and is released once its last request
//! ends. A version that fails to load never disturbs the ones being served:
//! it is reported (log, metrics, `index`) and retried when its files change.
//! Reloads run one at a time, on blocking threads, never on the reactor.

use crate::core::batching::Overrides;
use crate::core::error::{ServeError, echo};
use crate::core::outcomes::Outcomes;
use crate::core::policies::{self, Policies, SegmentStatus};
use crate::core::registry::Registry;
use crate::core::rollout::Route;
use crate::core::served::{Compute, ServedModel};
use crate::model::MANIFEST_FILE;
use crate::model::error::{LoadError, LoadErrors};
use crate::model::remote::Location;
use crate::model::repository::{self, Fingerprint, Found};
use crate::observe::metrics::Metrics;
use crate::observe::quality::Measured;
use arc_swap::ArcSwapOption;
use candle_core::Device;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Which versions of each segment are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionPolicy {
    /// Every version in the repository.
    All,
    /// The N highest-numbered versions of each segment.
    Latest(usize),
}

impl FromStr for VersionPolicy {
    type Err = String;
    fn from_str(text: &str) -> Result<VersionPolicy, String> {
        match text.split_once(':') {
            None if text == "all" => Ok(VersionPolicy::All),
            Some(("latest", n)) => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(VersionPolicy::Latest(n)),
                _ => Err(format!("`{text}`: N in latest:N is a whole number of at least 1")),
            },
            _ => Err(format!("`{text}` is not a version policy: use `all` or `latest:N` (e.g. latest:2)")),
        }
    }
}

/// How the live repository reads and serves models.
pub struct Options {
    /// Where the repository is: a directory, or object storage mirrored into one.
    pub location: Location,
    pub max_model_bytes: u64,
    pub policy: VersionPolicy,
    /// The most versions of one segment loaded at once (the newest).
    pub max_versions_per_segment: usize,
    /// The most versions loaded across the repository.
    pub max_loaded_versions: usize,
    pub overrides: Overrides,
    pub compute: Compute,
    pub default_segment: Option<String>,
    /// Served versions older than this (from `provenance.created`) are reported stale.
    pub max_model_age: Option<Duration>,
}

/// A version's state, as the Open Inference Protocol's RepositoryIndex reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ready,
    Loading,
    Unavailable,
}

impl State {
    /// The state as the protocol spells it.
    pub fn name(self) -> &'static str {
        match self {
            State::Ready => "READY",
            State::Loading => "LOADING",
            State::Unavailable => "UNAVAILABLE",
        }
    }
}

/// One version of the repository as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStatus {
    pub segment: String,
    pub version: u64,
    pub state: State,
    /// Why it is not READY (or, READY, why newer files of it are not served).
    pub reason: String,
}

/// What one reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Versions now served that were not before (or are served from new files).
    pub loaded: Vec<(String, u64)>,
    /// Versions no longer served.
    pub removed: Vec<(String, u64)>,
    /// Every problem: versions that failed to load, directories that are not versions.
    pub problems: Vec<LoadError>,
    /// Version directories without a model.json yet (or any more).
    pub pending: Vec<Found>,
    /// Keys in object storage that cannot be mirrored safely: reported like
    /// problems, but no model is broken, so they never refuse a start.
    pub skipped: Vec<LoadError>,
}

impl Reloaded {
    fn changed(&self) -> bool {
        !self.loaded.is_empty() || !self.removed.is_empty()
    }
}

/// A version the reloader knows: the files it last read, and what came of it.
struct Entry {
    fingerprint: Fingerprint,
    /// The model served for this version (from these files, or from earlier
    /// files when these failed to load).
    served: Option<Arc<ServedModel>>,
    /// Why these files are not served.
    failure: Option<String>,
}

/// The reloader's own bookkeeping; held by one reload at a time.
#[derive(Default)]
struct Books {
    entries: BTreeMap<(String, u64), Entry>,
    /// Segments taken out of service by `unload`, until `load`.
    unloaded: BTreeSet<String>,
    /// The problems the last scan logged, so a scan logs only what changed.
    logged: BTreeSet<String>,
    /// The versions the last scan found waiting for their model.json.
    pending: BTreeSet<(String, u64)>,
    /// Versions already reported stale.
    stale: BTreeSet<(String, u64)>,
    /// The segments' rollout policies.
    policies: Policies,
}

/// The live repository and the registry it publishes.
pub struct LiveRepository {
    options: Options,
    device: Device,
    device_name: String,
    metrics: Arc<Metrics>,
    served: ArcSwapOption<Registry>,
    books: Mutex<Books>,
    /// What `index` answers, updated as reloads go (never held across a load).
    status: Mutex<BTreeMap<(String, u64), VersionStatus>>,
    /// How many models are served, for readiness.
    count: watch::Sender<usize>,
    /// Why each segment's last rollout.json was refused (for status, never
    /// held across a load).
    refused: Mutex<BTreeMap<String, String>>,
}

impl LiveRepository {
    /// A repository on `device` (named `device_name` to callers), serving nothing until the first reload.
    pub fn new(options: Options, device: Device, device_name: String, metrics: Arc<Metrics>) -> LiveRepository {
        LiveRepository {
            options,
            device,
            device_name,
            metrics,
            served: ArcSwapOption::empty(),
            books: Mutex::new(Books::default()),
            status: Mutex::new(BTreeMap::new()),
            count: watch::channel(0).0,
            refused: Mutex::new(BTreeMap::new()),
        }
    }

    /// The registry requests read now (one atomic load), `None` before the first load.
    pub fn current(&self) -> Option<Arc<Registry>> {
        self.served.load_full()
    }

    /// Where a request goes (see `Registry::route`), read from the current
    /// registry without taking a reference to the registry itself: the
    /// request path's one read of the served set.
    pub fn route(&self, segment: &str, version: u64, key: &str) -> Result<Option<Route>, ServeError> {
        match &*self.served.load() {
            Some(registry) => registry.route(segment, version, key).map(Some),
            None => Ok(None),
        }
    }

    /// Follows how many models are served.
    pub fn served_count(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Scans the repository and serves what changed (blocking: loads and
    /// warms models). Never fails: what could not be loaded is in the report.
    pub fn reload(&self) -> Reloaded {
        let mut books = lock(&self.books);
        let report = self.reload_locked(&mut books);
        self.report(&mut books, &report);
        report
    }

    /// The first load, at start: like `reload`, but `refuse_broken` turns
    /// any problem into an error listing every one (nothing is served then).
    pub fn start(&self, refuse_broken: bool) -> Result<Reloaded, LoadErrors> {
        let mut books = lock(&self.books);
        let report = self.reload_locked(&mut books);
        // A version still waiting for its model.json is being published, not
        // broken: a replica restarting mid-publish starts.
        if refuse_broken && !report.problems.is_empty() {
            self.served.store(None);
            books.entries.clear();
            lock(&self.status).clear();
            return Err(LoadErrors(report.problems));
        }
        self.report(&mut books, &report);
        Ok(report)
    }

    /// Serves `segment` again (after `unload`) and re-reads it now. Fails
    /// when the repository has no such segment, or none of its versions can
    /// be served; what was served stays served.
    pub fn load(&self, segment: &str) -> Result<Reloaded, ServeError> {
        let mut books = lock(&self.books);
        books.unloaded.remove(segment);
        let report = self.reload_locked(&mut books);
        self.report(&mut books, &report);
        let versions: Vec<&Entry> =
            books.entries.iter().filter(|((s, _), _)| s == segment).map(|(_, entry)| entry).collect();
        if versions.is_empty() {
            return Err(ServeError::NotFound(format!("the model repository has no segment `{}`", echo(segment))));
        }
        if versions.iter().all(|entry| entry.served.is_none()) {
            let reasons: Vec<&str> = versions.iter().filter_map(|entry| entry.failure.as_deref()).collect();
            return Err(ServeError::InvalidArgument {
                message: format!("segment `{segment}` cannot be served: {}", reasons.join("; ")),
                violations: Vec::new(),
            });
        }
        Ok(report)
    }

    /// Stops serving `segment` until `load`: new requests for it get
    /// NOT_FOUND, requests in flight finish.
    pub fn unload(&self, segment: &str) -> Result<(), ServeError> {
        let mut books = lock(&self.books);
        if !books.entries.keys().any(|(s, _)| s == segment) {
            return Err(ServeError::NotFound(format!("the server serves no segment `{}`", echo(segment))));
        }
        books.unloaded.insert(segment.to_string());
        let report = self.reload_locked(&mut books);
        self.report(&mut books, &report);
        tracing::info!(segment, "segment unloaded on request");
        Ok(())
    }

    /// The release state of every served segment (or only `segment`).
    pub fn rollout_status(&self, segment: Option<&str>) -> Result<Vec<SegmentStatus>, ServeError> {
        let registry = self.current().ok_or_else(|| ServeError::Unavailable("no models are served yet".into()))?;
        if let Some(segment) = segment
            && !registry.models().any(|model| model.segment == segment)
        {
            return Err(ServeError::NotFound(format!("the server serves no segment `{}`", echo(segment))));
        }
        Ok(policies::status(&registry, &lock(&self.refused), segment))
    }

    /// Sets `segment`'s canary share to 0 now, on this replica, until its
    /// rollout.json changes.
    pub fn roll_back(&self, segment: &str) -> Result<(), ServeError> {
        let registry = self.current().ok_or_else(|| ServeError::Unavailable("no models are served yet".into()))?;
        let Some(rollout) = registry.rollout(segment) else {
            return Err(ServeError::FailedPrecondition(format!(
                "segment `{}` has no rollout policy in force: nothing to roll back",
                echo(segment)
            )));
        };
        rollout
            .state
            .roll_back("rolled back by an operator (candela rollout rollback)", "operator")
            .map_err(ServeError::FailedPrecondition)
    }

    /// Every version the server knows, with its state.
    pub fn index(&self) -> Vec<VersionStatus> {
        lock(&self.status).values().cloned().collect()
    }

    fn set_status(&self, segment: &str, version: u64, state: State, reason: String) {
        let status = VersionStatus { segment: segment.to_string(), version, state, reason: self.relative(reason) };
        lock(&self.status).insert((segment.to_string(), version), status);
    }

    /// `text` with the repository's own directory taken out of its paths:
    /// answers name files inside the repository (`retail/2/model.json`),
    /// never where the server keeps it (the logs keep the full paths).
    fn relative(&self, text: String) -> String {
        let root = self.options.location.dir().display().to_string();
        let root = root.trim_end_matches('/');
        if root.is_empty() { text } else { text.replace(&format!("{root}/"), "").replace(root, ".") }
    }

    fn reload_locked(&self, books: &mut Books) -> Reloaded {
        let mut report = Reloaded::default();
        // A failed sync leaves the cache as it was: what is served stays served.
        match tokio::runtime::Handle::current().block_on(self.options.location.refresh()) {
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
        let registry =
            Registry::new(models, default, books.policies.states()).expect("the default segment is among the models");
        self.served.store(Some(Arc::new(registry)));
        self.count.send_replace(count);
    }

    /// Logs and counts a reload's outcome (`failed` when it met a problem
    /// not seen before, else `changed` or `unchanged`); warns once about
    /// each version past --max-model-age.
    fn report(&self, books: &mut Books, report: &Reloaded) {
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
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => text.to_string(),
        (_, Some(text)) => text.clone(),
        _ => "no message".into(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How often the rollout guards and the drift gauges are brought up to date.
const SUPERVISE_EVERY: Duration = Duration::from_millis(100);

impl LiveRepository {
    /// Closes the rollout guards' windows as they end (judging canaries by their
    /// requests and their live quality in `outcomes`) and updates the drift,
    /// live-quality and prediction-store gauges (each second), until `stop` resolves. Light: counters are read,
    /// nothing is locked on the request path.
    pub async fn supervise(self: Arc<Self>, outcomes: Arc<Outcomes>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(SUPERVISE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_drift = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = &mut stop => return,
            }
            let Some(registry) = self.current() else { continue };
            let now = std::time::Instant::now();
            for rollout in registry.rollouts() {
                rollout.tick(now, &outcomes);
            }
            if now.duration_since(last_drift) >= Duration::from_secs(1) {
                last_drift = now;
                let held = outcomes.held();
                let quality = &self.metrics.quality;
                quality
                    .held(held.rows, [("room", held.dropped), ("expired", held.expired), ("reused_id", held.reused)]);
                // Published here, not as outcomes arrive: the window slides with time too.
                for version in outcomes.quality() {
                    let s = &version.summary;
                    let measured = Measured {
                        outcomes: s.outcomes,
                        auc: s.auc,
                        log_loss: s.log_loss,
                        precision: s.precision,
                        recall: s.recall,
                    };
                    quality.measured(&version.segment, version.version, version.enough, &measured);
                }
                for model in registry.models() {
                    if let Some(report) = model.stats.drift.as_ref().and_then(|drift| drift.report()) {
                        self.metrics.release.set_drift(&model.segment, model.version, &report.features, report.score);
                    }
                }
            }
        }
    }

    /// Rescans every `poll` (none: never on a timer) and whenever `hangups`
    /// fires (SIGHUP), until `stop` resolves.
    pub async fn watch(
        self: Arc<Self>,
        poll: Option<Duration>,
        hangups: watch::Receiver<()>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut hangups = Some(hangups);
        loop {
            let tick = async {
                match poll {
                    Some(period) => tokio::time::sleep(period).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick => {}
                changed = async {
                    match &mut hangups {
                        Some(hangups) => hangups.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if changed.is_err() {
                        // No more SIGHUPs: keep polling only.
                        hangups = None;
                        continue;
                    }
                    tracing::info!("SIGHUP: rescanning the model repository");
                }
                _ = &mut stop => return,
            }
            let repository = self.clone();
            if tokio::task::spawn_blocking(move || repository.reload()).await.is_err() {
                tracing::error!("a repository reload panicked; the served models are unchanged");
            }
        }
    }
}
