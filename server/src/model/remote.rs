//! Model repositories in object storage (`s3://bucket/prefix`, `gs://…`,
//! `az://…`), mirrored into a local cache directory that the repository scan
//! then reads like any other. A sync lists the prefix and downloads only
//! objects whose ETag (or, without one, size and modification time) changed
//! since they were fetched; each file is written beside its final name and
//! renamed into place, and each version's `model.json` after its other files,
//! so the scan never sees half a file or a manifest ahead of its weights.
//! Objects gone from the store are removed from the cache. A key that is no
//! safe path (`..`, `.`, an empty segment) is skipped and reported, and
//! everything else is mirrored. Credentials and
//! endpoints come from each cloud's standard environment variables
//! (`AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`, …), so every
//! replica pointed at the same prefix converges on the same models.

use super::MANIFEST_FILE;
use super::error::LoadError;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreScheme};
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

/// What the mirror needs of a store: objects to read, and listings by page.
pub(super) trait Store: ObjectStore + PaginatedListStore {}
impl<T: ObjectStore + PaginatedListStore> Store for T {}

/// An object-storage prefix mirrored into a cache directory.
pub struct Remote {
    url: String,
    store: Arc<dyn Store>,
    prefix: StorePath,
    cache: PathBuf,
    /// What each cached file was fetched from (its ETag or size and time), by relative path.
    fetched: Mutex<BTreeMap<String, String>>,
}

/// What one sync changed in the cache, and the keys it could not mirror.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub downloaded: usize,
    pub removed: usize,
    /// Keys under the prefix that are no safe path (a `..`, `.` or empty
    /// segment, a control character), each with why it is not mirrored.
    pub skipped: Vec<(String, String)>,
}

impl Remote {
    /// Connects to `url` with the credentials in the environment, mirroring into `cache`.
    fn open(url: &str, cache: &Path) -> Result<Remote, String> {
        let (store, prefix) = open_store(url).map_err(|e| format!("--models {e}"))?;
        std::fs::create_dir_all(cache)
            .map_err(|e| format!("--model-cache {}: cannot create it: {e}", cache.display()))?;
        Ok(Remote {
            url: url.to_string(),
            store,
            prefix,
            cache: cache.to_path_buf(),
            fetched: Mutex::new(BTreeMap::new()),
        })
    }

