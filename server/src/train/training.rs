//! Trains the bundled demo models: a small MLP per segment on the synthetic
//! generator, written as a model repository entry exactly as a PyTorch user
//! would export one (`nn.Sequential` tensor names, safetensors). Everything is
//! seeded, so `candela-train` reproduces the committed weights.

use super::synthetic::{self, FEATURES, LABELS, Segment};
use crate::model::manifest::{DTypeName, LayerSpec, Manifest, Provenance};
use crate::model::monitoring::{Bins, Monitoring};
use crate::model::{MANIFEST_FILE, WEIGHTS_FILE};
use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// How a demo model is trained.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub seed: u64,
    /// Input features: the generator's 30, or more (up to
    /// `synthetic::MAX_FEATURES`) by adding products of pairs of them.
    pub features: usize,
    pub train_rows: usize,
    pub held_out_rows: usize,
    pub hidden: [usize; 2],
    pub epochs: usize,
    pub batch_rows: usize,
    pub learning_rate: f64,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            seed: 2026,
            features: FEATURES.len(),
            train_rows: 40_000,
            held_out_rows: 10_000,
            hidden: [32, 16],
            epochs: 12,
            batch_rows: 256,
            learning_rate: 3e-3,
        }
    }
}

/// A trained model, ready to write as `<segment>/<version>/`.
pub struct Trained {
    pub manifest: Manifest,
    pub tensors: BTreeMap<String, Tensor>,
    pub held_out_auc: f64,
}

/// Seeds for the three datasets of a segment, kept apart so the held-out rows
/// never overlap the training rows, and tests can draw fresh rows again.
fn seeds(config: &TrainConfig, segment: Segment) -> (u64, u64, u64) {
    let base = config.seed.wrapping_mul(1_000).wrapping_add(segment as u64 * 10);
    (base + 1, base + 2, base + 3)
}

/// The rows `segment`'s model trains on and is measured on (held out), as
/// `config` makes them: the same for every trainer, so a tree model trained
/// by another library on the exported rows (`candela-train --export-data`)
/// is measured as the networks are.
pub fn datasets(segment: Segment, config: &TrainConfig) -> (synthetic::Dataset, synthetic::Dataset) {
    let (data_seed, held_out_seed, _) = seeds(config, segment);
    let n = config.features;
    let train = synthetic::generate(segment, config.train_rows, data_seed).widen(n);
    let held_out = synthetic::generate(segment, config.held_out_rows, held_out_seed).widen(n);
    (train, held_out)
}

