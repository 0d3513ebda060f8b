//! `model.json`: the part of a model a person writes or a trainer emits. It names
//! the input features in order, the output labels, the model's format and file,
//! and where the model came from. For a candle network (the default format) it
//! lists the layers; weights live beside it in `model.safetensors`, named the
//! way PyTorch's `nn.Sequential` names them (`{index}.weight`), so this file only
//! says *which* layers exist, never their sizes: sizes are read from the tensors.
//! An ONNX graph or an XGBoost/LightGBM model carries its own structure: the
//! manifest then only names the file.

use super::monitoring::Monitoring;
use super::scorer::Answers;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The parsed `model.json` of one model version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Input feature names, in the order rows carry them (an ONNX graph's
    /// come from the graph, a booster's from its file, when left out).
    #[serde(default)]
    pub features: Vec<String>,
    /// The categories of a booster's categorical features, by feature, in
    /// code order, for a file that does not store them (callers then send
    /// the names); XGBoost and LightGBM only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub categories: BTreeMap<String, Vec<String>>,
    /// Output class labels, in the order the model's last layer emits them
    /// (an ONNX graph's come from the graph when left out); none for a regressor.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Whether the model classifies (probabilities over `labels`) or
    /// regresses (one value per row). Left out: a classifier, or for an ONNX
    /// graph whatever its model op is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// What kind of model the version's `file` holds.
    #[serde(default)]
    pub format: Format,
    /// The model file in the version directory; by default the format's
    /// usual name (`Format::default_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The dtype a network computes in; weights are converted to it at load.
    /// Trees compute in their library's own precision and take only `f32`.
    #[serde(default)]
    pub dtype: DTypeName,
    /// Prepended to every tensor name, for models saved from a submodule
    /// (e.g. `"net."` when the `nn.Sequential` was the attribute `net`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tensor_prefix: String,
    /// The layers in order; layer `i` owns the tensors `{tensor_prefix}{i}.*`.
    /// Candle networks only: the other formats carry their own structure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerSpec>,
    /// How concurrent requests are merged into forward passes; the server's
    /// `--max-batch-rows` / `--max-queue-delay-us` override it.
    #[serde(default, skip_serializing_if = "BatchingSpec::is_default")]
    pub batching: BatchingSpec,
    /// Where the model came from.
    #[serde(default)]
    pub provenance: Provenance,
    /// The SHA-256 (lowercase hex) of files beside this one, by name (e.g.
    /// `model.safetensors`). When listed, the version is loaded only once
    /// every file matches: a copy still in progress is never served.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// Training statistics of the features and the score, for drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
    /// Rows a model without exact explanations of its own is explained
    /// against (`shapley`), a value per feature (null: missing); left out,
    /// each feature's training median from `monitoring`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub background: Vec<Vec<Option<f64>>>,
}

/// What a model answers per row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// One probability per label.
    #[default]
    Classification,
    /// One value.
    Regression,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
        }
    }
}

/// The formats a model version's file may be in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `model.json`'s `layers` over PyTorch-named safetensors weights.
    #[default]
    Candle,
    /// An ONNX graph (opset ≥ 9), compiled into the same candle network.
    Onnx,
    /// An XGBoost model saved as JSON (`.json`) or UBJSON (`.ubj`).
    Xgboost,
    /// A LightGBM model in its text format (`save_model`).
    Lightgbm,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Candle => "candle",
            Format::Onnx => "onnx",
            Format::Xgboost => "xgboost",
            Format::Lightgbm => "lightgbm",
        }
    }

    /// The file a version of this format holds when `model.json` names none.
    pub fn default_file(self) -> &'static str {
        match self {
            Format::Candle => super::WEIGHTS_FILE,
            Format::Onnx => "model.onnx",
            Format::Xgboost => "xgboost.json",
            Format::Lightgbm => "lightgbm.txt",
        }
    }
}

impl Manifest {
    /// The name of the version's model file.
    pub fn file(&self) -> &str {
        self.file.as_deref().unwrap_or(self.format.default_file())
    }

    /// What the model answers (a classifier unless model.json or the graph says otherwise).
    pub fn task(&self) -> Task {
        self.task.unwrap_or_default()
    }