    /// Brings the cache up to date with the store.
    async fn sync(&self) -> Result<Synced, LoadError> {
        let failed = |message: String| LoadError::Refused { path: PathBuf::from(&self.url), reason: message };
        let mut synced = Synced::default();
        let objects =
            self.listed(&mut synced.skipped).await.map_err(|e| failed(format!("cannot list the prefix: {e}")))?;
        let mut wanted: BTreeMap<String, ObjectMeta> = BTreeMap::new();
        for object in objects {
            let Some(relative) = self.relative(&object.location) else { continue };
            wanted.insert(relative, object);
        }
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

    /// Every object under the prefix that has a safe path, page by page.
    /// object_store refuses a whole page over one key it cannot parse as a
    /// path (a `..`, `.` or empty segment), so that page is listed again one
    /// key at a time from the last key read: every key before the bad one is
    /// kept, the bad one is noted in `skipped`, and listing goes on after it.
    /// (Azure's listing takes no offset: there the sync still fails, saying so.)
    async fn listed(&self, skipped: &mut Vec<(String, String)>) -> Result<Vec<ObjectMeta>, object_store::Error> {
        let prefix = match self.prefix.as_ref() {
            "" => String::new(),
            prefix => format!("{prefix}/"),
        };
        let mut objects: Vec<ObjectMeta> = Vec::new();
        let (mut after, mut token): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self.page(&prefix, after.as_deref(), token.take(), false).await;
            let error = match page {
                Ok(page) => {
                    if let Some(last) = page.result.objects.last() {
                        after = Some(last.location.to_string());
                    }
                    objects.extend(page.result.objects);
                    match page.page_token {
                        Some(next) => token = Some(next),
                        None => return Ok(objects),
                    }
                    continue;
                }
                Err(error) => error,
            };
            let Some(bad) = unsafe_key(&error).map(str::to_string) else { return Err(error) };
            // Read the lost page again, one key at a time, up to the bad key.
            loop {
                match self.page(&prefix, after.as_deref(), None, true).await {
                    Ok(page) => {
                        let Some(object) = page.result.objects.into_iter().next() else { return Ok(objects) };
                        let key = object.location.to_string();
                        if after.as_ref().is_some_and(|after| key <= *after) {
                            // A store that ignores offsets cannot be stepped through.
                            return Err(error);
                        }
                        after = Some(key);
                        objects.push(object);
                    }
                    Err(failed) => {
                        // The bad key's error says which key stops the mirror where stepping fails.
                        let Some(key) = unsafe_key(&failed).map(str::to_string) else { return Err(error) };
                        skipped.push((key.clone(), UNSAFE.to_string()));
                        after = Some(key.clone());
                        if key == bad {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// One page of the listing of `prefix` after the key `after` (or
    /// continuing from `token`); `one`: a page of one key.
    async fn page(
        &self,
        prefix: &str,
        after: Option<&str>,
        token: Option<String>,
        one: bool,
    ) -> Result<object_store::list::PaginatedListResult, object_store::Error> {
        let options = PaginatedListOptions {
            offset: after.filter(|_| token.is_none()).map(str::to_string),
            page_token: token,
            max_keys: one.then_some(1),
            ..PaginatedListOptions::default()
        };
        self.store.list_paginated(Some(prefix).filter(|p| !p.is_empty()), options).await
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

/// Why a key is not mirrored.
const UNSAFE: &str =
    "is not a safe path (a `..`, `.` or empty segment, or a control character): not mirrored; rename or delete it";

/// The key object_store could not parse as a path, when that is what `error` is.
fn unsafe_key(error: &object_store::Error) -> Option<&str> {
    use object_store::path::Error as PathError;
    match error {
        object_store::Error::InvalidPath { source: PathError::EmptySegment { path } }
        | object_store::Error::InvalidPath { source: PathError::BadSegment { path, .. } } => Some(path),
        _ => None,
    }
}

/// Builds the store `url` names (its scheme's builder, configured from
/// `options`: the environment's variables, lower-cased), as the one value
/// that both reads objects and lists them page by page, and the prefix in it.
/// The store and prefix `url` names, with the credentials and endpoint in
/// the environment; an error names `url` and the forms it may take.
pub(super) fn open_store(url: &str) -> Result<(Arc<dyn Store>, StorePath), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url}: not a URL: {e}"))?;
    let options = std::env::vars().map(|(key, value)| (key.to_ascii_lowercase(), value)).collect();
    open_configured(&parsed, options)
        .map_err(|e| format!("{url}: {e} (use s3://bucket/prefix, gs://bucket/prefix or az://container/prefix)"))
}

fn open_configured(
    url: &url::Url,
    options: Vec<(String, String)>,
) -> Result<(Arc<dyn Store>, StorePath), object_store::Error> {
    macro_rules! built {
        ($builder:ty) => {{
            let builder = options.into_iter().fold(
                <$builder>::new().with_url(url.to_string()),
                |builder, (key, value)| match key.parse() {
                    Ok(key) => builder.with_config(key, value),
                    Err(_) => builder,
                },
            );
            Arc::new(builder.build()?) as Arc<dyn Store>
        }};
    }
    let (scheme, prefix) = ObjectStoreScheme::parse(url)?;
    let prefix = StorePath::parse(prefix)?;
    let store = match scheme {
        ObjectStoreScheme::AmazonS3 => built!(object_store::aws::AmazonS3Builder),
        ObjectStoreScheme::GoogleCloudStorage => built!(object_store::gcp::GoogleCloudStorageBuilder),
        ObjectStoreScheme::MicrosoftAzure => built!(object_store::azure::MicrosoftAzureBuilder),
        other => {
            return Err(object_store::Error::NotSupported {
                source: format!("{other:?} is not an object store a repository can be mirrored from").into(),
            });
        }
    };
    Ok((store, prefix))
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
