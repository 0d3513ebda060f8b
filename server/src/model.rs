//! The network a model version runs: its layers compiled into candle operations
//! on one device, and the forward pass from packed feature rows to class
//! probabilities. Building a `Network` checks every tensor against the layer
//! list, so a model that builds is a model that can answer; the checks' failures
//! are `ModelError`s that name the tensor and what was expected.

use crate::repository::manifest::{DTypeName, GeluApproximation, LayerSpec};
use crate::stats::Stages;
use candle_core::{DType, Device, Module, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// Why a layer list and a set of tensors do not make a network.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("tensor `{name}` is missing: layer {layer} ({kind}) needs it")]
    MissingTensor { name: String, layer: usize, kind: &'static str },
    #[error("tensor `{name}` has shape {found:?}; expected {expected}")]
    BadShape { name: String, found: Vec<usize>, expected: String },
    #[error("tensor `{name}` {problem}")]
    BadValues { name: String, problem: String },
    #[error("tensor `{name}` is not used by any layer: is a layer missing from model.json's `layers`?")]
    UnusedTensor { name: String },
    #[error("{0}")]
    BadHead(String),
    #[error(
        "layer {layer} ({kind}) holds a value of magnitude {largest}, beyond f16's largest (65504): this model cannot compute in f16; use dtype `bf16` (f32's range) or `f32`"
    )]
    F16Range { layer: usize, kind: &'static str, largest: f32 },
    #[error("model.json lists no features")]
    NoFeatures,
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// How the last layer's output becomes one probability per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// The last layer is a softmax over all classes.
    Softmax,
    /// The last layer is a sigmoid of one logit: P(labels[1]); labels[0] gets the rest.
    BinarySigmoid,
}

/// One compiled layer.
enum Op {
    /// `x * scale + shift` per feature: standardisation and inference batch norm
    /// both fold into this at load, so the request path does one fused op.
    Affine {
        scale: Tensor,
        shift: Tensor,
    },
    Linear(candle_nn::Linear),
    LayerNorm {
        weight: Tensor,
        bias: Tensor,
        eps: f32,
    },
    Relu,
    Gelu,
    GeluTanh,
    Tanh,
    Sigmoid,
    Softmax,
}

/// A model's network, resident on its device in its dtype.
pub struct Network {
    /// The leading per-feature affine ops (standardisation, a first batch
    /// norm), computed at least in f32 so raw feature magnitudes
    /// never meet f16's narrow range.
    prelude: Vec<Op>,
    /// The rest, in the model's dtype.
    ops: Vec<Op>,
    /// One line per layer as a caller would read it, e.g. `linear(30→32)`.
    description: Vec<String>,
    device: Device,
    dtype: DType,
    inputs: usize,
    classes: usize,
    head: Head,
}

