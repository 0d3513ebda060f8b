//! `candela model publish`: a version directory put into a repository (a
//! directory, or an object-storage prefix) by the documented protocol, so a
//! live server never sees half of it. The version is first loaded here as
//! the server would load it (a broken model is never published); model.json
//! gains the SHA-256 of every file beside it; the files go first, each
//! complete when it appears (a temporary name renamed, or one PUT), and
//! model.json last. The version is the segment's next unless given; one
//! already published is never overwritten.

use super::remote::open_store;
use super::repository::{self, DEFAULT_MAX_MODEL_BYTES};
use super::{MANIFEST_FILE, files};
use candle_core::Device;
use object_store::PutPayload;
use object_store::path::Path as StorePath;
use std::path::{Path, PathBuf};

/// Where a version was published.
#[derive(Debug)]
pub struct Published {
    pub version: u64,
    /// The version's directory or object prefix.
    pub location: String,
    /// The files written, model.json last.
    pub files: Vec<String>,
}

/// A version's files as read and checked, by name, model.json (with every
/// digest) last: what is published is exactly what was loaded here.
type Files = Vec<(String, Vec<u8>)>;

/// Reads `dir` (model.json and the files beside it), adds each file's
/// digest to model.json, and loads the model as the server would.
fn prepare(dir: &Path) -> Result<Files, String> {
    let text = files::read_manifest_text(&dir.join(MANIFEST_FILE)).map_err(|e| e.to_string())?;
    let mut manifest = repository::parse_manifest(&text).map_err(|e| format!("{MANIFEST_FILE}: {e}"))?;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != MANIFEST_FILE && !name.starts_with('.'))
        .collect();
    names.sort();
    if !names.iter().any(|n| n == manifest.file()) {
        return Err(format!("{} has no `{}`, the file model.json names", dir.display(), manifest.file()));
    }
    let mut version = Files::new();
    for name in names {
        let bytes = std::fs::read(dir.join(&name)).map_err(|e| format!("cannot read {name}: {e}"))?;
        manifest.files.insert(name.clone(), files::sha256_hex(&bytes));
        version.push((name, bytes));
    }
    // What is published is exactly what loads: the digests just listed are checked too.
    let published = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())? + "\n";
    let mut loaded = manifest;
    repository::build_scorer(dir, &mut loaded, &Device::Cpu, DEFAULT_MAX_MODEL_BYTES)
        .map_err(|e| format!("the version does not load, so it is not published: {e}"))?;
    version.push((MANIFEST_FILE.to_string(), published.into_bytes()));
    Ok(version)
}

/// Publishes the version in `dir` as `segment`'s version `version` (the
/// next one when `None`) into `repository`: a directory, or an
/// `s3://`/`gs://`/`az://` prefix (credentials and endpoint from the
/// environment, as the server's `--models`).
pub async fn publish(dir: &Path, repository: &str, segment: &str, version: Option<u64>) -> Result<Published, String> {
    if !repository::valid_segment_name(segment) {
        return Err(format!(
            "segment `{segment}`: start with a letter or digit; use letters, digits, `_`, `-` and `.`"
        ));
    }
    let prepared = prepare(dir)?;
    match repository.split_once("://") {
        Some((scheme, _)) if scheme != "file" => to_store(prepared, repository, segment, version).await,
        Some((_, path)) => to_directory(prepared, Path::new(path), segment, version),
        None => to_directory(prepared, Path::new(repository), segment, version),
    }
}

/// The version to publish as: `wanted`, or the one after the newest of `existing`.
fn choose(existing: &[u64], wanted: Option<u64>) -> Result<u64, String> {
    match wanted.unwrap_or_else(|| existing.iter().max().map_or(1, |v| v + 1)) {
        0 => Err("--version 0 is not a version: versions start at 1".into()),
        version => Ok(version),
    }
}

/// Why `version` of `segment` is not published again.
fn taken(version: u64, segment: &str) -> String {
    format!("version {version} of `{segment}` is already published (it has a model.json): publish as a new version")
}

fn to_directory(prepared: Files, root: &Path, segment: &str, version: Option<u64>) -> Result<Published, String> {
    let segment_dir = root.join(segment);
    let existing: Vec<u64> = std::fs::read_dir(&segment_dir)
        .map(|entries| entries.filter_map(Result::ok).filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    let version = choose(&existing, version)?;
    let target: PathBuf = segment_dir.join(version.to_string());
    if target.join(MANIFEST_FILE).exists() {
        return Err(taken(version, segment));
    }
    std::fs::create_dir_all(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let mut written = Vec::new();
    for (name, bytes) in prepared {
        let partial = target.join(format!(".{name}.partial"));
        std::fs::write(&partial, &bytes)
            .and_then(|()| std::fs::rename(&partial, target.join(&name)))
            .map_err(|e| format!("cannot write {}: {e}", target.join(&name).display()))?;
        written.push(name);
    }
    Ok(Published { version, location: target.display().to_string(), files: written })
}

async fn to_store(prepared: Files, url: &str, segment: &str, version: Option<u64>) -> Result<Published, String> {
    let (store, prefix) = open_store(url)?;
    let segment_prefix = prefix.child(segment);
    let listed = store
        .list_with_delimiter(Some(&segment_prefix))
        .await
        .map_err(|e| format!("cannot list {url}/{segment}: {e}"))?;
    let existing: Vec<u64> = listed.common_prefixes.iter().filter_map(|p| p.filename()?.parse().ok()).collect();
    let version = choose(&existing, version)?;
    let target: StorePath = segment_prefix.child(version.to_string());
    if store.head(&target.child(MANIFEST_FILE)).await.is_ok() {
        return Err(taken(version, segment));
    }
    let mut written = Vec::new();
    for (name, bytes) in prepared {
        let key = target.child(name.as_str());
        store.put(&key, PutPayload::from(bytes)).await.map_err(|e| format!("cannot upload {key}: {e}"))?;
        written.push(name);
    }
    let location = format!("{}/{segment}/{version}", url.trim_end_matches('/'));
    Ok(Published { version, location, files: written })
}
