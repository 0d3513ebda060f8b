//! ONNX graphs compiled into what Candela already computes: the graph's
//! preprocessing (imputers, scalers, encoders, a ColumnTransformer's
//! branches; `prep`) into the per-column steps of a `Pipeline`, then its
//! model op, walked from the preprocessed rows to the probability output,
//! into the candle network a `model.json` layer list builds (each node or
//! known multi-node pattern a layer with PyTorch-named tensors, checked and
//! placed by `Network::build`) or into the native forest (`tree_ensemble`).
//! Covered: Gemm, MatMul (+ Add) (`dense`), Relu, Sigmoid, Tanh, Softmax,
//! Gelu and its Erf formula, BatchNormalization, LayerNormalization, constant
//! Add/Sub/Mul/Div, the `ai.onnx.ml` ops around linear models (`ml`), INT8
//! layers from quantize_dynamic (`int8`), the no-ops exporters emit
//! (Identity, Dropout, Flatten, Reshape to the same shape, Cast to float),
//! and a binary head written as `Concat(1 − p, p)`. Branches that do not
//! lead to the probabilities (skl2onnx's label: ArgMax,
//! ArrayFeatureExtractor, …) are pruned. Anything else is refused naming the
//! node, its op type and what is supported (`refusals`). The file is
//! decoded by the `onnx-schema` crate.

mod constants;
mod dense;
mod ends;
mod int8;
mod ml;
mod prep;
mod refusals;
mod tree_ensemble;
mod tree_ensemble_v5;

use super::categories::Categories;
use super::manifest::{DTypeName, GeluApproximation, LayerSpec, Task};
use super::network::{ModelError, Network};
use super::pipeline::{Column, Pipeline, Source};
use super::scorer::{Answers, Scorer};
use super::trees::{Ensemble, Forest};
use candle_core::{Device, Tensor};
use constants::{Constant, constant, per_feature};
use ends::{class_labels, fed, probability_output};
use onnx_schema as proto;
use prep::prepare;
use proto::{AttributeProto, NodeProto};
use refusals::{describe, refusal, unsupported};
use std::collections::{HashMap, HashSet};

/// A graph as the preprocessing ahead of the model it compiles to.
pub struct Imported {
    /// The features' names: model.json's, else the graph's (its inputs, or
    /// `f0`, `f1`, … for one matrix).
    pub features: Vec<String>,
    /// The class labels the graph names (a classifier op's, ZipMap's).
    pub labels: Option<ClassLabels>,
    /// What the model answers: probabilities over its classes, or a value.
    pub answers: Answers,
    /// How the features become the model's columns; `None` when the model
    /// reads the features as sent.
    pub preprocessing: Option<Preprocessing>,
    pub model: Lowered,
}

/// The class labels a graph names.
pub struct ClassLabels {
    pub names: Vec<String>,
    /// Whether they are names (`classlabels_strings`), which model.json must
    /// list alike, rather than integers written as numbers, which it may rename.
    pub strings: bool,
}

/// The features' preprocessing into the model's columns.
pub struct Preprocessing {
    /// Per feature, its categories when it is a string feature.
    pub categories: Vec<Option<Categories>>,
    pub columns: Vec<Column>,
    /// Whether the graph takes an input per feature.
    pub by_name: bool,
}

/// What the model op of a graph becomes.
pub enum Lowered {
    /// Layers over tensors named `{layer}.{param}`.
    Network { layers: Vec<LayerSpec>, tensors: HashMap<String, Tensor> },
    /// A tree ensemble for the native forest.
    Forest(Ensemble),
}

/// A compiled ONNX model and the names it serves under.
pub struct Compiled {
    pub scorer: Box<dyn Scorer>,
    pub features: Vec<String>,
    /// Empty for a regressor.
    pub labels: Vec<String>,
    pub task: Task,
}

