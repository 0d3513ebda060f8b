//! The live model repository: the set of served models, swapped atomically
//! as the repository on disk changes, without a restart. A reload scans the
//! repository (metadata only), loads, checks and warms each new or changed
//! version off the request path, keeps unchanged versions as they are, and
//! publishes the new registry in one atomic store: a request takes one
//! snapshot and finishes on the models it started with; a version no longer
//! published stops taking requests and is released once its last request
//! ends. A version that fails to load never disturbs the ones being served:
//! it is reported (log, metrics, `index`) and retried when its files change.
//! Reloads run one at a time: the object-storage mirror is refreshed on
//! the reactor, the loading on blocking threads (`reloading`). The loops
//! that keep it current (the watch on the repository, the supervisor of
//! rollout guards and gauges) are `supervisor`; the vocabulary its callers
//! use (options, states, reports) is `options`.

mod options;
mod reloading;
mod supervisor;

pub use options::{IndexEntry, Options, Reloaded, State, VersionPolicy};

use crate::core::error::{ServeError, echo};
use crate::core::policies::{self, Policies, SegmentStatus};
use crate::core::registry::Registry;
use crate::core::rollout::Route;
use crate::core::served::ServedModel;
use crate::model::error::{LoadError, LoadErrors};
use crate::model::remote::Synced;
use crate::model::repository::Fingerprint;
use crate::observe::metrics::Metrics;
use arc_swap::ArcSwapOption;
use candle_core::Device;
use reloading::panic_message;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::runtime::Handle;
use tokio::sync::watch;

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
    /// Where shadows are scored (reloads run on blocking threads).
    runtime: Handle,
    served: ArcSwapOption<Registry>,
    /// One reload at a time, the mirror's sync included.
    turn: tokio::sync::Mutex<()>,
    books: Mutex<Books>,
    /// What `index` answers, updated as reloads go (never held across a load).
    status: Mutex<BTreeMap<(String, u64), IndexEntry>>,
    /// How many models are served, for readiness.
    count: watch::Sender<usize>,
    /// Why each segment's last rollout.json was refused (for status, never
    /// held across a load).
    refused: Mutex<BTreeMap<String, String>>,
}

impl LiveRepository {
    /// A repository on `device` (named `device_name` to callers), serving
    /// nothing until the first reload; its async work runs on `runtime`.
    pub fn new(
        options: Options,
        device: Device,
        device_name: String,
        metrics: Arc<Metrics>,
        runtime: Handle,
    ) -> LiveRepository {
        LiveRepository {
            options,
            device,
            device_name,
            metrics,
            runtime,
            served: ArcSwapOption::empty(),
            turn: tokio::sync::Mutex::new(()),
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

    /// Scans the repository and serves what changed (the mirror refreshed
    /// first, then models loaded and warmed on a blocking thread). What
    /// could not be loaded is in the report; it fails only when the reload
    /// itself panicked (the served models are then unchanged).
    pub async fn reload(self: &Arc<Self>) -> Result<Reloaded, ServeError> {
        let reloaded =
            self.refreshed(|repository, synced| repository.reload_reported(&mut lock(&repository.books), synced));
        reloaded.await.map_err(|_| unchanged("the repository reload"))
    }

    /// The first load, at start: like `reload`, but `refuse_broken` turns
    /// any problem into an error listing every one (nothing is served then).
    pub async fn start(self: &Arc<Self>, refuse_broken: bool) -> Result<Reloaded, LoadErrors> {
        let started = self.refreshed(move |repository, synced| repository.start_synced(refuse_broken, synced));
        started.await.unwrap_or_else(|message| {
            let path = self.options.location.dir().to_path_buf();
            Err(LoadErrors(vec![LoadError::Panicked { path, message }]))
        })
    }

    fn start_synced(&self, refuse_broken: bool, synced: Result<Synced, LoadError>) -> Result<Reloaded, LoadErrors> {
        let mut books = lock(&self.books);
        let report = self.reload_locked(&mut books, synced);
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
    pub async fn load(self: &Arc<Self>, segment: String) -> Result<Reloaded, ServeError> {
        let loaded = self.refreshed(move |repository, synced| repository.load_synced(&segment, synced)).await;
        loaded.unwrap_or_else(|_| Err(unchanged("the repository reload")))
    }

    fn load_synced(&self, segment: &str, synced: Result<Synced, LoadError>) -> Result<Reloaded, ServeError> {
        let mut books = lock(&self.books);
        books.unloaded.remove(segment);
        let report = self.reload_reported(&mut books, synced);
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

    /// Brings the mirror up to date (on the reactor: it is network I/O),
    /// then runs `work` with what the sync did on a blocking thread (it
    /// loads and warms models); one reload at a time, sync included. Fails
    /// with the panic's message when `work` panicked (the served models are
    /// then unchanged: a registry is published whole or not at all).
    async fn refreshed<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&LiveRepository, Result<Synced, LoadError>) -> T + Send + 'static,
    ) -> Result<T, String> {
        let _turn = self.turn.lock().await;
        let synced = self.options.location.refresh().await;
        let repository = self.clone();
        tokio::task::spawn_blocking(move || work(&repository, synced)).await.map_err(|failed| {
            let message = failed.try_into_panic().map_or_else(|_| "cancelled".into(), |panic| panic_message(&*panic));
            tracing::error!(message, "a repository reload panicked; the served models are unchanged");
            message
        })
    }

    /// Stops serving `segment` until `load`: new requests for it get
    /// NOT_FOUND, requests in flight finish.
    pub async fn unload(self: &Arc<Self>, segment: String) -> Result<(), ServeError> {
        let unloaded = self.refreshed(move |repository, synced| repository.unload_synced(&segment, synced)).await;
        unloaded.unwrap_or_else(|_| Err(unchanged("the unload")))
    }

    fn unload_synced(&self, segment: &str, synced: Result<Synced, LoadError>) -> Result<(), ServeError> {
        let mut books = lock(&self.books);
        if !books.entries.keys().any(|(s, _)| s == segment) {
            return Err(ServeError::NotFound(format!("the server serves no segment `{}`", echo(segment))));
        }
        books.unloaded.insert(segment.to_string());
        self.reload_reported(&mut books, synced);
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
    pub fn index(&self) -> Vec<IndexEntry> {
        lock(&self.status).values().cloned().collect()
    }

    fn set_status(&self, segment: &str, version: u64, state: State, reason: String) {
        let status = IndexEntry { segment: segment.to_string(), version, state, reason: self.relative(reason) };
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
}

/// The error of an operation (`what`) whose reload panicked.
fn unchanged(what: &str) -> ServeError {
    ServeError::Internal(format!("{what} failed; the served models are unchanged"))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
