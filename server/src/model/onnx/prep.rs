//! The graph's preprocessing, ahead of its model op, evaluated symbolically
//! into `pipeline::Column`s: what skl2onnx writes for SimpleImputer,
//! StandardScaler, MinMaxScaler, OneHotEncoder (string or integer
//! categories) and a ColumnTransformer over a DataFrame (an input per
//! column, branches, `Concat`) or over one array (`ArrayFeatureExtractor`).
//! Each value computed from the features is a list of columns; the first
//! node that reads one and is not preprocessing is the model op, and the
//! columns of its input are what the model reads.

use super::constants::{Constant, per_feature};
use super::ends::Fed;
use super::{attribute, refusal};
use crate::model::categories::Categories;
use crate::model::pipeline::{Arithmetic, Column, ColumnOp, Source};
use onnx_schema::NodeProto;
use std::collections::{HashMap, HashSet};

/// The preprocessing of a graph, and where its model op starts.
pub(super) struct Prepared {
    /// The value the model op reads.
    pub(super) entry: String,
    pub(super) columns: Vec<Column>,
    /// Per feature, its categories when it is a string feature.
    pub(super) categories: Vec<Option<Categories>>,
}

/// A value computed from the features.
#[derive(Clone)]
enum Symbol {
    Columns(Vec<Column>),
    /// String feature `.0`, before an encoder.
    Text(usize),
}

/// Evaluates the needed `nodes` (in their topological order) from the
/// `fed` inputs (named `names`) up to the first node that is not
/// preprocessing.
pub(super) fn prepare(
    fed: &[Fed],
    names: &[&str],
    nodes: &[NodeProto],
    needed: &HashSet<usize>,
    constants: &HashMap<String, Constant>,
) -> Result<Prepared, String> {
    let mut categories: Vec<Option<Categories>> = Vec::new();
    let mut symbols: HashMap<&str, Symbol> = HashMap::new();
    for (fed, name) in fed.iter().zip(names) {
        let first = categories.len();
        let symbol = match fed {
            Fed::Numbers { width } => {
                categories.resize(first + width, None);
                Symbol::Columns(
                    (first..first + width).map(|f| Column { source: Source::Feature(f), ops: Vec::new() }).collect(),
                )
            }
            Fed::Text => {
                categories.push(Some(Categories::new()));
                Symbol::Text(first)
            }
        };
        symbols.insert(name, symbol);
    }
    let mut prep = Prep { constants, categories };
    for (index, node) in nodes.iter().enumerate() {
        let Some(data) = node.input.iter().find(|v| symbols.contains_key(v.as_str())) else { continue };
        if !needed.contains(&index) {
            continue;
        }
        let read: Vec<Option<&Symbol>> = node.input.iter().map(|v| symbols.get(v.as_str())).collect();
        match prep.node(node, &read)? {
            Some(symbol) => {
                if let Some(out) = node.output.first() {
                    symbols.insert(out, symbol);
                }
            }
            None => {
                return match &symbols[data.as_str()] {
                    Symbol::Columns(columns) => {
                        Ok(Prepared { entry: data.clone(), columns: columns.clone(), categories: prep.categories })
                    }
                    Symbol::Text(feature) => Err(refusal(
                        node,
                        &format!(
                            "a node reading the string feature `{}` directly; strings are compiled through a OneHotEncoder",
                            names.get(*feature).unwrap_or(&"?")
                        ),
                    )),
                };
            }
        }
    }
    Err("the graph's probabilities are computed by preprocessing alone, without a model op".into())
}

/// The preprocessing evaluator's state: the graph's constants and the
/// categories met so far.
struct Prep<'a> {
    constants: &'a HashMap<String, Constant>,
    categories: Vec<Option<Categories>>,
}