/// The scorer the ONNX model in `bytes` compiles to: its network on `device`
/// in `dtype`, or its forest, behind the graph's preprocessing. `features`,
/// `labels` and `task` are model.json's (left out: taken from the graph,
/// labels `0`, `1`, … where it names none); given, they are checked against it.
pub fn compile(
    bytes: &[u8],
    features: &[String],
    labels: &[String],
    task: Option<Task>,
    dtype: DTypeName,
    device: &Device,
) -> Result<Compiled, ModelError> {
    let graph = import(bytes, features, task).map_err(ModelError::Graph)?;
    let labels = match (graph.answers, labels, graph.labels) {
        (Answers::Value, [], _) => Vec::new(),
        (Answers::Value, _, _) => {
            return Err(ModelError::Graph(
                "the graph is a regressor, answering one value per row: remove model.json's `labels`".into(),
            ));
        }
        (_, [], Some(named)) => named.names,
        (Answers::Classes(classes), [], None) => (0..classes).map(|k| k.to_string()).collect(),
        (_, listed, Some(named)) if named.strings && listed != named.names.as_slice() => {
            return Err(ModelError::Graph(format!(
                "model.json's `labels` are {listed:?} but the graph names its classes {:?}, in its order: \
                 list them as the graph does, or remove `labels` to take the graph's",
                named.names
            )));
        }
        (_, listed, _) => listed.to_vec(),
    };
    let features = graph.features;
    let (answers, task) = match graph.answers {
        Answers::Classes(_) => (Answers::Classes(labels.len()), Task::Classification),
        Answers::Value => (Answers::Value, Task::Regression),
    };
    let inputs = graph.preprocessing.as_ref().map_or(features.len(), |p| p.columns.len());
    let model: Box<dyn Scorer> = match graph.model {
        Lowered::Network { layers, tensors } => {
            Box::new(Network::build(&layers, "", tensors, inputs, answers, dtype, device)?)
        }
        Lowered::Forest(ensemble) => Box::new(Forest::build(ensemble, inputs, answers).map_err(ModelError::Trees)?),
    };
    let scorer = match graph.preprocessing {
        Some(p) => Box::new(Pipeline::new(p.categories, p.columns, p.by_name, model)),
        None => model,
    };
    Ok(Compiled { scorer, features, labels, task })
}

/// Compiles the ONNX model in `bytes` for `features` (the head's width is
/// checked against the labels by `Network::build`); `task`, when model.json
/// gives it, must agree with the graph's model op, and makes a network
/// ending in one raw output a regressor.
pub fn import(bytes: &[u8], features: &[String], task: Option<Task>) -> Result<Imported, String> {
    let model = proto::decode(bytes).map_err(|e| format!("not an ONNX model file: {e}"))?;
    let graph = model.graph.ok_or("the ONNX model has no graph")?;
    let mut constants = HashMap::new();
    for tensor in &graph.initializer {
        constants.insert(tensor.name.clone(), constant(tensor)?);
    }
    let mut nodes = Vec::new();
    for node in graph.node {
        if node.op_type == "Constant" && node.output.len() == 1 {
            let value = attribute(&node, "value").and_then(|a| a.t.as_ref());
            let value = value.ok_or_else(|| refusal(&node, "a Constant without a tensor `value`"))?;
            constants.insert(node.output[0].clone(), constant(value)?);
        } else {
            nodes.push(node);
        }
    }
    let inputs: Vec<&proto::ValueInfoProto> = graph.input.iter().filter(|i| !constants.contains_key(&i.name)).collect();
    let (fed, features) = fed(&inputs, features)?;
    let output = probability_output(&graph.output)?;
    // Only nodes the probabilities depend on: label branches are pruned.
    let producer: HashMap<&str, usize> =
        nodes.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i))).collect();
    let mut needed = HashSet::new();
    let mut stack = vec![output.as_str()];
    while let Some(value) = stack.pop() {
        if let Some(&index) = producer.get(value)
            && needed.insert(index)
        {
            stack.extend(nodes[index].input.iter().map(String::as_str));
        }
    }
    let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    let prepared = prepare(&fed, &names, &nodes, &needed, &constants)?;
    let as_sent = |(f, c): (usize, &Column)| c.source == Source::Feature(f) && c.ops.is_empty();
    let by_name = fed.len() > 1;
    let width = prepared.columns.len();
    let preprocessing = (by_name || width != features.len() || !prepared.columns.iter().enumerate().all(as_sent))
        .then_some(Preprocessing { categories: prepared.categories, columns: prepared.columns, by_name });
    let mut walk = Walk {
        nodes: &nodes,
        needed,
        constants,
        layers: Vec::new(),
        tensors: HashMap::new(),
        forest: None,
        labels: None,
        value: false,
        width,
    };
    let mut value = prepared.entry;
    let mut steps = 0;
    while value != output {
        steps += 1;
        if steps > nodes.len() + 1 {
            return Err("the graph has a cycle".into());
        }
        value = walk.step(&value)?;
    }
    let regressor = walk.value || (task == Some(Task::Regression) && walk.forest.is_none() && walk.width == 1);
    match (task, regressor) {
        (Some(Task::Classification), true) => {
            return Err("the graph is a regressor (one value per row) but model.json's `task` is classification: \
                        remove `task` or make it regression"
                .into());
        }
        (Some(Task::Regression), false) => {
            return Err(format!(
                "model.json's `task` is regression but the graph answers {} numbers per row: a regressor's graph ends \
                 in one value (a LinearRegressor, a TreeEnsembleRegressor, or a network's one output)",
                walk.width
            ));
        }
        _ => {}
    }
    if let Some(forest) = walk.forest {
        let answers = if regressor { Answers::Value } else { Answers::Classes(forest.link.classes(forest.base.len())) };
        let model = Lowered::Forest(forest);
        return Ok(Imported { features, labels: walk.labels, answers, preprocessing, model });
    }
    if regressor {
        let model = Lowered::Network { layers: walk.layers, tensors: walk.tensors };
        return Ok(Imported { features, labels: None, answers: Answers::Value, preprocessing, model });
    }
    if !matches!(walk.layers.last(), Some(LayerSpec::Softmax | LayerSpec::Sigmoid)) {
        let last = producer.get(output.as_str()).map_or_else(|| format!("`{output}`"), |&i| describe(&nodes[i]));
        return Err(format!(
            "the graph's output `{output}` is raw scores (logits) from node {last}, not probabilities: \
             export the model with its head, a softmax over one output per label (PyTorch: \
             `torch.onnx.export(torch.nn.Sequential(net, torch.nn.Softmax(dim=1)), …)`) or a sigmoid \
             over one output for two labels (`torch.nn.Sigmoid()`); model.json's `layers` are for \
             candle networks and cannot add one to an ONNX graph; a regressor's one output is served \
             as its value with `\"task\": \"regression\"` in model.json"
        ));
    }
    let classes =
        if matches!(walk.layers.last(), Some(LayerSpec::Sigmoid)) && walk.width == 1 { 2 } else { walk.width };
    let model = Lowered::Network { layers: walk.layers, tensors: walk.tensors };
    Ok(Imported { features, labels: walk.labels, answers: Answers::Classes(classes), preprocessing, model })
}

