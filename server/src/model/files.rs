//! Reading the repository's files without trusting them: every file the
//! reload path reads (model.json, weights, model files, rollout.json) goes
//! through `open_bounded`: only regular files (a FIFO or a device would block
//! or never end; a link to one is refused too), never more than a bound, and
//! a safetensors header checked against the file's size before any tensor
//! byte is read, so a truncated, padded or sparse multi-gigabyte file is
//! refused from its first kilobytes. A `torch.save` archive where the weights
//! should be is recognised and the fix named.

use super::error::LoadError;
use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The most bytes a `model.json` may hold.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// The first bytes of a zip archive: what `torch.save` writes.
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// How to write safetensors from PyTorch, for errors that meet a pickle.
const WRITE_SAFETENSORS: &str = "write the weights with `safetensors.torch.save_file(model.state_dict(), \"model.safetensors\")` (pickles can run code and are never loaded)";

/// Opens `path` if it is a regular file of at most `limit` bytes; returns it
/// with its size. `what` names the limit's setting in the error.
fn open_bounded(path: &Path, limit: u64, what: &str) -> Result<(File, u64), LoadError> {
    let io = |source| LoadError::Io { path: path.to_path_buf(), source };
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A link that leads nowhere is not an absent file: it is being
            // published, or broken, and must not read as a removal.
            let Ok(link) = std::fs::symlink_metadata(path) else {
                return Err(LoadError::Missing { path: path.to_path_buf() });
            };
            let target = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_default();
            return Err(LoadError::Refused {
                path: path.to_path_buf(),
                reason: format!(
                    "is a symbolic link to `{target}`, which does not exist ({}); point it at a plain file",
                    if link.file_type().is_symlink() { "dangling" } else { "vanished" }
                ),
            });
        }
        Err(source) => return Err(io(source)),
    };
    if !metadata.is_file() {
        let kind = match std::fs::read_link(path) {
            Ok(target) => format!("{}, by a symbolic link to `{}`", kind(&metadata), target.display()),
            Err(_) => kind(&metadata).to_string(),
        };
        return Err(LoadError::NotRegular { path: path.to_path_buf(), kind });
    }
    if metadata.len() > limit {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
            size: metadata.len(),
            limit,
            what: what.to_string(),
        });
    }
    // Opened without blocking, so a FIFO swapped in after the check cannot hang the load.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(io)?;
    let opened = file.metadata().map_err(io)?;
    if !opened.is_file() {
        return Err(LoadError::NotRegular { path: path.to_path_buf(), kind: kind(&opened).to_string() });
    }
    Ok((file, opened.len()))
}

fn kind(metadata: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let file_type = metadata.file_type();
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else {
        "not a plain file"
    }
}

/// Reads exactly `size` bytes from `file`; fewer or more means it changed underway.
fn read_exactly(path: &Path, file: File, size: u64) -> Result<Vec<u8>, LoadError> {
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(size + 1).read_to_end(&mut bytes).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 != size {
        return Err(LoadError::Refused {
            path: path.to_path_buf(),
            reason: format!(
                "changed size while being read ({size} bytes, then {}); retry once it is written",
                bytes.len()
            ),
        });
    }
    Ok(bytes)
}

/// The text of a `model.json`, refused unless it is a regular file of at
/// most `MAX_MANIFEST_BYTES`.
pub fn read_manifest_text(path: &Path) -> Result<String, LoadError> {
    read_text(path, MAX_MANIFEST_BYTES, "model.json files are at most 16 MiB")
}

/// The UTF-8 text of a repository file (model.json, rollout.json), refused
/// unless it is a regular file of at most `limit` bytes (`what` names the
/// bound in the error).
pub fn read_text(path: &Path, limit: u64, what: &str) -> Result<String, LoadError> {
    let (file, size) = open_bounded(path, limit, what)?;
    let bytes = read_exactly(path, file, size)?;
    String::from_utf8(bytes).map_err(|e| LoadError::Refused {
        path: path.to_path_buf(),
        reason: format!("is not UTF-8 text ({e}): save it as UTF-8 JSON"),
    })
}

