//! The network a model version runs: its layers compiled into candle operations
//! on one device, and the forward pass from packed feature rows to class
//! probabilities. Building a `Network` checks every tensor against the layer
//! list, so a model that builds is a model that can answer; the checks' failures
//! are `ModelError`s that name the tensor and what was expected.

use super::columns;
use super::hints;
use super::manifest::{DTypeName, GeluApproximation, LayerSpec};
use super::scorer::{ComputeError, Pass, Scorer, Stages};

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// Why a layer list and a set of tensors do not make a network.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("tensor `{name}` is missing: layer {layer} ({kind}) needs it; {hint}")]
    MissingTensor { name: String, layer: usize, kind: &'static str, hint: String },
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
    #[error("the ONNX graph cannot be served: {0}")]
    Graph(String),
    #[error("the tree model cannot be served: {0}")]
    Trees(String),
    #[error("the warm-up pass failed: {0}")]
    Compute(String),
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
        let in_file: Vec<String> = tensors.keys().cloned().collect();
        // Each op with the index and kind of the layer it came from.
        let mut ops: Vec<(usize, &'static str, Op)> = Vec::with_capacity(layers.len());
        let mut description = Vec::with_capacity(layers.len());
        for (index, layer) in layers.iter().enumerate() {
            let width_in = width;
            // A norm layer without weight (and bias) in the file is PyTorch's
            // `elementwise_affine=False` / `affine=False` (or `bias=False`).
            let has = |param: &str| tensors.contains_key(&format!("{prefix}{index}.{param}"));
            let (has_weight, has_bias) = (has("weight"), has("bias"));
            let mut take = |param: &str, shape: &[usize], expected: &dyn Fn() -> String| {
                let name = format!("{prefix}{index}.{param}");
                let tensor = tensors.remove(&name).ok_or_else(|| ModelError::MissingTensor {
                    hint: hints::missing(&name, prefix, index, param, layer, &in_file),
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
                    let weight = if has_weight { take("weight", &[width], &per_feature)?.1 } else { ones(width)? };
                    let bias = if has_bias { take("bias", &[width], &per_feature)?.1 } else { zeros(width)? };
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
                    let weight = if has_weight { take("weight", &[width], &per_feature)?.1 } else { ones(width)? };
                    let bias = if has_bias { take("bias", &[width], &per_feature)?.1 } else { zeros(width)? };
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
            (_, w) => {
                let last = description.last().map_or("nothing", String::as_str);
                let add = if w == 1 { r#"{"type": "sigmoid"}"# } else { r#"{"type": "softmax"}"# };
                return Err(ModelError::BadHead(format!(
                    "the network ends in {last}, which gives raw scores (logits), not probabilities: adding {add} as the last of model.json's `layers` is enough (the weights need no change); the last layer must be `softmax` (one output per label) or `sigmoid` (one output, two labels)"
                )));
            }
        };
        let leading = ops.iter().take_while(|(_, _, op)| matches!(op, Op::Affine { .. })).count();
        let mut prelude = Vec::with_capacity(leading);
        let mut placed = Vec::with_capacity(ops.len() - leading);
        for (position, (layer, kind, op)) in ops.into_iter().enumerate() {
            if position < leading {
                prelude.push(op.to(device, wide_dtype(dtype))?);
            } else {
                placed.push(op.fit(dtype, layer, kind)?.to(device, dtype)?);
            }
        }
        Ok(Network { prelude, ops: placed, description, device: device.clone(), dtype, inputs, classes, head })
    }

    /// The forward pass in the model's dtype; probabilities come back as f32.
    fn run(&self, values: &[f32]) -> candle_core::Result<Pass> {
        let start = Instant::now();
        let rows = values.len() / self.inputs;
        // One host-to-device copy of the whole (batched) input.
        let x = Tensor::from_slice(values, (rows, self.inputs), &self.device)?.to_dtype(wide_dtype(self.dtype))?;
        let built = Instant::now();
        let mut overflow = Overflow::new(rows);
        let x = self.prelude(x, &mut overflow)?;
        let p = self.layers(x, &mut overflow)?;
        let computed = Instant::now();
        let probabilities = p.flatten_all()?.to_vec1::<f32>()?;
        let stages = Stages { input: built - start, infer: computed - built, output: computed.elapsed() };
        Ok(Pass { probabilities, stages, overflowed: overflow.rows() })
    }

    /// The features of one overflowing row (`inputs()` values) to blame: those
    /// that are already non-finite when they reach the first layer in the
    /// model's dtype, else the fewest of the largest (after the prelude) whose
    /// reset to the training mean (0 after standardisation) lets the row
    /// through. Empty when no such set exists. Runs only on the error path:
    /// one pass of `inputs()` rows.
    fn blamed(&self, row: &[f32]) -> candle_core::Result<Vec<usize>> {
        let x = Tensor::from_slice(row, (1, self.inputs), &self.device)?.to_dtype(wide_dtype(self.dtype))?;
        let z = self.prelude(x, &mut Overflow::new(1))?;
        let z = z.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let infinite: Vec<usize> = (0..z.len()).filter(|&j| !z[j].is_finite()).collect();
        if !infinite.is_empty() {
            return Ok(infinite);
        }
        let mut largest: Vec<usize> = (0..z.len()).collect();
        largest.sort_by(|&a, &b| z[b].abs().total_cmp(&z[a].abs()));
        // Row k resets the k + 1 largest features.
        let mut reset = Vec::with_capacity(z.len() * z.len());
        let mut trial = z.clone();
        for &j in &largest {
            trial[j] = 0.0;
            reset.extend_from_slice(&trial);
        }
        let trials = Tensor::from_vec(reset, (z.len(), z.len()), &self.device)?.to_dtype(self.dtype)?;
        let mut overflow = Overflow::new(z.len());
        self.layers(trials, &mut overflow)?;
        let overflowed = overflow.rows();
        let Some(k) = (0..z.len()).find(|k| overflowed.binary_search(k).is_err()) else {
            return Ok(Vec::new());
        };
        let mut blamed = largest[..=k].to_vec();
        blamed.sort_unstable();
        Ok(blamed)
    }

    /// The leading per-feature ops, then the conversion to the model's dtype:
    /// where a feature far outside the training scale first overflows.
    fn prelude(&self, mut x: Tensor, overflow: &mut Overflow) -> candle_core::Result<Tensor> {
        for op in &self.prelude {
            x = op.apply(&x)?;
        }
        if !self.prelude.is_empty() || wide_dtype(self.dtype) != self.dtype {
            x = x.to_dtype(self.dtype)?;
            overflow.check(&x)?;
        }
        Ok(x)
    }

    /// The layers after the prelude and the head, checking for non-finite
    /// values after every op that can create them from finite ones (affine,
    /// linear, layer norm, the last op): an activation could hide them (ReLU
    /// turns NaN into 0, tanh turns ±inf into ±1) and answer a wrong score.
    fn layers(&self, mut x: Tensor, overflow: &mut Overflow) -> candle_core::Result<Tensor> {
        for (position, op) in self.ops.iter().enumerate() {
            let last = position + 1 == self.ops.len();
            if last {
                // The head (softmax or sigmoid) computes in f32 for f16/bf16
                // models, so their probabilities sum to 1 within f32's precision.
                x = x.to_dtype(wide_dtype(self.dtype))?;
            }
            x = op.apply(&x)?;
            if op.may_overflow() || last {
                overflow.check(&x)?;
            }
        }
        let p = x.to_dtype(DType::F32)?;
        match self.head {
            Head::Softmax => Ok(p),
            Head::BinarySigmoid => Tensor::cat(&[p.affine(-1.0, 1.0)?, p], 1),
        }
    }
}

impl Scorer for Network {
    fn inputs(&self) -> usize {
        self.inputs
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn description(&self) -> &[String] {
        &self.description
    }

    fn dtype(&self) -> &'static str {
        self.dtype.as_str()
    }

    fn accepts_missing(&self) -> bool {
        false
    }

    fn forward(&self, values: &[f32]) -> Result<Pass, ComputeError> {
        Ok(self.run(values)?)
    }

    fn blame(&self, row: &[f32]) -> Vec<usize> {
        self.blamed(row).unwrap_or_default()
    }
}

/// Tracks which rows of a pass went non-finite. The check is a scan of the
/// output with no allocation while every value is finite (the hot path);
/// only a failed check looks at rows.
struct Overflow {
    rows: usize,
    marked: Vec<bool>,
}

impl Overflow {
    fn new(rows: usize) -> Overflow {
        Overflow { rows, marked: Vec::new() }
    }

    /// Marks the rows of `x` (one row per pass row) holding a non-finite value.
    fn check(&mut self, x: &Tensor) -> candle_core::Result<()> {
        if all_finite(x)? {
            return Ok(());
        }
        let values = x.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        self.marked.resize(self.rows, false);
        for (marked, row) in self.marked.iter_mut().zip(values) {
            *marked |= row.iter().any(|v| !v.is_finite());
        }
        Ok(())
    }

    fn rows(&self) -> Vec<usize> {
        self.marked.iter().enumerate().filter(|(_, marked)| **marked).map(|(row, _)| row).collect()
    }
}

/// Whether every value of `x` is finite. On the CPU a branch-free scan of the
/// exponent bits (all ones: infinite or NaN) over the tensor's own memory;
/// elsewhere one reduction: `0 × x` is 0 for a finite value and NaN for any
/// other, so the sum is exactly 0 when all are finite (and cannot overflow).
fn all_finite(x: &Tensor) -> candle_core::Result<bool> {
    /// Whether any value's exponent bits are all set.
    fn any_special<T: Copy, B: Into<u64>>(values: &[T], bits: impl Fn(T) -> B, exponent: u64) -> bool {
        values.iter().fold(false, |any, v| any | (bits(*v).into() & exponent == exponent))
    }
    let (storage, layout) = x.storage_and_layout();
    if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
        let special = match cpu {
            CpuStorage::F32(v) => any_special(&v[start..end], f32::to_bits, 0x7f80_0000),
            CpuStorage::F64(v) => any_special(&v[start..end], f64::to_bits, 0x7ff0_0000_0000_0000),
            CpuStorage::F16(v) => any_special(&v[start..end], half::f16::to_bits, 0x7c00),
            CpuStorage::BF16(v) => any_special(&v[start..end], half::bf16::to_bits, 0x7f80),
            _ => false,
        };
        return Ok(!special);
    }
    drop(storage);
    Ok(x.affine(0.0, 0.0)?.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()? == 0.0)
}

impl Op {
    /// Whether the op can turn finite values into non-finite ones (a large
    /// product or sum); activations cannot.
    fn may_overflow(&self) -> bool {
        matches!(self, Op::Affine { .. } | Op::Linear(_) | Op::LayerNorm { .. })
    }

    fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Op::Affine { scale, shift } => columns::scale_shift(x, scale, shift),
            // Rows × features only (what `run` builds): the product, then the
            // bias added into it in place.
            Op::Linear(linear) => {
                let y = x.matmul(&linear.weight().t()?)?;
                match linear.bias() {
                    Some(bias) => columns::add_bias(y, bias),
                    None => Ok(y),
                }
            }
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

/// The dtype a network's prelude and head compute in: f32 for a model in
/// f16/bf16, else the model's own.
fn wide_dtype(dtype: DType) -> DType {
    if matches!(dtype, DType::F16 | DType::BF16) { DType::F32 } else { dtype }
}

/// A norm layer's default weight (PyTorch without `elementwise_affine`).
fn ones(width: usize) -> candle_core::Result<Tensor> {
    Tensor::ones(width, DType::F32, &Device::Cpu)
}

/// A norm layer's default bias (PyTorch with `bias=False`).
fn zeros(width: usize) -> candle_core::Result<Tensor> {
    Tensor::zeros(width, DType::F32, &Device::Cpu)
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
