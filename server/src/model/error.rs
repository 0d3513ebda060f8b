//! Why a model repository, or one model version in it, cannot be served:
//! each error names the file and what to fix, and a repository reports every
//! problem at once.

use super::network::ModelError;
use super::{MANIFEST_FILE, WEIGHTS_FILE};
use std::fmt;
use std::path::PathBuf;

/// One reason a repository cannot be served, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}", path = path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: the model repository is empty: expected directories <segment>/<version>/ holding {MANIFEST_FILE} and {WEIGHTS_FILE}", path = path.display())]
    Empty { path: PathBuf },
    #[error("{path}: segment has no versions: expected numbered directories such as {path}/1/ holding {MANIFEST_FILE} and {WEIGHTS_FILE}", path = path.display())]
    NoVersions { path: PathBuf },
    #[error("{path}: `{name}` is not a valid {what}: {rule}", path = path.display())]
    BadName { path: PathBuf, name: String, what: &'static str, rule: &'static str },
    #[error("{path}: is missing", path = path.display())]
    Missing { path: PathBuf },
    #[error("{path}: {message}", path = path.display())]
    Manifest { path: PathBuf, message: String },
    #[error("{path}: unreadable safetensors file: {message}", path = path.display())]
    Weights { path: PathBuf, message: String },
    #[error("{path}: {source}", path = path.display())]
    Model { path: PathBuf, source: ModelError },
    #[error("{path}: {reason}", path = path.display())]
    Refused { path: PathBuf, reason: String },
    #[error("{path}: is not a regular file ({kind}); repository files must be plain files", path = path.display())]
    NotRegular { path: PathBuf, kind: String },
    #[error("{path}: is {size} bytes, over the limit of {limit} bytes ({what})", path = path.display())]
    TooLarge { path: PathBuf, size: u64, limit: u64, what: String },
    #[error("{path}: loading it panicked ({message}); refused alone, the other versions are unaffected: this is a bug, please report it with the file", path = path.display())]
    Panicked { path: PathBuf, message: String },
}

impl LoadError {
    /// Why, in one word: the `reason` label the repository's refusals are counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            LoadError::Io { .. } => "unreadable",
            LoadError::Empty { .. } => "empty",
            LoadError::NoVersions { .. } => "no_versions",
            LoadError::BadName { .. } => "bad_name",
            LoadError::Missing { .. } => "missing",
            LoadError::Manifest { .. } => "invalid_manifest",
            LoadError::Weights { .. } => "invalid_weights",
            LoadError::Model { .. } => "invalid_model",
            LoadError::Refused { .. } => "refused",
            LoadError::NotRegular { .. } => "not_regular_file",
            LoadError::TooLarge { .. } => "too_large",
            LoadError::Panicked { .. } => "panicked",
        }
    }
}

/// Every problem found in a repository; displayed one per line.
#[derive(Debug)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the model repository cannot be served ({} problem{}):",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for error in &self.0 {
            write!(f, "\n  - {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}
