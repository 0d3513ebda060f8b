//! Compiling a layer list over a file's tensors into a `Network`: each layer
//! kind takes and checks its own parameters (shape, finiteness, values such
//! as a positive standard deviation), every tensor in the file must be used,
//! and the last layer must turn scores into probabilities.

use super::int8::DynamicInt8;
use super::op::{Op, wide_dtype};
use super::{Head, ModelError, Network};
use crate::model::hints;
use crate::model::manifest::{DTypeName, GeluApproximation, LayerSpec};
use crate::model::scorer::Answers;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeSet, HashMap};

/// A file's tensors, taken layer by layer.
struct Params<'a> {
    tensors: HashMap<String, Tensor>,
    /// Every name in the file, for hints about a missing one.
    in_file: Vec<String>,
    prefix: &'a str,
}

/// One layer being compiled: where it is, what it is, the width it receives.
struct At<'a> {
    index: usize,
    layer: &'a LayerSpec,
    width: usize,
}

impl Params<'_> {
    /// Whether the file holds layer `index`'s `param`.
    fn has(&self, index: usize, param: &str) -> bool {
        self.tensors.contains_key(&format!("{}{index}.{param}", self.prefix))
    }

    /// Takes the layer's `param`, which must have `shape` (0: any size;
    /// `expected` says it in words) and finite values; as f32 on the CPU.
    fn take(
        &mut self,
        at: &At,
        param: &str,
        shape: &[usize],
        expected: &dyn Fn() -> String,
    ) -> Result<(String, Tensor), ModelError> {
        let (prefix, index, layer) = (self.prefix, at.index, at.layer);
        let name = format!("{prefix}{index}.{param}");
        let tensor = self.tensors.remove(&name).ok_or_else(|| ModelError::MissingTensor {
            hint: hints::missing(&name, prefix, index, param, layer, &self.in_file),
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
    }

    /// Takes the layer's per-feature `param`.
    fn per_feature(&mut self, at: &At, param: &str) -> Result<(String, Tensor), ModelError> {
        let (width, index) = (at.width, at.index);
        self.take(at, param, &[width], &|| format!("[{width}] (one value per feature reaching layer {index})"))
    }

    /// A norm layer's weight and bias; one the file lacks is PyTorch's
    /// `elementwise_affine=False` / `affine=False` (or `bias=False`): ones, zeros.
    fn affine_pair(&mut self, at: &At) -> Result<(Tensor, Tensor), ModelError> {
        let weight = match self.has(at.index, "weight") {
            true => self.per_feature(at, "weight")?.1,
            false => Tensor::ones(at.width, DType::F32, &Device::Cpu)?,
        };
        let bias = match self.has(at.index, "bias") {
            true => self.per_feature(at, "bias")?.1,
            false => Tensor::zeros(at.width, DType::F32, &Device::Cpu)?,
        };
        Ok((weight, bias))
    }
}

impl Network {
    /// Compiles `layers` over `tensors` (as loaded from safetensors, any float
    /// dtype, on the CPU) for `inputs` features answering `answers`, then moves
    /// the weights to `device` in `dtype`.
    pub fn build(
        layers: &[LayerSpec],
        prefix: &str,
        tensors: HashMap<String, Tensor>,
        inputs: usize,
        answers: Answers,
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
        let in_file = tensors.keys().cloned().collect();
        let mut params = Params { tensors, in_file, prefix };
        let mut width = inputs;
        // Each op with the index and kind of the layer it came from.
        let mut ops: Vec<(usize, &'static str, Op)> = Vec::with_capacity(layers.len());
        let mut description = Vec::with_capacity(layers.len());
        for (index, layer) in layers.iter().enumerate() {
            let at = At { index, layer, width };
            let op = match layer {
                LayerSpec::Standardize => standardize(&mut params, &at)?,
                LayerSpec::BatchNorm { eps } => batch_norm(&mut params, &at, *eps)?,
                LayerSpec::Linear { bias } => {
                    let (op, out) = linear(&mut params, &at, *bias)?;
                    width = out;
                    op
                }
                LayerSpec::DynamicInt8Linear => {
                    let op = dynamic_int8(&mut params, &at)?;
                    width = op.outputs();
                    Op::Int8(op)
                }
                LayerSpec::LayerNorm { eps } => {
                    let (weight, bias) = params.affine_pair(&at)?;
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
                LayerSpec::Linear { .. } => format!("linear({}→{width})", at.width),
                LayerSpec::DynamicInt8Linear => format!("int8 linear({}→{width}, inputs quantized per row)", at.width),
                LayerSpec::Gelu { approximate: GeluApproximation::Tanh } => "gelu(tanh)".to_string(),
                other => format!("{}({width})", other.kind()),
            });
            ops.push((index, layer.kind(), op));
        }
        let unused: BTreeSet<String> = params.tensors.into_keys().collect();
        if let Some(name) = unused.into_iter().next() {
            return Err(ModelError::UnusedTensor { name });
        }
        let head = head(ops.last().map(|(_, _, op)| op), width, answers, &description)?;
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
        Ok(Network {
            prelude,
            ops: placed,
            description,
            device: device.clone(),
            dtype,
            inputs,
            outputs: answers.width(),
            head,
        })
    }
}

/// `int8_linear`: integer weights `[out, in]` (i8 or u8 as stored), their
/// per-output zero points and positive scales, and a bias.
fn dynamic_int8(params: &mut Params, at: &At) -> Result<DynamicInt8, ModelError> {
    let width = at.width;
    let (name, weight) = params.take(at, "weight", &[0, width], &|| format!("[out, {width}]"))?;
    let outputs = weight.dims()[0];
    let mut per_output = |param: &str| {
        params
            .take(at, param, &[outputs], &|| format!("[{outputs}] (one per output)"))
            .and_then(|(n, t)| Ok((n, t.to_vec1::<f32>()?)))
    };
    let (_, zero_points) = per_output("weight_zero_point")?;
    let (scale_name, scales) = per_output("weight_scale")?;
    let (_, bias) = per_output("bias")?;
    let weights = weight.flatten_all()?.to_vec1::<f32>()?;
    if let Some(w) = weights.iter().chain(&zero_points).find(|w| w.fract() != 0.0 || !(-128.0..=255.0).contains(*w)) {
        return Err(ModelError::BadValues { name, problem: format!("holds {w}, not an 8-bit integer") });
    }
    if let Some(s) = scales.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
        return Err(ModelError::BadValues {
            name: scale_name,
            problem: format!("holds {s}; a scale must be positive"),
        });
    }
    Ok(DynamicInt8::new(&weights, &zero_points, scales, bias))
}

/// `standardize`: `(x - mean) / std`, folded into one affine op.
fn standardize(params: &mut Params, at: &At) -> Result<Op, ModelError> {
    let (_, mean) = params.per_feature(at, "mean")?;
    let (std_name, std) = params.per_feature(at, "std")?;
    if std.to_vec1::<f32>()?.iter().any(|s| *s <= 0.0) {
        return Err(ModelError::BadValues {
            name: std_name,
            problem: "has a value ≤ 0; a standard deviation must be positive".into(),
        });
    }
    let scale = std.recip()?;
    let shift = mean.neg()?.mul(&scale)?;
    Ok(Op::Affine { scale, shift })
}

/// `batch_norm` at inference: its running statistics and affine folded into one affine op.
fn batch_norm(params: &mut Params, at: &At, eps: f64) -> Result<Op, ModelError> {
    let (weight, bias) = params.affine_pair(at)?;
    let (_, mean) = params.per_feature(at, "running_mean")?;
    let (var_name, var) = params.per_feature(at, "running_var")?;
    if var.to_vec1::<f32>()?.iter().any(|v| *v < 0.0) {
        return Err(ModelError::BadValues {
            name: var_name,
            problem: "has a negative value; a variance cannot be negative".into(),
        });
    }
    params.tensors.remove(&format!("{}{}.num_batches_tracked", params.prefix, at.index));
    let scale = weight.div(&var.affine(1.0, eps)?.sqrt()?)?;
    let shift = bias.sub(&mean.mul(&scale)?)?;
    Ok(Op::Affine { scale, shift })
}

/// `linear`: a weight `[out, width]` and, with `bias`, a bias `[out]`; returns the op and `out`.
fn linear(params: &mut Params, at: &At, bias: bool) -> Result<(Op, usize), ModelError> {
    let (width, index, prefix) = (at.width, at.index, params.prefix);
    let (_, weight) = params
        .take(at, "weight", &[0, width], &|| format!("[out, {width}] (layer {index} receives {width} features)"))?;
    let out = weight.dims()[0];
    let bias = match bias {
        true => {
            let expected = || format!("[{out}] (one per output of `{prefix}{index}.weight`)");
            Some(params.take(at, "bias", &[out], &expected)?.1)
        }
        false => None,
    };
    Ok((Op::Linear(candle_nn::Linear::new(weight, bias)), out))
}

/// How the network's `last` op (over `width` outputs) becomes one
/// probability per class (a softmax over every class, or a sigmoid of one
/// logit for two), or a regressor's value (any one output); anything else is
/// refused saying what to add.
fn head(last: Option<&Op>, width: usize, answers: Answers, description: &[String]) -> Result<Head, ModelError> {
    let classes = match answers {
        Answers::Value if width == 1 => return Ok(Head::Value),
        Answers::Value => {
            return Err(ModelError::BadHead(format!(
                "the network ends in {width} outputs but a regressor answers one value: its last layer must have one output"
            )));
        }
        Answers::Classes(classes) => classes,
    };
    match (last, width) {
        (Some(Op::Softmax), w) if w == classes && classes >= 2 => Ok(Head::Softmax),
        (Some(Op::Sigmoid), 1) if classes == 2 => Ok(Head::BinarySigmoid),
        (Some(Op::Softmax), w) => Err(ModelError::BadHead(format!(
            "the network ends in a softmax over {w} outputs but model.json has {classes} labels; they must be equal"
        ))),
        (Some(Op::Sigmoid), w) => Err(ModelError::BadHead(format!(
            "the network ends in a sigmoid over {w} outputs; a sigmoid head needs exactly 1 output and 2 labels (it has {classes})"
        ))),
        (_, w) => {
            let last = description.last().map_or("nothing", String::as_str);
            let add = if w == 1 { r#"{"type": "sigmoid"}"# } else { r#"{"type": "softmax"}"# };
            Err(ModelError::BadHead(format!(
                "the network ends in {last}, which gives raw scores (logits), not probabilities: adding {add} as the last of model.json's `layers` is enough (the weights need no change); the last layer must be `softmax` (one output per label) or `sigmoid` (one output, two labels)"
            )))
        }
    }
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