impl Prep<'_> {
    /// Whether a Reshape, Flatten or Identity `node` leaves rows of `width`
    /// as they are: a Reshape to `[-1 or 0, width]`, a Flatten of axis 1.
    fn keeps_rows(&self, node: &NodeProto, width: usize) -> bool {
        match node.op_type.as_str() {
            "Reshape" => {
                let shape = node.input.get(1).and_then(|s| self.constants.get(s));
                shape.is_some_and(|s| matches!(s.values[..], [a, b] if (a == -1.0 || a == 0.0) && b == width as f64))
            }
            "Flatten" => attribute(node, "axis").map_or(1, |a| a.i) == 1,
            _ => true,
        }
    }

    /// The symbol `node` computes from the symbols it `read`s (by input
    /// position), or `None` when it is not preprocessing (the model op).
    fn node(&mut self, node: &NodeProto, read: &[Option<&Symbol>]) -> Result<Option<Symbol>, String> {
        let first = read.first().copied().flatten();
        let symbols: Vec<&Symbol> = read.iter().flatten().copied().collect();
        let columns = match first {
            Some(Symbol::Columns(c)) if symbols.len() == 1 => Some(c),
            _ => None,
        };
        let op = (node.domain.as_str(), node.op_type.as_str());
        Ok(Some(match op {
            ("" | "ai.onnx", "Identity" | "Reshape" | "Flatten") if first.is_some() && symbols.len() == 1 => {
                let width = match first {
                    Some(Symbol::Columns(c)) => c.len(),
                    _ => 1,
                };
                if !self.keeps_rows(node, width) {
                    return Err(refusal(
                        node,
                        &format!("a {} that changes the row shape [rows, {width}]", node.op_type),
                    ));
                }
                first.cloned().expect("checked")
            }
            ("" | "ai.onnx", "Cast")
                if columns.is_some() && matches!(attribute(node, "to").map(|a| a.i), Some(1 | 11)) =>
            {
                first.cloned().expect("checked")
            }
            ("" | "ai.onnx", "Concat") => {
                let mut joined = Vec::new();
                for symbol in read {
                    match symbol {
                        Some(Symbol::Columns(c)) => joined.extend(c.iter().cloned()),
                        _ => return Err(refusal(node, "a Concat of something other than numeric features")),
                    }
                }
                Symbol::Columns(joined)
            }
            ("ai.onnx.ml", "OneHotEncoder") => self.one_hot(node, first)?,
            _ => {
                let Some(columns) = columns else { return Ok(None) };
                match self.per_column(node, columns, read)? {
                    Some(columns) => Symbol::Columns(columns),
                    None => return Ok(None),
                }
            }
        }))
    }

    /// The per-column ops (Scaler, Imputer, constant arithmetic, Clip) and
    /// ArrayFeatureExtractor over `columns`; `None` for other ops.
    fn per_column(
        &self,
        node: &NodeProto,
        columns: &[Column],
        read: &[Option<&Symbol>],
    ) -> Result<Option<Vec<Column>>, String> {
        let width = columns.len();
        let floats = |name: &str, default: f64| -> Result<Vec<f32>, String> {
            Ok(per_feature(floats(node, name), width, default, node)?.into_iter().map(|v| v as f32).collect())
        };
        let constant = |at: usize| node.input.get(at).and_then(|n| self.constants.get(n));
        let ops: Vec<ColumnOp> = match (node.domain.as_str(), node.op_type.as_str()) {
            ("ai.onnx.ml", "Scaler") => floats("offset", 0.0)?
                .into_iter()
                .zip(floats("scale", 1.0)?)
                .map(|(offset, scale)| ColumnOp::Scale { offset, scale })
                .collect(),
            ("ai.onnx.ml", "Imputer") => {
                if attribute(node, "imputed_value_int64s").is_some_and(|a| !a.ints.is_empty()) {
                    return Err(refusal(node, "an Imputer of integers; Candela's rows are floats"));
                }
                let values = floats("imputed_value_floats", f64::NAN)?;
                if values.iter().any(|v| !v.is_finite()) {
                    return Err(refusal(node, "an Imputer without a finite value for every column"));
                }
                let replaced = attribute(node, "replaced_value_float").map_or(0.0, |a| a.f);
                values.into_iter().map(|value| ColumnOp::Impute { replaced, value }).collect()
            }
            ("" | "ai.onnx", "Add" | "Sub" | "Mul" | "Div") => {
                let constant_first = read.first().copied().flatten().is_none();
                let Some(c) = constant(usize::from(!constant_first)) else { return Ok(None) };
                let op = match node.op_type.as_str() {
                    "Add" => Arithmetic::Add,
                    "Sub" => Arithmetic::Sub,
                    "Mul" => Arithmetic::Mul,
                    _ => Arithmetic::Div,
                };
                per_feature(c.values.clone(), width, 0.0, node)?
                    .into_iter()
                    .map(|c| ColumnOp::Arithmetic { op, constant: c as f32, constant_first })
                    .collect()
            }
            ("" | "ai.onnx", "Clip") => {
                let bound = |at: usize, name: &str, default: f32| match node.input.get(at).filter(|n| !n.is_empty()) {
                    Some(_) => constant(at)
                        .and_then(Constant::scalar)
                        .map(|v| v as f32)
                        .ok_or_else(|| refusal(node, "a Clip whose bounds are not constants")),
                    None => Ok(attribute(node, name).map_or(default, |a| a.f)),
                };
                let (low, high) = (bound(1, "min", f32::NEG_INFINITY)?, bound(2, "max", f32::INFINITY)?);
                if low.is_nan() || high.is_nan() || low > high {
                    return Err(refusal(node, &format!("a Clip to [{low}, {high}]")));
                }
                vec![ColumnOp::Clip { low, high }; width]
            }
            ("ai.onnx.ml", "ArrayFeatureExtractor") => {
                let indices = constant(1)
                    .ok_or_else(|| refusal(node, "an ArrayFeatureExtractor whose indices are not constants"))?;
                return indices
                    .values
                    .iter()
                    .map(|i| {
                        columns.get(*i as usize).filter(|_| *i >= 0.0).cloned().ok_or_else(|| {
                            refusal(node, &format!("an ArrayFeatureExtractor of column {i} from {width}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some);
            }
            _ => return Ok(None),
        };
        Ok(Some(
            columns
                .iter()
                .zip(ops)
                .map(|(column, op)| {
                    let mut column = column.clone();
                    column.ops.push(op);
                    column
                })
                .collect(),
        ))
    }

    /// A OneHotEncoder of a string feature (`cats_strings`) or of an integer
    /// feature read as sent (`cats_int64s`): one indicator column per
    /// category; `zeros = 0` refuses unknown categories.
    fn one_hot(&mut self, node: &NodeProto, input: Option<&Symbol>) -> Result<Symbol, String> {
        let ignore_unknown = attribute(node, "zeros").is_none_or(|a| a.i != 0);
        let strings = attribute(node, "cats_strings").map(|a| a.strings.clone()).unwrap_or_default();
        let ints = attribute(node, "cats_int64s").map(|a| a.ints.clone()).unwrap_or_default();
        match input {
            Some(Symbol::Text(feature)) if !strings.is_empty() => {
                // Every string feature has its categories from the start (`prepare`).
                let categories = self.categories[*feature].get_or_insert_with(Categories::new);
                if !ignore_unknown {
                    categories.refuse_unknown();
                }
                let mut columns = Vec::with_capacity(strings.len());
                for category in strings {
                    let category = String::from_utf8(category)
                        .map_err(|_| refusal(node, "a OneHotEncoder with a category that is not UTF-8"))?;
                    let code = categories.add(category);
                    columns.push(Column {
                        source: Source::Indicator { feature: *feature, code: code as f32 },
                        ops: Vec::new(),
                    });
                }
                Ok(Symbol::Columns(columns))
            }
            Some(Symbol::Columns(columns)) if !ints.is_empty() && ignore_unknown => match columns[..] {
                [Column { source: Source::Feature(feature), ref ops }] if ops.is_empty() => Ok(Symbol::Columns(
                    ints.iter()
                        .map(|v| Column { source: Source::Indicator { feature, code: *v as f32 }, ops: Vec::new() })
                        .collect(),
                )),
                _ => Err(refusal(node, "a OneHotEncoder of integers over anything but one feature as sent")),
            },
            _ => Err(refusal(
                node,
                "a OneHotEncoder other than of one string feature (cats_strings) or of one integer feature \
                 (cats_int64s, unknown categories ignored)",
            )),
        }
    }
}

/// `node`'s float-list attribute `name` as f64s (empty when absent).
pub(super) fn floats(node: &NodeProto, name: &str) -> Vec<f64> {
    attribute(node, name).map(|a| a.floats.iter().map(|v| f64::from(*v)).collect()).unwrap_or_default()
}