    /// What the model's head must answer per row.
    pub fn answers(&self) -> Answers {
        match self.task() {
            Task::Classification => Answers::Classes(self.labels.len()),
            Task::Regression => Answers::Value,
        }
    }
}

/// A model's dynamic-batching preferences.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingSpec {
    /// The most rows one forward pass merges (a single larger request still
    /// runs, alone). Default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_rows: Option<usize>,
    /// Microseconds a pass may wait after its first request for more to
    /// arrive. Default 0: merge whatever is queued when the model is free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_delay_us: Option<u64>,
}

impl BatchingSpec {
    fn is_default(&self) -> bool {
        *self == BatchingSpec::default()
    }
}

/// The numeric type a model computes in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DTypeName {
    #[default]
    F32,
    F16,
    Bf16,
    F64,
}

impl DTypeName {
    pub fn as_str(self) -> &'static str {
        match self {
            DTypeName::F32 => "f32",
            DTypeName::F16 => "f16",
            DTypeName::Bf16 => "bf16",
            DTypeName::F64 => "f64",
        }
    }
}

/// One layer of the network, tagged by `"type"`. The tensors each layer reads
/// are those PyTorch's matching module stores in its `state_dict`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// `(x - mean) / std` per feature; tensors `mean` and `std` (a module with
    /// those two buffers), so raw feature values can be sent unscaled.
    Standardize,
    /// `nn.Linear`: tensors `weight` `[out, in]` and, when `bias`, `bias` `[out]`.
    Linear {
        #[serde(default = "yes")]
        bias: bool,
    },
    Relu,
    /// `nn.GELU`: exact (erf) by default, `"approximate": "tanh"` for the tanh form.
    Gelu {
        #[serde(default)]
        approximate: GeluApproximation,
    },
    Tanh,
    Sigmoid,
    /// Softmax over the classes; as the last layer it makes the output probabilities.
    Softmax,
    /// `nn.LayerNorm` over the features: tensors `weight`, `bias`; without
    /// them in the file (`elementwise_affine=False`, `bias=False`) weight 1
    /// and bias 0.
    LayerNorm {
        #[serde(default = "default_eps")]
        eps: f64,
    },
    /// `nn.BatchNorm1d` in inference form: tensors `weight`, `bias`,
    /// `running_mean`, `running_var` (`num_batches_tracked` is ignored);
    /// without `weight`/`bias` in the file (`affine=False`) weight 1 and bias 0.
    BatchNorm {
        #[serde(default = "default_eps")]
        eps: f64,
    },
    /// `nn.Dropout`: the identity at inference; listed so layer indices match
    /// the `nn.Sequential` the weights came from.
    Dropout {
        #[serde(default)]
        p: f64,
    },
    /// A linear layer quantized to INT8 as onnxruntime's `quantize_dynamic`
    /// writes it, its input quantized per row at run time: tensors `weight`
    /// `[out, in]` (integers), `weight_zero_point`, `weight_scale` and `bias`
    /// `[out]`. Compiled from ONNX graphs only, never listed in model.json.
    #[serde(skip)]
    DynamicInt8Linear,
}

/// Which GELU formula a layer uses, as PyTorch's `approximate` argument.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeluApproximation {
    #[default]
    None,
    Tanh,
}

fn yes() -> bool {
    true
}

fn default_eps() -> f64 {
    1e-5
}

/// How and from what a model was made.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// When the model was created (RFC 3339).
    #[serde(default)]
    pub created: String,
    /// What the model was trained on.
    #[serde(default)]
    pub training_data: String,
    /// Metrics on held-out data, e.g. `{"auc": 0.95}`.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub notes: String,
}

impl LayerSpec {
    /// A short human name, e.g. for `GetModel`'s layer list and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Standardize => "standardize",
            LayerSpec::Linear { .. } => "linear",
            LayerSpec::Relu => "relu",
            LayerSpec::Gelu { .. } => "gelu",
            LayerSpec::Tanh => "tanh",
            LayerSpec::Sigmoid => "sigmoid",
            LayerSpec::Softmax => "softmax",
            LayerSpec::LayerNorm { .. } => "layer_norm",
            LayerSpec::BatchNorm { .. } => "batch_norm",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::DynamicInt8Linear => "int8_linear",
        }
    }
}
