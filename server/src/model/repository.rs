//! The model repository on disk: `<root>/<segment>/<version>/model.json` plus
//! the model file it names (`model.safetensors` for a candle network). Loading scans the whole tree, builds and warms every
//! model, and reports *every* broken model at once (file, tensor, what was
//! expected), so an operator fixes a repository in one pass, not one error per
//! restart. Nothing here is on the request path.

use super::error::{LoadError, LoadErrors};
use super::manifest::{DTypeName, Format, LayerSpec, Manifest, Task};
use super::network::{ModelError, Network};
use super::scorer::Scorer;
use super::{LoadedModel, MANIFEST_FILE, files, onnx, shapley, trees};
use candle_core::Device;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The default for `--max-model-bytes`: the most one model's weights file may hold.
pub const DEFAULT_MAX_MODEL_BYTES: u64 = 1 << 30;

/// A version directory a scan found, and what its files looked like.
#[derive(Debug, Clone)]
pub struct Found {
    pub segment: String,
    pub version: u64,
    pub dir: PathBuf,
    /// The files' names, sizes, modification times and inodes: equal
    /// fingerprints mean the version has not changed since it was read.
    pub fingerprint: Fingerprint,
    /// Whether the directory holds a `model.json` entry: without one, the
    /// version is being published (model.json goes last) or unpublished
    /// (it goes first), never broken.
    pub published: bool,
}

/// What a version directory's files looked like when scanned (metadata
/// only: a scan never reads a file).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint(Vec<(String, u64, i64, i64, u64)>);

/// A scan of a repository: every version directory, and every problem that
/// keeps a directory from being a version (a bad name, a segment without
/// versions, a symbolic link that leads nowhere).
#[derive(Debug, Default)]
pub struct Scan {
    pub found: Vec<Found>,
    pub problems: Vec<LoadError>,
}

/// Lists the version directories under `root` and fingerprints their files,
/// without reading any. Fails only when `root` itself cannot be read.
pub fn scan(root: &Path) -> Result<Scan, LoadError> {
    let mut scan = Scan::default();
    let segments = subdirectories(root, false, &mut scan.problems)?;
    if segments.is_empty() && scan.problems.is_empty() {
        scan.problems.push(LoadError::Empty { path: root.to_path_buf() });
    }
    for (segment, segment_dir) in segments {
        if !valid_segment_name(&segment) {
            scan.problems.push(LoadError::BadName {
                path: root.to_path_buf(),
                name: segment,
                what: "segment name",
                rule: "use letters, digits, '_', '-' and '.', starting with a letter or digit",
            });
            continue;
        }
        let versions = match subdirectories(&segment_dir, true, &mut scan.problems) {
            Ok(dirs) => dirs,
            Err(error) => {
                scan.problems.push(error);
                continue;
            }
        };
        if versions.is_empty() {
            scan.problems.push(LoadError::NoVersions { path: segment_dir });
            continue;
        }
        for (name, dir) in versions {
            match name.parse::<u64>() {
                Ok(version) if version > 0 && !name.starts_with('0') => {
                    let (fingerprint, published) = fingerprint(&dir);
                    scan.found.push(Found { segment: segment.clone(), version, dir, fingerprint, published });
                }
                _ => scan.problems.push(LoadError::BadName {
                    path: segment_dir.clone(),
                    name,
                    what: "version directory",
                    rule: "versions are positive integers without leading zeros (1, 2, 10, ...)",
                }),
            }
        }
    }
    Ok(scan)
}

/// The metadata of every file in `dir` (following links), sorted by name,
/// and whether a `model.json` entry is among them (even one whose link leads
/// nowhere: loading it says why). An unreadable directory has an empty
/// fingerprint and counts as published; loading it says why.
fn fingerprint(dir: &Path) -> (Fingerprint, bool) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return (Fingerprint::default(), true) };
    let (mut files, mut published) = (Vec::new(), false);
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        published |= name == MANIFEST_FILE;
        if let Ok(metadata) = std::fs::metadata(entry.path()) {
            files.push((name, metadata.size(), metadata.mtime(), metadata.mtime_nsec(), metadata.ino()));
        }
    }
    files.sort();
    (Fingerprint(files), published)
}

/// Loads, validates and warms every model under `root` onto `device`.
/// `device_name` is how the device is reported to callers; no weights file
/// may exceed `max_model_bytes`. Every problem is reported, not the first.
pub fn load(
    root: &Path,
    device: &Device,
    device_name: &str,
    max_model_bytes: u64,
) -> Result<Vec<LoadedModel>, LoadErrors> {
    let Scan { found, mut problems } = scan(root).map_err(|error| LoadErrors(vec![error]))?;
    let mut models = Vec::new();
    for found in found {
        match load_version(&found.segment, found.version, &found.dir, device, device_name, max_model_bytes) {
            Ok(model) => models.push(model),
            Err(error) => problems.push(error),
        }
    }
    if problems.is_empty() { Ok(models) } else { Err(LoadErrors(problems)) }
}

