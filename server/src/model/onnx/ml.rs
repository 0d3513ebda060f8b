//! The `ai.onnx.ml` ops scikit-learn's converters emit around a linear
//! model, lowered onto the same layers (tree ensembles: `tree_ensemble`;
//! leading Scaler and Imputer steps: `prep`): Scaler (a standardisation),
//! LinearClassifier (a linear layer under its sigmoid or softmax head, as
//! onnxruntime computes it), LinearRegressor (a linear layer of one output), an L1 Normalizer over probabilities that already
//! sum to one, and ZipMap (output formatting: the probabilities as maps).

use super::constants::{Constant, per_feature};
use super::prep::floats;
use super::{Walk, attribute, class_labels, refusal, unsupported};
use crate::model::manifest::LayerSpec;
use onnx_schema::NodeProto;

impl Walk<'_> {
    /// Lowers the `ai.onnx.ml` op `node`, which consumes the rows' current
    /// `value` and gives `out` (its first output); returns the value the
    /// rows continue as.
    pub(super) fn ml(&mut self, node: &NodeProto, value: &str, out: String) -> Result<String, String> {
        match node.op_type.as_str() {
            "Scaler" => {
                let offset = per_feature(floats(node, "offset"), self.width, 0.0, node)?;
                let scale = per_feature(floats(node, "scale"), self.width, 1.0, node)?;
                self.standardize(node, offset, scale)?;
            }
            "LinearClassifier" => return self.linear_classifier(node, value),
            "TreeEnsembleClassifier" => return self.tree_ensemble_classifier(node, value),
            "TreeEnsembleRegressor" => return self.tree_ensemble_regressor(node, value),
            "TreeEnsemble" => return self.tree_ensemble(node, value),
            "LinearRegressor" => self.linear_regressor(node, value)?,
            "Normalizer" => self.normalizer(node)?,
            "ZipMap" => {
                if self.labels.is_none() {
                    self.labels = class_labels(node);
                }
            }
            _ => return Err(unsupported(node)),
        }
        Ok(out)
    }

    /// `scores = x · coefficientsᵀ + intercepts`, then `post_transform`:
    /// SOFTMAX over the classes, or LOGISTIC of the one score of a
    /// two-label model (onnxruntime answers `[1 − σ(s), σ(s)]`). The
    /// probabilities are the op's second output.
    fn linear_classifier(&mut self, node: &NodeProto, value: &str) -> Result<String, String> {
        let Some(probabilities) = node.output.get(1).filter(|o| !o.is_empty()).cloned() else {
            return Err(refusal(node, "a LinearClassifier without its probability output"));
        };
        if node.input.first().map(String::as_str) != Some(value) {
            return Err(refusal(node, "a LinearClassifier whose input is not the rows"));
        }
        let width = self.width;
        let (coefficients, intercepts) = (floats(node, "coefficients"), floats(node, "intercepts"));
        let targets = intercepts.len();
        self.labels = class_labels(node);
        let labels = self.labels.as_ref().map_or(0, |l| l.names.len());
        if targets == 0 || coefficients.len() != targets * width {
            return Err(refusal(
                node,
                &format!(
                    "a LinearClassifier with {} coefficients and {targets} intercepts for rows of {width} features",
                    coefficients.len()
                ),
            ));
        }
        let transform = attribute(node, "post_transform").map_or(&b"NONE"[..], |a| a.s.as_slice());
        // skl2onnx writes a binary model as two opposite scores, [−s, s]:
        // their logistics are [1 − σ(s), σ(s)], the sigmoid head's answer.
        let opposite = targets == 2
            && intercepts[0] == -intercepts[1]
            && (0..width).all(|j| coefficients[j] == -coefficients[width + j]);
        let (coefficients, intercepts, targets) = match (transform, targets) {
            (b"LOGISTIC", 2) if opposite => (coefficients[width..].to_vec(), vec![intercepts[1]], 1),
            _ => (coefficients, intercepts, targets),
        };
        let head = match (transform, targets, labels) {
            (b"LOGISTIC", 1, 2) => LayerSpec::Sigmoid,
            (b"SOFTMAX", t, l) if t >= 2 && t == l => LayerSpec::Softmax,
            _ => {
                return Err(refusal(
                    node,
                    &format!(
                        "a LinearClassifier with post_transform {} over {targets} scores for {labels} labels; \
                         compiled: LOGISTIC over one score, or two opposite ones, for two labels (binary), \
                         SOFTMAX over one score per label (multinomial; one-vs-rest is not compiled yet)",
                        String::from_utf8_lossy(transform)
                    ),
                ));
            }
        };
        let weight = Constant { dims: vec![targets, width], values: coefficients };
        let bias = Constant { dims: vec![targets], values: intercepts };
        self.linear(node, weight, Some(bias), 1.0, 1.0)?;
        self.push(head, Vec::new())?;
        Ok(probabilities)
    }

    /// `value = x · coefficientsᵀ + intercept` of one target, without a
    /// post_transform: a linear layer of one output, the regressor's value.
    fn linear_regressor(&mut self, node: &NodeProto, value: &str) -> Result<(), String> {
        if node.input.first().map(String::as_str) != Some(value) {
            return Err(refusal(node, "a LinearRegressor whose input is not the rows"));
        }
        let width = self.width;
        let (coefficients, intercepts) = (floats(node, "coefficients"), floats(node, "intercepts"));
        let targets = attribute(node, "targets").map_or(1, |a| a.i);
        let transform = attribute(node, "post_transform").map_or(&b"NONE"[..], |a| a.s.as_slice());
        if targets != 1 || coefficients.len() != width || intercepts.len() > 1 || transform != b"NONE" {
            return Err(refusal(
                node,
                &format!(
                    "a LinearRegressor of {targets} targets with {} coefficients and post_transform {} for rows of \
                     {width} features; compiled: one target, no post_transform",
                    coefficients.len(),
                    String::from_utf8_lossy(transform)
                ),
            ));
        }
        let weight = Constant { dims: vec![1, width], values: coefficients };
        let bias = Constant { dims: vec![1], values: vec![intercepts.first().copied().unwrap_or(0.0)] };
        self.linear(node, weight, Some(bias), 1.0, 1.0)?;
        self.value = true;
        Ok(())
    }

    /// An L1 Normalizer straight after a softmax or a two-label sigmoid head
    /// (what skl2onnx appends to a multinomial model) leaves probabilities
    /// that already sum to one as they are.
    fn normalizer(&self, node: &NodeProto) -> Result<(), String> {
        let norm = attribute(node, "norm").map_or(&b"MAX"[..], |a| a.s.as_slice());
        let after_head = match self.layers.last() {
            Some(LayerSpec::Softmax) => true,
            Some(LayerSpec::Sigmoid) => self.width == 1,
            _ => false,
        };
        if norm != b"L1" || !after_head {
            return Err(refusal(
                node,
                "a Normalizer other than L1 over probabilities (after a softmax or sigmoid head)",
            ));
        }
        Ok(())
    }
}
