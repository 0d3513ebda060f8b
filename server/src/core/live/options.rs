//! The live repository's vocabulary: how it is told to read and serve
//! models (`Options`, `VersionPolicy`, the `--versions` setting's parser),
//! and what it reports (each version's `State` and `IndexEntry`, what a
//! reload did).

use crate::core::batching::Overrides;
use crate::core::served::Compute;
use crate::model::error::LoadError;
use crate::model::remote::Location;
use crate::model::repository::Found;
use std::str::FromStr;
use std::time::Duration;

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
pub struct IndexEntry {
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
    pub(super) fn changed(&self) -> bool {
        !self.loaded.is_empty() || !self.removed.is_empty()
    }
}