/// Loads one `<segment>/<version>/` directory and warms it with one forward pass.
pub fn load_version(
    segment: &str,
    version: u64,
    dir: &Path,
    device: &Device,
    device_name: &str,
    max_model_bytes: u64,
) -> Result<LoadedModel, LoadError> {
    let mut manifest = read_manifest(&dir.join(MANIFEST_FILE))?;
    let scorer = build_scorer(dir, &mut manifest, device, max_model_bytes)?;
    let device = if scorer.on_cpu() { "cpu" } else { device_name };
    let baseline = shapley::Baseline::of(&manifest);
    Ok(LoadedModel { segment: segment.to_string(), version, scorer, device: device.to_string(), manifest, baseline })
}

/// Builds the model `manifest` describes from `dir`'s model file (at most
/// `max_model_bytes`): a network on `device` in `manifest.dtype`, or a tree
/// ensemble on the CPU; then warms it with one forward pass. An ONNX
/// graph's features and labels fill those model.json leaves out.
pub fn build_scorer(
    dir: &Path,
    manifest: &mut Manifest,
    device: &Device,
    max_model_bytes: u64,
) -> Result<Box<dyn Scorer>, LoadError> {
    let file = manifest.file();
    for (name, digest) in &manifest.files {
        if name != file {
            files::verify(&dir.join(name), max_model_bytes, digest)?;
        }
    }
    let path = dir.join(file);
    let sha256 = manifest.files.get(file).map(String::as_str);
    let (inputs, answers) = (manifest.features.len(), manifest.answers());
    let model = |source: ModelError| LoadError::Model { path: path.clone(), source };
    let network = |layers: &[LayerSpec], prefix: &str, tensors| {
        Network::build(layers, prefix, tensors, inputs, answers, manifest.dtype, device).map_err(model)
    };
    let scorer: Box<dyn Scorer> = match manifest.format {
        Format::Candle => {
            let tensors = files::read_weights(&path, max_model_bytes, sha256)?;
            Box::new(network(&manifest.layers, &manifest.tensor_prefix, tensors)?)
        }
        Format::Onnx => {
            let bytes = files::read_model_file(&path, max_model_bytes, sha256)?;
            let (features, labels) = (&manifest.features, &manifest.labels);
            let compiled =
                onnx::compile(&bytes, features, labels, manifest.task, manifest.dtype, device).map_err(model)?;
            manifest.features = compiled.features;
            manifest.labels = compiled.labels;
            manifest.task = Some(compiled.task);
            check_names(manifest).map_err(|message| LoadError::Manifest { path: dir.join(MANIFEST_FILE), message })?;
            compiled.scorer
        }
        Format::Xgboost | Format::Lightgbm => {
            // The file's bytes (and XGBoost's parsed document) go as soon as
            // they are read: a large model's load holds at most two of its
            // file, its parsed form and its forest.
            let trees = |e| model(ModelError::Trees(e));
            let (ensemble, schema) = {
                let bytes = files::read_model_file(&path, max_model_bytes, sha256)?;
                if manifest.format == Format::Lightgbm {
                    trees::lightgbm::parse(&bytes).map_err(trees)?
                } else {
                    let document = trees::xgboost::read(&bytes, file.ends_with(".ubj")).map_err(trees)?;
                    drop(bytes);
                    trees::xgboost::booster(&document).map_err(trees)?
                }
            };
            let categories = trees::schema::settle(schema, &ensemble, manifest).map_err(trees)?;
            check_names(manifest).map_err(|message| LoadError::Manifest { path: dir.join(MANIFEST_FILE), message })?;
            let (inputs, answers) = (manifest.features.len(), manifest.answers());
            Box::new(trees::Forest::build(ensemble, inputs, answers).map_err(trees)?.with_categories(categories))
        }
    };
    // Warm-up: the first pass allocates and (on CUDA) compiles kernels; do it
    // now rather than on a caller's request, and prove the model answers.
    let pass = scorer.forward(&vec![0.0; scorer.inputs()]).map_err(|e| model(ModelError::Compute(e.0)))?;
    let probabilities = pass.probabilities;
    if probabilities.len() != scorer.outputs() || !pass.overflowed.is_empty() {
        return Err(model(ModelError::BadHead(format!(
            "warm-up on a row of zeros gave {probabilities:?}, not {} finite answers",
            scorer.outputs()
        ))));
    }
    Ok(scorer)
}

/// Reads and checks `model.json` on its own, before any tensor is read.
pub fn read_manifest(path: &Path) -> Result<Manifest, LoadError> {
    let text = files::read_manifest_text(path)?;
    parse_manifest(&text).map_err(|message| LoadError::Manifest { path: path.to_path_buf(), message })
}

