//! Model repositories in object storage (`s3://bucket/prefix`, `gs://…`,
//! `az://…`), mirrored into a local cache directory that the repository scan
//! then reads like any other. A sync lists the prefix and downloads only
//! objects whose ETag (or, without one, size and modification time) changed
//! since they were fetched; each file is written beside its final name and
//! renamed into place, and each version's `model.json` after its other files,
//! so the scan never sees half a file or a manifest ahead of its weights.
//! Objects gone from the store are removed from the cache. Credentials and
//! endpoints come from each cloud's standard environment variables
//! (`AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`, …), so every
//! replica pointed at the same prefix converges on the same models.

use super::MANIFEST_FILE;
use super::error::LoadError;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where the repository is read from: a directory, or an object-storage
/// prefix mirrored into one.
pub enum Location {
    Directory(PathBuf),
    Mirrored(Remote),
}

impl Location {
    /// Reads `--models`: an object-storage URL (`s3://`, `gs://`, `az://`,
    /// mirrored into `cache`), `file://<path>`, or a path.
    pub fn open(models: &str, cache: &Path) -> Result<Location, String> {
        match models.split_once("://") {
            Some(("file", path)) => Ok(Location::Directory(PathBuf::from(path))),
            Some((scheme, _)) if !scheme.is_empty() && !scheme.contains('/') => {
                Remote::open(models, cache).map(Location::Mirrored)
            }
            _ => Ok(Location::Directory(PathBuf::from(models))),
        }
    }

    /// The directory a scan reads.
    pub fn dir(&self) -> &Path {
        match self {
            Location::Directory(dir) => dir,
            Location::Mirrored(remote) => &remote.cache,
        }
    }

    /// Brings the directory up to date with where the repository lives (a
    /// directory already is).
    pub async fn refresh(&self) -> Result<Synced, LoadError> {
        match self {
            Location::Directory(_) => Ok(Synced::default()),
            Location::Mirrored(remote) => remote.sync().await,
        }
    }
}

/// An object-storage prefix mirrored into a cache directory.
pub struct Remote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    cache: PathBuf,
    /// What each cached file was fetched from (its ETag or size and time), by relative path.
    fetched: Mutex<BTreeMap<String, String>>,
}

/// What one sync changed in the cache.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub downloaded: usize,
    pub removed: usize,
}

impl Remote {
    /// Connects to `url` with the credentials in the environment, mirroring into `cache`.
    fn open(url: &str, cache: &Path) -> Result<Remote, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("--models {url}: not a URL: {e}"))?;
        let options = std::env::vars().map(|(key, value)| (key.to_ascii_lowercase(), value));
        let (store, prefix) = object_store::parse_url_opts(&parsed, options).map_err(|e| {
            format!("--models {url}: {e} (use s3://bucket/prefix, gs://bucket/prefix or az://container/prefix)")
        })?;
        std::fs::create_dir_all(cache)
            .map_err(|e| format!("--model-cache {}: cannot create it: {e}", cache.display()))?;
        Ok(Remote {
            url: url.to_string(),
            store: Arc::from(store),
            prefix,
            cache: cache.to_path_buf(),
            fetched: Mutex::new(BTreeMap::new()),
        })
    }

    /// Brings the cache up to date with the store.
    async fn sync(&self) -> Result<Synced, LoadError> {
        let failed = |message: String| LoadError::Refused { path: PathBuf::from(&self.url), reason: message };
        let objects: Vec<ObjectMeta> = self
            .store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(|e| failed(format!("cannot list the prefix: {e}")))?;
        let mut wanted: BTreeMap<String, ObjectMeta> = BTreeMap::new();
        for object in objects {
            let Some(relative) = self.relative(&object.location) else { continue };
            wanted.insert(relative, object);
        }
        let mut synced = Synced::default();
        let mut fetched = self.fetched.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        // model.json files last, so a version's manifest never arrives ahead of its weights.
        let (manifests, files): (Vec<_>, Vec<_>) = wanted.iter().partition(|(path, _)| path.ends_with(MANIFEST_FILE));
        for (relative, object) in files.into_iter().chain(manifests) {
            let tag = object.e_tag.clone().unwrap_or_else(|| format!("{}@{}", object.size, object.last_modified));
            let local = self.cache.join(relative);
            if fetched.get(relative) == Some(&tag) && local.is_file() {
                continue;
            }
            self.download(object, &local).await.map_err(|e| failed(format!("cannot fetch `{relative}`: {e}")))?;
            fetched.insert(relative.clone(), tag);
            synced.downloaded += 1;
        }
        let gone: Vec<String> = fetched.keys().filter(|path| !wanted.contains_key(*path)).cloned().collect();
        for relative in gone {
            let local = self.cache.join(&relative);
            if std::fs::remove_file(&local).is_ok() {
                synced.removed += 1;
            }
            fetched.remove(&relative);
            remove_empty_parents(&local, &self.cache);
        }
        *self.fetched.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = fetched;
        Ok(synced)
    }

    /// An object's path under the prefix, if it is a plain relative path
    /// (no `..`, no hidden part) that can be a repository file.
    fn relative(&self, location: &StorePath) -> Option<String> {
        let parts: Vec<String> = location.prefix_match(&self.prefix)?.map(|part| part.as_ref().to_string()).collect();
        let valid = !parts.is_empty() && parts.iter().all(|part| !part.is_empty() && !part.starts_with('.'));
        valid.then(|| parts.join("/"))
    }

    async fn download(&self, object: &ObjectMeta, local: &Path) -> Result<(), String> {
        let bytes = self
            .store
            .get(&object.location)
            .await
            .map_err(|e| e.to_string())?
            .bytes()
            .await
            .map_err(|e| e.to_string())?;
        let parent = local.parent().ok_or("no parent directory")?;
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        let name = local.file_name().ok_or("no file name")?.to_string_lossy();
        let partial = parent.join(format!(".{name}.partial"));
        std::fs::write(&partial, &bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&partial, local).map_err(|e| e.to_string())
    }
}

/// Removes the now-empty directories between `file` and `root`.
fn remove_empty_parents(file: &Path, root: &Path) {
    let mut dir = file.parent();
    while let Some(current) = dir {
        if current == root || std::fs::remove_dir(current).is_err() {
            return;
        }
        dir = current.parent();
    }
}