impl Network {
    /// Compiles `layers` over `tensors` (as loaded from safetensors, any float
    /// dtype, on the CPU) for `inputs` features and `classes` labels, then moves
    /// the weights to `device` in `dtype`.
    pub fn build(
        layers: &[LayerSpec],
        prefix: &str,
        mut tensors: HashMap<String, Tensor>,
        inputs: usize,
        classes: usize,
        dtype: DTypeName,
        device: &Device,
    ) -> Result<Network, ModelError> {
        if inputs == 0 {
            return Err(ModelError::NoFeatures);
        }
        let dtype = match dtype {
            DTypeName::F32 => DType::F32,
            DTypeName::F16 => DType::F16,
            DTypeName::Bf16 => DType::BF16,
            DTypeName::F64 => DType::F64,
        };
        let mut width = inputs;
        // Each op with the index and kind of the layer it came from.
        let mut ops: Vec<(usize, &'static str, Op)> = Vec::with_capacity(layers.len());
        let mut description = Vec::with_capacity(layers.len());
        for (index, layer) in layers.iter().enumerate() {
            let width_in = width;
            let mut take = |param: &str, shape: &[usize], expected: &dyn Fn() -> String| {
                let name = format!("{prefix}{index}.{param}");
                let tensor = tensors.remove(&name).ok_or_else(|| ModelError::MissingTensor {
                    name: name.clone(),
                    layer: index,
                    kind: layer.kind(),
                })?;
                let found = tensor.dims().to_vec();
                let fits = found.len() == shape.len() && found.iter().zip(shape).all(|(f, s)| *s == 0 || f == s);
                if !fits {
                    return Err(ModelError::BadShape { name, found, expected: expected() });
                }
                let tensor = tensor.to_dtype(DType::F32)?;
                check_finite(&name, &tensor)?;
                Ok((name, tensor))
            };
            let per_feature = || format!("[{width}] (one value per feature reaching layer {index})");
            let op = match layer {
                LayerSpec::Standardize => {
                    let (_, mean) = take("mean", &[width], &per_feature)?;
                    let (std_name, std) = take("std", &[width], &per_feature)?;
                    if std.to_vec1::<f32>()?.iter().any(|s| *s <= 0.0) {
                        return Err(ModelError::BadValues {
                            name: std_name,
                            problem: "has a value ≤ 0; a standard deviation must be positive".into(),
                        });
                    }
                    let scale = std.recip()?;
                    let shift = mean.neg()?.mul(&scale)?;
                    Op::Affine { scale, shift }
                }
                LayerSpec::BatchNorm { eps } => {
                    let (_, weight) = take("weight", &[width], &per_feature)?;
                    let (_, bias) = take("bias", &[width], &per_feature)?;
                    let (_, mean) = take("running_mean", &[width], &per_feature)?;
                    let (var_name, var) = take("running_var", &[width], &per_feature)?;
                    if var.to_vec1::<f32>()?.iter().any(|v| *v < 0.0) {
                        return Err(ModelError::BadValues {
                            name: var_name,
                            problem: "has a negative value; a variance cannot be negative".into(),
                        });
                    }
                    tensors.remove(&format!("{prefix}{index}.num_batches_tracked"));
                    let scale = weight.div(&var.affine(1.0, *eps)?.sqrt()?)?;
                    let shift = bias.sub(&mean.mul(&scale)?)?;
                    Op::Affine { scale, shift }
                }
                LayerSpec::Linear { bias } => {
                    let wide = width;
                    let (_, weight) = take("weight", &[0, width], &|| {
                        format!("[out, {wide}] (layer {index} receives {wide} features)")
                    })?;
                    let out = weight.dims()[0];
                    let bias = if *bias {
                        Some(
                            take("bias", &[out], &|| format!("[{out}] (one per output of `{prefix}{index}.weight`)"))?
                                .1,
                        )
                    } else {
                        None
                    };
                    width = out;
                    Op::Linear(candle_nn::Linear::new(weight, bias))
                }
                LayerSpec::LayerNorm { eps } => {
                    let (_, weight) = take("weight", &[width], &per_feature)?;
                    let (_, bias) = take("bias", &[width], &per_feature)?;
                    Op::LayerNorm { weight, bias, eps: *eps as f32 }
                }
                LayerSpec::Relu => Op::Relu,
                LayerSpec::Gelu { approximate: GeluApproximation::None } => Op::Gelu,
                LayerSpec::Gelu { approximate: GeluApproximation::Tanh } => Op::GeluTanh,
                LayerSpec::Tanh => Op::Tanh,
                LayerSpec::Sigmoid => Op::Sigmoid,
                LayerSpec::Softmax => Op::Softmax,
                LayerSpec::Dropout { .. } => {
                    description.push("dropout (identity at inference)".to_string());
                    continue;
                }
            };
            description.push(match layer {
                LayerSpec::Linear { .. } => format!("linear({width_in}→{width})"),
                LayerSpec::Gelu { approximate: GeluApproximation::Tanh } => "gelu(tanh)".to_string(),
                other => format!("{}({width})", other.kind()),
            });
            ops.push((index, layer.kind(), op));
        }
        let unused: BTreeSet<String> = tensors.into_keys().collect();
        if let Some(name) = unused.into_iter().next() {
            return Err(ModelError::UnusedTensor { name });
        }
        let head = match (ops.last().map(|(_, _, op)| op), width) {
            (Some(Op::Softmax), w) if w == classes && classes >= 2 => Head::Softmax,
            (Some(Op::Sigmoid), 1) if classes == 2 => Head::BinarySigmoid,
            (Some(Op::Softmax), w) => {
                return Err(ModelError::BadHead(format!(
                    "the network ends in a softmax over {w} outputs but model.json has {classes} labels; they must be equal"
                )));
            }
            (Some(Op::Sigmoid), w) => {
                return Err(ModelError::BadHead(format!(
                    "the network ends in a sigmoid over {w} outputs; a sigmoid head needs exactly 1 output and 2 labels (it has {classes})"
                )));
            }
            _ => {
                return Err(ModelError::BadHead(
                    "the last layer must be `softmax` (one output per label) or `sigmoid` (one output, two labels) so the model emits probabilities".into(),
                ));
            }
        };
        let leading = ops.iter().take_while(|(_, _, op)| matches!(op, Op::Affine { .. })).count();
        let mut prelude = Vec::with_capacity(leading);
        let mut placed = Vec::with_capacity(ops.len() - leading);
        for (position, (layer, kind, op)) in ops.into_iter().enumerate() {
            if position < leading {
                prelude.push(op.to(device, prelude_dtype(dtype))?);
            } else {
                placed.push(op.fit(dtype, layer, kind)?.to(device, dtype)?);
            }
        }
        Ok(Network { prelude, ops: placed, description, device: device.clone(), dtype, inputs, classes, head })
    }

    /// Number of input features per row.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// The layers as a caller would read them, e.g. `["standardize(30)", "linear(30→32)", …]`.
    pub fn description(&self) -> &[String] {
        &self.description
    }

    /// Number of classes, hence probabilities per row.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Scores `values` (row-major, `inputs()` per row) and returns row-major
    /// probabilities, `classes()` per row, as f32 whatever the compute dtype.
    pub fn forward(&self, values: &[f32]) -> candle_core::Result<Vec<f32>> {
        self.forward_timed(values).map(|(probabilities, _)| probabilities)
    }

    /// `forward`, also timing its stages: building the input tensor, the
    /// layers, and copying the probabilities out.
    pub fn forward_timed(&self, values: &[f32]) -> candle_core::Result<(Vec<f32>, Stages)> {
        let start = Instant::now();
        let rows = values.len() / self.inputs;
        // One host-to-device copy of the whole (batched) input.
        let mut x =
            Tensor::from_slice(values, (rows, self.inputs), &self.device)?.to_dtype(prelude_dtype(self.dtype))?;
        let built = Instant::now();
        for op in &self.prelude {
            x = op.apply(&x)?;
        }
        x = x.to_dtype(self.dtype)?;
        for op in &self.ops {
            x = op.apply(&x)?;
        }
        let p = x.to_dtype(DType::F32)?;
        let p = match self.head {
            Head::Softmax => p,
            Head::BinarySigmoid => Tensor::cat(&[p.affine(-1.0, 1.0)?, p], 1)?,
        };
        let computed = Instant::now();
        let probabilities = p.flatten_all()?.to_vec1::<f32>()?;
        let stages = Stages { input: built - start, infer: computed - built, output: computed.elapsed() };
        Ok((probabilities, stages))
    }
}

impl Op {
    fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Op::Affine { scale, shift } => x.broadcast_mul(scale)?.broadcast_add(shift),
            Op::Linear(linear) => linear.forward(x),
            // candle's fused kernel covers f32/f16/bf16; f64 takes the composed form.
            Op::LayerNorm { weight, bias, eps } if x.dtype() == DType::F64 => {
                candle_nn::ops::layer_norm_slow(x, weight, bias, *eps)
            }
            Op::LayerNorm { weight, bias, eps } => candle_nn::ops::layer_norm(x, weight, bias, *eps),
            Op::Relu => x.relu(),
            Op::Gelu => x.gelu_erf(),
            Op::GeluTanh => x.gelu(),
            Op::Tanh => x.tanh(),
            Op::Sigmoid => candle_nn::ops::sigmoid(x),
            Op::Softmax => candle_nn::ops::softmax_last_dim(x),
        }
    }

    /// Checks that the op's tensors (f32 here) survive conversion to `dtype`:
    /// f16 tops out at ±65504, and a weight beyond it would silently become
    /// infinite (bf16 has f32's range). `layer` and `kind` name the op's layer.
    fn fit(self, dtype: DType, layer: usize, kind: &'static str) -> Result<Op, ModelError> {
        if dtype != DType::F16 {
            return Ok(self);
        }
        let tensors: Vec<&Tensor> = match &self {
            Op::Affine { scale, shift } => vec![scale, shift],
            Op::Linear(linear) => std::iter::once(linear.weight()).chain(linear.bias()).collect(),
            Op::LayerNorm { weight, bias, .. } => vec![weight, bias],
            _ => Vec::new(),
        };
        for tensor in tensors {
            let largest = tensor.abs()?.max_all()?.to_scalar::<f32>()?;
            if largest > f32::from(half::f16::MAX) {
                return Err(ModelError::F16Range { layer, kind, largest });
            }
        }
        Ok(self)
    }

    /// The same op with its tensors on `device` in `dtype`.
    fn to(self, device: &Device, dtype: DType) -> candle_core::Result<Op> {
        let place = |t: &Tensor| t.to_dtype(dtype)?.to_device(device);
        Ok(match self {
            Op::Affine { scale, shift } => Op::Affine { scale: place(&scale)?, shift: place(&shift)? },
            Op::Linear(linear) => {
                Op::Linear(candle_nn::Linear::new(place(linear.weight())?, linear.bias().map(place).transpose()?))
            }
            Op::LayerNorm { weight, bias, eps } => Op::LayerNorm { weight: place(&weight)?, bias: place(&bias)?, eps },
            other => other,
        })
    }
}

/// The dtype a network's prelude computes in: f32 for a model in f16/bf16,
/// else the model's own.
fn prelude_dtype(dtype: DType) -> DType {
    if matches!(dtype, DType::F16 | DType::BF16) { DType::F32 } else { dtype }
}

fn check_finite(name: &str, tensor: &Tensor) -> Result<(), ModelError> {
    let values = tensor.flatten_all()?.to_vec1::<f32>()?;
    if let Some(at) = values.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::BadValues {
            name: name.to_string(),
            problem: format!("holds a non-finite value ({}) at flat index {at}", values[at]),
        });
    }
    Ok(())
}
