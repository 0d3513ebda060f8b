//! API-key authentication for the inference services. Keys live in a file
//! (`--api-keys-file`), one per line; every key in it is valid, so a key
//! rotates without an outage: add the new key, move callers, remove the old.
//! The file is re-read on SIGHUP and when it changes (see `reload`). A file
//! that turns unreadable or empty keeps the previous keys: a bad edit never
//! opens the server. Keys are compared as SHA-256 digests in constant time,
//! and never logged or echoed.

use super::reload::Reload;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;
use tonic::{Request, Status, service::Interceptor};

/// Why a caller's credentials were refused, for each front to answer in
/// its protocol (gRPC UNAUTHENTICATED / PERMISSION_DENIED, HTTP 401 / 403).
#[derive(Debug, Clone, PartialEq)]
pub enum Denied {
    /// No key, a malformed header, or a key that is not valid.
    Unauthenticated(&'static str),
    /// A valid key without the right (an inference key on an admin call),
    /// or admin calls are off.
    PermissionDenied(&'static str),
}

impl From<Denied> for Status {
    fn from(denied: Denied) -> Status {
        match denied {
            Denied::Unauthenticated(message) => Status::unauthenticated(message),
            Denied::PermissionDenied(message) => Status::permission_denied(message),
        }
    }
}

/// The valid keys, as digests, and where they come from.
pub struct KeyStore {
    path: PathBuf,
    digests: ArcSwap<Vec<[u8; 32]>>,
    /// The file content the digests were built from, to notice changes.
    loaded: Mutex<String>,
}

impl KeyStore {
    /// Reads `path`; fails when it cannot be read or holds no key.
    pub fn open(path: &Path) -> Result<Arc<KeyStore>, String> {
        let (text, digests) = read_keys(path)?;
        Ok(Arc::new(KeyStore {
            path: path.to_path_buf(),
            digests: ArcSwap::from_pointee(digests),
            loaded: Mutex::new(text),
        }))
    }

    /// How many keys are valid now.
    pub fn len(&self) -> usize {
        self.digests.load().len()
    }

    /// Whether the store holds no key (never true: opening and reloading refuse that).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Reload for KeyStore {
    fn name(&self) -> &'static str {
        "API keys"
    }

    /// Re-reads the file if its content changed; keeps the old keys on error.
    fn reload(&self) {
        let mut loaded = self.loaded.lock().expect("key store lock poisoned; this is a bug");
        match read_keys(&self.path) {
            Ok((text, _)) if text == *loaded => {}
            Ok((text, digests)) => {
                let count = digests.len();
                self.digests.store(Arc::new(digests));
                *loaded = text;
                tracing::info!(file = %self.path.display(), keys = count, "API keys reloaded");
            }
            Err(error) => tracing::error!(%error, "API keys not reloaded; the previous keys stay valid"),
        }
    }
}

impl KeyStore {
    /// Whether `key` is one of the valid keys, in time independent of which
    /// key matched, or how much of it.
    pub fn accepts(&self, key: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut matched = subtle::Choice::from(0);
        for digest in self.digests.load().iter() {
            matched |= digest.ct_eq(&presented);
        }
        matched.into()
    }
}

fn read_keys(path: &Path) -> Result<(String, Vec<[u8; 32]>), String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("API keys file {}: cannot read: {e}", path.display()))?;
    let digests: Vec<[u8; 32]> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|key| Sha256::digest(key.as_bytes()).into())
        .collect();
    if digests.is_empty() {
        return Err(format!("API keys file {}: holds no key (one per line; `#` starts a comment)", path.display()));
    }
    Ok((text, digests))
}

/// The gRPC interceptor that checks `authorization: Bearer <key>`; with no
/// key store it lets every call through (the server runs open). Admin keys
/// pass too: an operator's key may also read and score.
#[derive(Clone)]
pub struct Authenticator {
    keys: Option<Arc<KeyStore>>,
    admin: Option<Arc<KeyStore>>,
}

impl Authenticator {
    /// Checks calls against `keys` (and accepts `admin` keys as well).
    pub fn new(keys: Option<Arc<KeyStore>>, admin: Option<Arc<KeyStore>>) -> Authenticator {
        Authenticator { keys, admin }
    }

    /// Admits a call whose `authorization` header carries a valid key (any
    /// call while the server runs open).
    pub fn check(&self, headers: &http::HeaderMap) -> Result<(), Denied> {
        let Some(keys) = &self.keys else { return Ok(()) };
        let key = bearer(headers.get("authorization").map(|v| v.to_str()))?;
        if keys.accepts(key) || self.admin.as_ref().is_some_and(|admin| admin.accepts(key)) {
            Ok(())
        } else {
            Err(Denied::Unauthenticated("invalid API key"))
        }
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata().as_ref()).map(|()| request).map_err(Status::from)
    }
}

/// Who may make admin calls (RepositoryModelLoad, RepositoryModelUnload, the
/// Rollouts service): holders of a key from --admin-keys-file, and no one
/// when there is none.
#[derive(Clone)]
pub struct AdminGuard {
    admin: Option<Arc<KeyStore>>,
    inference: Option<Arc<KeyStore>>,
}

impl AdminGuard {
    pub fn new(admin: Option<Arc<KeyStore>>, inference: Option<Arc<KeyStore>>) -> AdminGuard {
        AdminGuard { admin, inference }
    }

    /// Admits a call whose `authorization` header carries an admin key.
    pub fn check(&self, headers: &http::HeaderMap) -> Result<(), Denied> {
        let Some(admin) = &self.admin else {
            return Err(Denied::PermissionDenied(
                "admin calls are off: start the server with --admin-keys-file to load and unload models and to see and roll back rollouts by call",
            ));
        };
        let key = bearer(headers.get("authorization").map(|v| v.to_str())).map_err(|_| {
            Denied::Unauthenticated(
                "this admin call (repository control, rollouts) needs an admin key: send `authorization: Bearer <admin key>`",
            )
        })?;
        if admin.accepts(key) {
            Ok(())
        } else if self.inference.as_ref().is_some_and(|keys| keys.accepts(key)) {
            Err(Denied::PermissionDenied(
                "an inference API key cannot make admin calls (repository control, rollouts); send an admin key (--admin-keys-file)",
            ))
        } else {
            Err(Denied::Unauthenticated("invalid admin key"))
        }
    }
}

/// The key in an `authorization: Bearer <key>` header.
fn bearer<E>(header: Option<Result<&str, E>>) -> Result<&str, Denied> {
    let header = header
        .ok_or(Denied::Unauthenticated("missing credentials: send metadata `authorization: Bearer <api key>`"))?;
    header
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(Denied::Unauthenticated("malformed `authorization` metadata: expected `Bearer <api key>`"))
}
