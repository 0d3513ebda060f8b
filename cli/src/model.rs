//! `candela model init` and `candela model publish`: from a trained model
//! file to a served version in two commands, with the server's own loader
//! (candela-server's `model::draft` and `model::publish`), so a model.json
//! that `init` writes is one the server serves, and `publish` never puts a
//! version that does not load into a live repository.

use crate::score::{self, Schema};
use anyhow::{Context, bail};
use candela_server::model::draft::{self, DraftOptions};
use candela_server::model::manifest::{Format, LayerSpec, Task};
use candela_server::model::publish;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum ModelAction {
    /// Write model.json beside a LightGBM (.txt), XGBoost (.json, .ubj),
    /// ONNX (.onnx) or safetensors file: features, categories, labels and
    /// task from the file where it has them, its SHA-256, and with
    /// --sample the training statistics drift is measured against.
    Init(Init),
    /// Put a version directory (model.json and its files) into a repository
    /// directory or an s3://, gs://, az:// prefix as the segment's next
    /// version: loaded here first, digests added, files first, model.json last.
    Publish {
        /// The version directory (what `candela model init` wrote into).
        dir: PathBuf,
        /// The repository: a directory, or s3://bucket/prefix (credentials
        /// and endpoint from the environment, as the server's --models).
        repository: String,
        #[arg(long)]
        segment: String,
        /// The version number; default: one after the segment's newest.
        #[arg(long)]
        version: Option<u64>,
    },
}

/// What `candela model init` is told.
#[derive(clap::Args)]
pub struct Init {
    /// The model file; model.json is written beside it.
    pub file: PathBuf,
    /// onnx, lightgbm, xgboost or candle, when the file's name does not say.
    #[arg(long)]
    pub format: Option<String>,
    /// The features in row order, when the file does not name them.
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// A classifier's labels in the model's class order.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// classification or regression, when the file does not say.
    #[arg(long)]
    pub task: Option<String>,
    /// A safetensors network's `layers`, as model.json lists them (JSON).
    #[arg(long)]
    pub layers: Option<String>,
    /// Training rows (CSV or Parquet, a column per feature) to write
    /// monitoring statistics from.
    #[arg(long)]
    pub sample: Option<PathBuf>,
    /// Replace an existing model.json.
    #[arg(long)]
    pub force: bool,
}

/// Runs a `candela model` command; returns what to print.
pub async fn run(action: ModelAction) -> anyhow::Result<String> {
    match action {
        ModelAction::Init(args) => {
            let (path, summary) = init(args)?;
            Ok(format!("wrote {}: {summary}", path.display()))
        }
        ModelAction::Publish { dir, repository, segment, version } => {
            publish(&dir, &repository, &segment, version).await
        }
    }
}

/// Writes model.json beside `init.file`; returns its path and a summary.
pub fn init(init: Init) -> anyhow::Result<(PathBuf, String)> {
    let out = init.file.with_file_name(candela_server::model::MANIFEST_FILE);
    if out.exists() && !init.force {
        bail!("{} exists: pass --force to replace it", out.display());
    }
    fn word<T: serde::de::DeserializeOwned>(text: String) -> serde_json::Result<T> {
        serde_json::from_value(serde_json::Value::String(text))
    }
    let format: Option<Format> =
        init.format.map(word).transpose().context("--format: onnx, lightgbm, xgboost or candle")?;
    let task: Option<Task> = init.task.map(word).transpose().context("--task: classification or regression")?;
    let layers: Vec<LayerSpec> = match init.layers {
        Some(layers) => serde_json::from_str(&layers).context("--layers: model.json's `layers`, a JSON array")?,
        None => Vec::new(),
    };
    let options = DraftOptions { format, features: init.features, labels: init.labels, task, layers };
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut drafted = draft::draft(&init.file, options, &created).map_err(|e| {
        anyhow::anyhow!("{e}\n(each model.json key has its flag: --features, --labels, --task, --layers, --format)")
    })?;
    if let Some(sample) = &init.sample {
        let rows = sample_rows(sample, &drafted)?;
        drafted.monitor(&rows).map_err(anyhow::Error::msg)?;
    }
    let manifest = &drafted.manifest;
    let json = serde_json::to_string_pretty(manifest)? + "\n";
    let partial = out.with_file_name(format!(".{}.partial", candela_server::model::MANIFEST_FILE));
    std::fs::write(&partial, json)
        .and_then(|()| std::fs::rename(&partial, &out))
        .with_context(|| format!("cannot write {}", out.display()))?;
    let answers = match manifest.task() {
        Task::Regression => "a value".to_string(),
        Task::Classification => format!("labels {:?}", manifest.labels),
    };
    let categories = (0..manifest.features.len()).filter(|&f| drafted.scorer.categories(f).is_some()).count();
    let summary = format!(
        "{} features ({categories} categories), {answers}{}",
        manifest.features.len(),
        if manifest.monitoring.is_some() { ", monitoring statistics from the sample" } else { "" }
    );
    Ok((out, summary))
}

/// The sample's rows as the model's features (categories as codes).
fn sample_rows(sample: &Path, drafted: &draft::Draft) -> anyhow::Result<Vec<f32>> {
    let manifest = &drafted.manifest;
    let categories: Vec<bool> = (0..manifest.features.len()).map(|f| drafted.scorer.categories(f).is_some()).collect();
    let features = manifest.features.clone();
    let schema = Schema { features, categories, labels: Vec::new(), record_ids: false, explained: Default::default() };
    let mut values = score::read_table(sample, &schema)?;
    let width = manifest.features.len();
    for column in &values.text {
        let feature = column.feature as usize;
        let Some(known) = drafted.scorer.categories(feature) else { continue };
        let mut missing = vec![false; column.values.len()];
        column.missing.iter().for_each(|&row| missing[row as usize] = true);
        for (row, text) in column.values.iter().enumerate() {
            let name = (!missing[row]).then_some(text.as_str());
            values.values[row * width + feature] = known.code(name).unwrap_or(f32::NAN);
        }
    }
    if values.values.is_empty() {
        bail!("{} has no readable rows", sample.display());
    }
    Ok(values.values)
}

/// Publishes `dir` as `segment`'s next version (or `version`) into `repository`.
pub async fn publish(dir: &Path, repository: &str, segment: &str, version: Option<u64>) -> anyhow::Result<String> {
    let published = publish::publish(dir, repository, segment, version).await.map_err(anyhow::Error::msg)?;
    Ok(format!(
        "published {segment} version {} at {} ({}, model.json last)",
        published.version,
        published.location,
        published.files.join(", ")
    ))
}