/// Loads a safetensors file's tensors onto the CPU after checking that it is
/// a regular file of at most `max_bytes` whose header describes exactly the
/// bytes that follow it, and, when `sha256` is given, that its bytes have
/// that digest. A missing file beside a PyTorch checkpoint says how to write
/// safetensors from it.
pub fn read_weights(path: &Path, max_bytes: u64, sha256: Option<&str>) -> Result<HashMap<String, Tensor>, LoadError> {
    let (mut file, size) = match open_bounded(path, max_bytes, "--max-model-bytes") {
        Err(LoadError::Missing { path }) => return Err(missing_weights(path)),
        opened => opened?,
    };
    let weights = |message: String| LoadError::Weights { path: path.to_path_buf(), message };
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix)
        .map_err(|_| weights(format!("is {size} bytes, too short for a safetensors header")))?;
    if prefix.starts_with(ZIP_MAGIC) {
        return Err(weights(format!(
            "is a zip archive, which is what `torch.save` writes (a pickle), not safetensors: {WRITE_SAFETENSORS}"
        )));
    }
    let header_len = u64::from_le_bytes(prefix);
    if header_len > size - 8 {
        return Err(weights(format!(
            "its header claims {header_len} bytes but the file has {} after the length: truncated, or not a safetensors file",
            size - 8
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| weights(format!("cannot read its header: {e}")))?;
    let metadata: safetensors::tensor::Metadata = serde_json::from_slice(&header)
        .map_err(|e| weights(format!("its header is not valid safetensors JSON: {e}")))?;
    let described = 8 + header_len + metadata.data_len() as u64;
    if described != size {
        let problem = if described > size { "truncated (an upload still in progress?)" } else { "padded or corrupt" };
        return Err(weights(format!(
            "is {size} bytes but its header describes {described}: {problem}; refused before reading the tensors"
        )));
    }
    file.seek(SeekFrom::Start(0)).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    let bytes = read_exactly(path, file, size)?;
    if let Some(expected) = sha256 {
        check_digest(path, &bytes, expected)?;
    }
    candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| weights(e.to_string()))
}

/// Reads a model file (an ONNX graph, a tree model) that is a regular file of
/// at most `max_bytes`, checking its SHA-256 when `model.json` lists one.
pub fn read_model_file(path: &Path, max_bytes: u64, sha256: Option<&str>) -> Result<Vec<u8>, LoadError> {
    let (file, size) = open_bounded(path, max_bytes, "--max-model-bytes")?;
    let bytes = read_exactly(path, file, size)?;
    if let Some(expected) = sha256 {
        check_digest(path, &bytes, expected)?;
    }
    Ok(bytes)
}

/// Checks that the file at `path` (a regular file of at most `max_bytes`)
/// has the SHA-256 `expected`.
pub fn verify(path: &Path, max_bytes: u64, expected: &str) -> Result<(), LoadError> {
    read_model_file(path, max_bytes, Some(expected)).map(drop)
}

/// The SHA-256 of `bytes` as model.json lists it: 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn check_digest(path: &Path, bytes: &[u8], expected: &str) -> Result<(), LoadError> {
    let found = sha256_hex(bytes);
    if found == expected {
        return Ok(());
    }
    Err(LoadError::Refused {
        path: path.to_path_buf(),
        reason: format!(
            "has SHA-256 {found}, not the {expected} model.json lists: still being copied, or not the file it was published with; the version is served once they match"
        ),
    })
}

/// The error for a missing weights file: named with the PyTorch checkpoints
/// (`.pt`, `.pth`, `.bin`, `.ckpt`) beside it, if any, and how to convert them.
fn missing_weights(path: std::path::PathBuf) -> LoadError {
    let entries = path.parent().and_then(|dir| std::fs::read_dir(dir).ok());
    let mut checkpoints: Vec<String> = entries
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| [".pt", ".pth", ".bin", ".ckpt"].iter().any(|ext| name.ends_with(ext)))
        .collect();
    if checkpoints.is_empty() {
        return LoadError::Missing { path };
    }
    checkpoints.sort();
    let reason = format!(
        "is missing; the directory holds {} (a `torch.save` pickle?): {WRITE_SAFETENSORS}",
        checkpoints.join(", ")
    );
    LoadError::Refused { path, reason }
}

/// Parses a repository JSON file's text (model.json, rollout.json) into `T`,
/// naming the path of the first field that does not fit; text that is not
/// JSON at all is told apart from JSON with a missing, unknown or wrong key.
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let deserializer = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        match (inner.classify(), at.as_str()) {
            (serde_json::error::Category::Data, ".") => format!("valid JSON, but {inner}"),
            (serde_json::error::Category::Data, at) => format!("valid JSON, but at `{at}`: {inner}"),
            _ => format!("invalid JSON: {inner}"),
        }
    })
}