/// Writes `data` as CSV: a header of the feature names and `label`, then
/// one line per row (values as f32 prints them, exactly).
pub fn write_csv(data: &synthetic::Dataset, features: usize, path: &Path) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut text = synthetic::feature_names(features).join(",") + ",label\n";
    for (row, label) in data.values.chunks(features).zip(&data.labels) {
        for value in row {
            write!(text, "{value},")?;
        }
        writeln!(text, "{label}")?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Trains `segment`'s model with `config`.
pub fn train(segment: Segment, config: &TrainConfig) -> anyhow::Result<Trained> {
    let n = config.features;
    if !(FEATURES.len()..=synthetic::MAX_FEATURES).contains(&n) {
        anyhow::bail!(
            "{n} features: the generator makes {} base features and up to {} with pairwise products",
            FEATURES.len(),
            synthetic::MAX_FEATURES
        );
    }
    let (data_seed, held_out_seed, init_seed) = seeds(config, segment);
    let (train, held_out) = datasets(segment, config);
    let device = Device::Cpu;

    let (mean, std) = column_stats(&train.values, n);
    let standardize = |values: &[f32]| -> Vec<f32> {
        values.iter().enumerate().map(|(i, v)| (v - mean[i % n]) / std[i % n]).collect()
    };
    let x = Tensor::from_vec(standardize(&train.values), (train.rows(), n), &device)?;
    let y = Tensor::from_vec(train.labels.clone(), train.rows(), &device)?;

    let mut rng = ChaCha8Rng::seed_from_u64(init_seed);
    let widths = [n, config.hidden[0], config.hidden[1], LABELS.len()];
    // Layer indices follow the exported nn.Sequential: 0 standardize, 1 linear,
    // 2 relu, 3 linear, 4 relu, 5 linear, 6 softmax.
    let linear_index = [1, 3, 5];
    let mut params = Vec::new();
    for w in widths.windows(2) {
        params.push((init(&mut rng, &[w[1], w[0]], w[0])?, init(&mut rng, &[w[1]], w[0])?));
    }
    let vars: Vec<Var> = params.iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect();
    let mut optimizer =
        AdamW::new(vars, ParamsAdamW { lr: config.learning_rate, weight_decay: 1e-4, ..ParamsAdamW::default() })?;

    let logits = |x: &Tensor| -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (i, (w, b)) in params.iter().enumerate() {
            h = h.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?;
            if i + 1 < params.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    };
    let mut order: Vec<u32> = (0..train.rows() as u32).collect();
    for _ in 0..config.epochs {
        order.shuffle(&mut rng);
        for batch in order.chunks(config.batch_rows) {
            let index = Tensor::from_slice(batch, batch.len(), &device)?;
            let loss =
                candle_nn::loss::cross_entropy(&logits(&x.index_select(&index, 0)?)?, &y.index_select(&index, 0)?)?;
            optimizer.backward_step(&loss)?;
        }
    }

    let held_out_x = Tensor::from_vec(standardize(&held_out.values), (held_out.rows(), n), &device)?;
    let probabilities = candle_nn::ops::softmax_last_dim(&logits(&held_out_x)?)?.to_vec2::<f32>()?;
    let fraud_scores: Vec<f32> = probabilities.iter().map(|p| p[1]).collect();
    let held_out_auc = auc(&fraud_scores, &held_out.labels);

    let mut tensors = BTreeMap::new();
    tensors.insert("0.mean".to_string(), Tensor::from_vec(mean, n, &device)?);
    tensors.insert("0.std".to_string(), Tensor::from_vec(std, n, &device)?);
    for (index, (w, b)) in linear_index.iter().zip(&params) {
        tensors.insert(format!("{index}.weight"), w.as_tensor().detach());
        tensors.insert(format!("{index}.bias"), b.as_tensor().detach());
    }
    let manifest = Manifest {
        features: synthetic::feature_names(n),
        categories: BTreeMap::new(),
        labels: LABELS.iter().map(|s| s.to_string()).collect(),
        task: None,
        format: Default::default(),
        file: None,
        dtype: DTypeName::F32,
        tensor_prefix: String::new(),
        batching: Default::default(),
        files: BTreeMap::new(),
        monitoring: Some(monitoring(&train.values, n, &fraud_scores)),
        background: Vec::new(),
        layers: vec![
            LayerSpec::Standardize,
            LayerSpec::Linear { bias: true },
            LayerSpec::Relu,
            LayerSpec::Linear { bias: true },
            LayerSpec::Relu,
            LayerSpec::Linear { bias: true },
            LayerSpec::Softmax,
        ],
        provenance: Provenance {
            created: String::new(),
            training_data: format!(
                "synthetic `{}` transactions from candela_server::synthetic: {} training rows (seed {data_seed}), {} held-out rows (seed {held_out_seed})",
                segment.name(),
                config.train_rows,
                config.held_out_rows
            ),
            metrics: BTreeMap::from([("held_out_auc".to_string(), (held_out_auc * 1e4).round() / 1e4)]),
            notes: format!(
                "candela-train: MLP {n}→{}→{}→2, ReLU, AdamW lr {} for {} epochs of {}-row batches",
                config.hidden[0], config.hidden[1], config.learning_rate, config.epochs, config.batch_rows
            ),
        },
    };
    Ok(Trained { manifest, tensors, held_out_auc })
}

/// The training statistics drift is measured against: each feature's
/// deciles over the training rows (row-major `values`, `n` per row) and the
/// share of rows in each bin, and the same for the held-out fraud `scores`.
fn monitoring(values: &[f32], n: usize, scores: &[f32]) -> Monitoring {
    let histogram = Bins::deciles;
    let features = synthetic::feature_names(n)
        .into_iter()
        .enumerate()
        .map(|(col, name)| (name, histogram(values.iter().skip(col).step_by(n).map(|v| f64::from(*v)).collect())))
        .collect();
    Monitoring { features, score: Some(histogram(scores.iter().map(|v| f64::from(*v)).collect())) }
}

/// Writes `trained` as `dir/model.safetensors`, then `dir/model.json`
/// listing the weights' SHA-256: the way to publish into a live repository,
/// which serves a version only once its model.json is present and every
/// file it lists matches. model.json is written whole (a temporary file,
/// renamed), so a server never reads half of it.
pub fn write(trained: &Trained, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tensors: HashMap<String, Tensor> = trained.tensors.clone().into_iter().collect();
    let weights = dir.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &weights)?;
    // safetensors writes its file owner-only (0600); a model repository is read
    // by the server's own user, often not the trainer's (a container's non-root
    // user), so it gets the same world-readable mode as model.json.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&weights, std::fs::Permissions::from_mode(0o644))?;
    let digest = crate::model::files::sha256_hex(&std::fs::read(&weights)?);
    let mut manifest = trained.manifest.clone();
    manifest.files.insert(WEIGHTS_FILE.to_string(), digest);
    let json = serde_json::to_string_pretty(&manifest)? + "\n";
    let partial = dir.join(format!(".{MANIFEST_FILE}.partial"));
    std::fs::write(&partial, json)?;
    std::fs::rename(&partial, dir.join(MANIFEST_FILE))?;
    Ok(())
}

/// The fresh held-out rows tests score: never used in training or in the
/// held-out metric recorded in model.json.
pub fn fresh_rows(segment: Segment, rows: usize) -> synthetic::Dataset {
    let (_, _, init_seed) = seeds(&TrainConfig::default(), segment);
    synthetic::generate(segment, rows, init_seed.wrapping_add(7_777))
}

/// Area under the ROC curve of `scores` for binary `labels` (1 = positive),
/// by the rank-sum formula with ties counted half.
pub fn auc(scores: &[f32], labels: &[u32]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += order[i..=j].iter().filter(|&&k| labels[k] == 1).count() as f64 * average_rank;
        i = j + 1;
    }
    let positives = labels.iter().filter(|&&l| l == 1).count() as f64;
    let negatives = labels.len() as f64 - positives;
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

/// Per-column mean and standard deviation (a constant column gets std 1).
fn column_stats(values: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = (values.len() / n) as f64;
    let mut sum = vec![0.0f64; n];
    let mut sum_sq = vec![0.0f64; n];
    for (i, v) in values.iter().enumerate() {
        sum[i % n] += *v as f64;
        sum_sq[i % n] += (*v as f64) * (*v as f64);
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / rows).collect();
    let std = sum_sq
        .iter()
        .zip(&mean)
        .map(|(sq, m)| {
            let var = sq / rows - m * m;
            if var > 1e-12 { var.sqrt() as f32 } else { 1.0 }
        })
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

/// PyTorch's default `nn.Linear` initialisation: U(-1/√fan_in, 1/√fan_in).
fn init(rng: &mut ChaCha8Rng, shape: &[usize], fan_in: usize) -> candle_core::Result<Var> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count).map(|_| rng.gen_range(-bound..bound)).collect();
    Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(DType::F32)?)
}