struct Walk<'a> {
    nodes: &'a [NodeProto],
    needed: HashSet<usize>,
    constants: HashMap<String, Constant>,
    layers: Vec<LayerSpec>,
    tensors: HashMap<String, Tensor>,
    /// The tree ensemble the graph ends in, once met.
    forest: Option<Ensemble>,
    /// The class labels the graph names, once met.
    labels: Option<ClassLabels>,
    /// Whether the model op met answers a value (a regressor op).
    value: bool,
    /// Features per row of the value being walked.
    width: usize,
}

impl<'a> Walk<'a> {
    /// The needed nodes that read `value`.
    fn consumers(&self, value: &str) -> Vec<&'a NodeProto> {
        let nodes: &'a [NodeProto] = self.nodes;
        let mut found: Vec<(usize, &'a NodeProto)> = nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| self.needed.contains(i) && n.input.iter().any(|v| v == value))
            .collect();
        found.sort_by_key(|(i, _)| *i);
        found.into_iter().map(|(_, n)| n).collect()
    }

    /// The one consumer of `value`, if exactly one.
    fn sole(&self, value: &str) -> Option<&'a NodeProto> {
        match self.consumers(value)[..] {
            [node] => Some(node),
            _ => None,
        }
    }

    /// The constant among `node`'s inputs other than `value`.
    fn operand(&self, node: &NodeProto, value: &str) -> Option<&Constant> {
        node.input.iter().filter(|v| *v != value).find_map(|v| self.constants.get(v))
    }

    /// Adds a layer with its tensors (`param` → values of `shape`).
    fn push(&mut self, layer: LayerSpec, tensors: Vec<(&str, Vec<f64>, Vec<usize>)>) -> Result<(), String> {
        let index = self.layers.len();
        for (param, values, shape) in tensors {
            let values: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
            let tensor = Tensor::from_vec(values, shape, &Device::Cpu).map_err(|e| e.to_string())?;
            self.tensors.insert(format!("{index}.{param}"), tensor);
        }
        self.layers.push(layer);
        Ok(())
    }

    /// Compiles what reads `value` and returns the value it leads to.
    fn step(&mut self, value: &str) -> Result<String, String> {
        let consumers = self.consumers(value);
        match consumers[..] {
            [] => Err(format!(
                "the value `{value}` leads nowhere: the probability output does not follow from the input along one chain"
            )),
            [node] => self.node(node, value),
            _ => {
                if let Some(end) = self.gelu_erf(value, &consumers) {
                    self.push(LayerSpec::Gelu { approximate: GeluApproximation::None }, Vec::new())?;
                    return Ok(end);
                }
                if let Some(end) = self.binary_head(value, &consumers) {
                    return Ok(end);
                }
                let ops: Vec<String> = consumers.iter().map(|n| describe(n)).collect();
                Err(format!(
                    "the value `{value}` feeds {} nodes ({}); Candela compiles a chain of layers (GELU's erf formula and a binary `Concat(1 − p, p)` head aside)",
                    ops.len(),
                    ops.join(", ")
                ))
            }
        }
    }

    /// PyTorch's exact GELU as exported: `x · (erf(x / √2) + 1) · 0.5` (in
    /// either order of the multiplications). Returns its output.
    fn gelu_erf(&self, x: &str, consumers: &[&NodeProto]) -> Option<String> {
        let scale = consumers.iter().find(|n| {
            let c = self.operand(n, x).and_then(Constant::scalar);
            match (n.op_type.as_str(), c) {
                ("Div", Some(c)) => (c - std::f64::consts::SQRT_2).abs() < 1e-5,
                ("Mul", Some(c)) => (c - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-5,
                _ => false,
            }
        })?;
        let erf = self.sole(&scale.output[0]).filter(|n| n.op_type == "Erf")?;
        let plus_one = self.sole(&erf.output[0]).filter(|n| n.op_type == "Add")?;
        (self.operand(plus_one, &erf.output[0])?.scalar()? == 1.0).then_some(())?;
        let product = self.sole(&plus_one.output[0]).filter(|n| n.op_type == "Mul")?;
        let other = product.input.iter().find(|v| **v != plus_one.output[0])?;
        let half =
            |n: &NodeProto, v: &str| n.op_type == "Mul" && self.operand(n, v).and_then(Constant::scalar) == Some(0.5);
        if other == x {
            // x · (…) then · 0.5
            (consumers.len() == 2).then_some(())?;
            let last = self.sole(&product.output[0]).filter(|n| half(n, &product.output[0]))?;
            return Some(last.output[0].clone());
        }
        // (x · 0.5) · (…)
        let halved = consumers.iter().find(|n| n.output[0] == *other && half(n, x))?;
        (consumers.len() == 2 && !std::ptr::eq(*halved, *scale)).then_some(())?;
        Some(product.output[0].clone())
    }

    /// skl2onnx's binary head: `Concat(1 − p, p)` over a sigmoid's one
    /// output. The network's sigmoid head already answers both classes.
    fn binary_head(&self, p: &str, consumers: &[&NodeProto]) -> Option<String> {
        let (LayerSpec::Sigmoid, 1) = (self.layers.last()?, self.width) else { return None };
        let sub = consumers.iter().find(|n| {
            n.op_type == "Sub"
                && n.input.len() == 2
                && n.input[1] == p
                && self.constants.get(&n.input[0]).and_then(Constant::scalar) == Some(1.0)
        })?;
        let concat = consumers.iter().find(|n| n.op_type == "Concat")?;
        let axis = attribute(concat, "axis").map_or(1, |a| a.i);
        let order_ok = concat.input.len() == 2 && concat.input[0] == sub.output[0] && concat.input[1] == p;
        (consumers.len() == 2 && matches!(axis, 1 | -1) && order_ok && self.sole(&sub.output[0]).is_some())
            .then(|| concat.output[0].clone())
    }

    fn node(&mut self, node: &NodeProto, value: &str) -> Result<String, String> {
        let out = node.output.first().cloned().ok_or_else(|| refusal(node, "a node without outputs"))?;
        if self.forest.is_some() {
            return self.after_forest(node, out);
        }
        let width = self.width;
        let op = node.op_type.as_str();
        match (node.domain.as_str(), op) {
            ("" | "ai.onnx", "Identity" | "Dropout") => {}
            ("" | "ai.onnx", "Cast") => {
                let to = attribute(node, "to").map_or(0, |a| a.i);
                if to != 1 {
                    return Err(refusal(node, &format!("a Cast to type {to}; only a Cast to float (1) is supported")));
                }
            }
            ("" | "ai.onnx", "Flatten") => {
                if attribute(node, "axis").map_or(1, |a| a.i) != 1 {
                    return Err(refusal(node, "a Flatten other than axis 1 (rows stay rows)"));
                }
            }
            ("" | "ai.onnx", "Reshape") => {
                let shape = node.input.get(1).and_then(|s| self.constants.get(s));
                let same = shape
                    .is_some_and(|s| matches!(s.values[..], [a, b] if (a == -1.0 || a == 0.0) && b == width as f64));
                if !same {
                    return Err(refusal(node, &format!("a Reshape that changes the row shape [rows, {width}]")));
                }
            }
            ("" | "ai.onnx", "Relu") => self.push(LayerSpec::Relu, Vec::new())?,
            ("" | "ai.onnx", "Sigmoid") => self.push(LayerSpec::Sigmoid, Vec::new())?,
            ("" | "ai.onnx", "Tanh") => self.push(LayerSpec::Tanh, Vec::new())?,
            ("" | "ai.onnx", "Softmax") => {
                if !matches!(attribute(node, "axis").map_or(-1, |a| a.i), 1 | -1) {
                    return Err(refusal(node, "a Softmax over an axis other than the classes (1 or -1)"));
                }
                self.push(LayerSpec::Softmax, Vec::new())?;
            }
            ("" | "ai.onnx", "Gelu") => {
                let approximate = match attribute(node, "approximate").map(|a| a.s.as_slice()) {
                    None | Some(b"none") => GeluApproximation::None,
                    Some(b"tanh") => GeluApproximation::Tanh,
                    Some(other) => {
                        return Err(refusal(
                            node,
                            &format!("a Gelu with approximate `{}`", String::from_utf8_lossy(other)),
                        ));
                    }
                };
                self.push(LayerSpec::Gelu { approximate }, Vec::new())?;
            }
            ("" | "ai.onnx", "Gemm") => return self.gemm(node, value, out),
            ("" | "ai.onnx", "DynamicQuantizeLinear") => return self.dynamic_int8(node, value),
            ("" | "ai.onnx", "MatMul") => return self.matmul(node, value, out),
            ("" | "ai.onnx", "Add" | "Sub" | "Mul" | "Div") => self.arithmetic(node, value)?,
            ("" | "ai.onnx", "BatchNormalization") => {
                let [weight, bias, mean, var] = self.params::<4>(node)?;
                let eps = attribute(node, "epsilon").map_or(1e-5, |a| f64::from(a.f));
                if attribute(node, "training_mode").is_some_and(|a| a.i != 0) {
                    return Err(refusal(node, "a BatchNormalization in training mode"));
                }
                let tensors = [("weight", weight), ("bias", bias), ("running_mean", mean), ("running_var", var)]
                    .into_iter()
                    .map(|(name, c)| Ok((name, per_feature(c.values, width, 0.0, node)?, vec![width])))
                    .collect::<Result<Vec<_>, String>>()?;
                self.push(LayerSpec::BatchNorm { eps }, tensors)?;
            }
            ("" | "ai.onnx", "LayerNormalization") => {
                if !matches!(attribute(node, "axis").map_or(-1, |a| a.i), 1 | -1) {
                    return Err(refusal(node, "a LayerNormalization over an axis other than the features"));
                }
                let eps = attribute(node, "epsilon").map_or(1e-5, |a| f64::from(a.f));
                let weight = self
                    .param(node, 1)
                    .ok_or_else(|| refusal(node, "a LayerNormalization whose scale is not a constant"))?;
                let mut tensors = vec![("weight", per_feature(weight.values, width, 1.0, node)?, vec![width])];
                if let Some(bias) = self.param(node, 2) {
                    tensors.push(("bias", per_feature(bias.values, width, 0.0, node)?, vec![width]));
                }
                self.push(LayerSpec::LayerNorm { eps }, tensors)?;
            }
            ("ai.onnx.ml", _) => return self.ml(node, value, out),
            _ => return Err(unsupported(node)),
        }
        Ok(out)
    }

    /// `node`'s constant input at `index`, if it has one.
    fn param(&self, node: &NodeProto, index: usize) -> Option<Constant> {
        node.input.get(index).filter(|name| !name.is_empty()).and_then(|name| self.constants.get(name)).cloned()
    }

    /// `node`'s inputs 1..=N, all constants.
    fn params<const N: usize>(&self, node: &NodeProto) -> Result<[Constant; N], String> {
        let found: Vec<Constant> = (1..=N).filter_map(|i| self.param(node, i)).collect();
        found
            .try_into()
            .map_err(|_| refusal(node, &format!("a {} whose parameters are not all constants", node.op_type)))
    }
}

fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}