/// Parses and checks the text of a `model.json`: valid JSON of the right
/// shape, features and labels present and unique (an ONNX graph's may come
/// from the graph: checked once it is read), layers listed.
pub fn parse_manifest(text: &str) -> Result<Manifest, String> {
    let manifest: Manifest = files::parse_json(text)?;
    let format = manifest.format;
    // An ONNX graph or a booster file may fill in features and a task (labels,
    // for a graph): checked once the file is read.
    let from_file =
        manifest.features.is_empty() || (manifest.labels.is_empty() && manifest.task() == Task::Classification);
    if format == Format::Candle || !from_file {
        check_names(&manifest)?;
    }
    if !manifest.categories.is_empty() && !matches!(format, Format::Xgboost | Format::Lightgbm) {
        return Err(format!(
            "`categories` is for XGBoost and LightGBM models whose file does not store them; a `{}` model's come \
             from its file: remove `categories`",
            format.as_str()
        ));
    }
    match format {
        Format::Candle if manifest.layers.is_empty() => {
            return Err("`layers` is empty: list the network's layers in order".into());
        }
        Format::Candle => {}
        _ if !manifest.layers.is_empty() => {
            return Err(format!(
                "`layers` is for candle networks; a `{}` model's structure comes from its file: remove `layers`",
                format.as_str()
            ));
        }
        Format::Xgboost | Format::Lightgbm
            if manifest.dtype != DTypeName::F32 || !manifest.tensor_prefix.is_empty() =>
        {
            return Err(format!(
                "`dtype` and `tensor_prefix` are for networks; a `{}` model computes in its library's own precision: remove them",
                format.as_str()
            ));
        }
        _ => {}
    }
    let file = manifest.file();
    if file == MANIFEST_FILE || file.is_empty() || file.starts_with('.') || file.contains(['/', '\\']) {
        return Err(format!(
            "`file` is `{file}`: name the model file beside model.json (for example `{}`)",
            format.default_file()
        ));
    }
    for (name, digest) in &manifest.files {
        if name == MANIFEST_FILE || name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
            return Err(format!(
                "`files` lists `{name}`: list the files beside model.json (such as {}) by name, not model.json itself",
                manifest.file()
            ));
        }
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("`files.{name}` is `{digest}`: expected a SHA-256 as 64 lowercase hex digits"));
        }
    }
    Ok(manifest)
}

/// Features and labels present and unique, and the training statistics
/// about those features.
fn check_names(manifest: &Manifest) -> Result<(), String> {
    if manifest.features.is_empty() {
        return Err("`features` is empty: list the input feature names in row order".into());
    }
    if let Some(name) = first_duplicate(&manifest.features) {
        return Err(format!("`features` names `{name}` twice: feature names must be unique"));
    }
    match manifest.task() {
        Task::Regression if !manifest.labels.is_empty() => {
            return Err(
                "`labels` is for classifiers; a regressor (`task` regression) answers one value: remove `labels`"
                    .into(),
            );
        }
        Task::Regression => {}
        Task::Classification if manifest.labels.len() < 2 => {
            return Err(format!("`labels` has {} entries: a classifier needs at least 2", manifest.labels.len()));
        }
        Task::Classification => {}
    }
    if let Some(name) = first_duplicate(&manifest.labels) {
        return Err(format!("`labels` names `{name}` twice: labels must be unique"));
    }
    if let Some(monitoring) = &manifest.monitoring {
        monitoring.check(&manifest.features)?;
    }
    shapley::check_background(manifest)
}

fn first_duplicate(names: &[String]) -> Option<&str> {
    let mut seen = HashSet::new();
    names.iter().find(|n| !seen.insert(n.as_str())).map(String::as_str)
}

/// Whether `name` may be a segment's directory name.
pub fn valid_segment_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The non-hidden subdirectories of `dir`, sorted by name. Plain files (a
/// README beside the segments, rollout.json beside the versions) are not
/// models and are skipped, but among `versions` a file, FIFO or device named
/// like a version is reported in `errors`: it is where a version belongs. A
/// symbolic link that leads nowhere (dangling, or a loop) is reported too,
/// never skipped silently: it is usually a version being published.
fn subdirectories(
    dir: &Path,
    versions: bool,
    errors: &mut Vec<LoadError>,
) -> Result<Vec<(String, PathBuf)>, LoadError> {
    let io = |source| LoadError::Io { path: dir.to_path_buf(), source };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(metadata) if metadata.is_dir() => found.push((name, path)),
            Ok(_) if versions && !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) => {
                errors.push(LoadError::Refused {
                    path,
                    reason: "is not a directory: a version is a directory holding model.json and the files it names"
                        .into(),
                });
            }
            Ok(_) => {}
            Err(error) => {
                let target = std::fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_default();
                errors.push(LoadError::Refused {
                    path,
                    reason: format!("is a symbolic link to `{target}` that cannot be followed ({error})"),
                });
            }
        }
    }
    found.sort();
    Ok(found)
}
