//! How a graph Candela does not compile is refused: the node by name and
//! op type, what about it is not compiled, and what works instead where
//! something does, so that the refusal is the way forward.

use onnx_schema::NodeProto;

/// What each supported op is, for refusals.
const SUPPORTED: &str = "Gemm, MatMul, Add, Sub, Mul, Div (by constants), Relu, Sigmoid, Tanh, Softmax, Gelu, Erf (in GELU's formula), BatchNormalization, LayerNormalization, Identity, Dropout, Flatten, Reshape, Cast, Concat (a binary head), and before the model Concat, Clip and Reshape of features; ai.onnx.ml Scaler, Imputer (numbers, before the model), OneHotEncoder (of a string or integer feature), ArrayFeatureExtractor (of features), LinearClassifier (binary LOGISTIC, multinomial SOFTMAX), LinearRegressor (one target), TreeEnsembleClassifier and TreeEnsembleRegressor (ml opsets 1–3; a regressor of one target), TreeEnsemble (ml opset 5), Normalizer (L1, after the head), ZipMap (dropped); INT8 layers as quantize_dynamic writes them (DynamicQuantizeLinear, MatMulInteger, Cast, Mul, Add)";

/// How a refusal names `node`: its name (else its first output) and op type.
pub(super) fn describe(node: &NodeProto) -> String {
    let name = if node.name.is_empty() { node.output.first().map_or("?", String::as_str) } else { &node.name };
    if node.domain.is_empty() {
        format!("`{name}` ({})", node.op_type)
    } else {
        format!("`{name}` ({}:{})", node.domain, node.op_type)
    }
}

/// The refusal of `node`, which is `what`, with the list of what is compiled.
pub(super) fn refusal(node: &NodeProto, what: &str) -> String {
    format!(
        "node {} is {what}; Candela compiles {SUPPORTED} (README.md, \"Serving your model\", and docs/models.md list them with the export recipes)",
        describe(node)
    )
}

/// The refusal of an op Candela does not compile, with what works instead
/// where something does (docs/models.md lists what is compiled).
pub(super) fn unsupported(node: &NodeProto) -> String {
    let instead = match node.op_type.as_str() {
        "SVMRegressor" | "SVMClassifier" => {
            " (support vector machines are not compiled: a linear model (LinearRegressor, \
             LinearClassifier) or a tree ensemble is)"
        }
        "MatMulInteger"
        | "QuantizeLinear"
        | "DequantizeLinear"
        | "QLinearMatMul"
        | "DynamicQuantizeMatMul"
        | "MatMulIntegerToFloat" => {
            " (INT8 is compiled as onnxruntime's `quantize_dynamic` writes it, DynamicQuantizeLinear → \
             MatMulInteger per layer; static (QDQ, QLinear) quantization is not: quantize with \
             `quantize_dynamic`, or serve the FP32 graph, or set \"dtype\": \"f16\" in model.json)"
        }
        "Imputer" => " (an Imputer is compiled where it comes first, before the model's first layer)",
        "LabelEncoder" | "CategoryMapper" | "StringNormalizer" => {
            " (string features are compiled through a OneHotEncoder: export the pipeline with \
             OneHotEncoder instead of an ordinal or label encoding)"
        }
        _ => "",
    };
    refusal(node, &format!("an unsupported op{instead}"))
}

/// The refusals a data scientist meets first, checked on the smallest graphs
/// that show them: each names the node and says what works instead.
#[cfg(test)]
pub(super) mod tests {
    use super::super::import;
    use onnx_schema as proto;

    /// A graph over one float input `x` of 3 features, its `nodes` in order and
    /// its one output `y` (the other modules' tests build theirs here too).
    pub(in super::super) fn graph(nodes: Vec<proto::NodeProto>) -> Vec<u8> {
        let value = |name: &str| proto::ValueInfoProto { name: name.into(), ..Default::default() };
        let graph =
            proto::GraphProto { node: nodes, input: vec![value("x")], output: vec![value("y")], ..Default::default() };
        proto::encode(&proto::ModelProto { graph: Some(graph), ..Default::default() })
    }

    fn node(op_type: &str, domain: &str, input: &str, output: &str) -> proto::NodeProto {
        proto::NodeProto {
            op_type: op_type.into(),
            domain: domain.into(),
            name: format!("{op_type}_0"),
            input: vec![input.into()],
            output: vec![output.into()],
            ..Default::default()
        }
    }

    /// Feature names `f0`, `f1`, …
    fn names(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("f{i}")).collect()
    }

    fn refusal(nodes: Vec<proto::NodeProto>) -> String {
        match import(&graph(nodes), &names(3), None) {
            Ok(_) => panic!("the graph was compiled"),
            Err(error) => error,
        }
    }

    #[test]
    fn unsupported_ops_name_the_node_and_the_way_that_works() {
        for (op, instead) in [
            ("SVMRegressor", "support vector machines are not compiled"),
            ("QLinearMatMul", "quantize with `quantize_dynamic`"),
            ("LabelEncoder", "compiled through a OneHotEncoder"),
        ] {
            let error = refusal(vec![node(op, "ai.onnx.ml", "x", "y")]);
            assert!(error.contains(&format!("`{op}_0` (ai.onnx.ml:{op}) is an unsupported op")), "{error}");
            assert!(error.contains(instead), "{op}: `{instead}` not in: {error}");
            assert!(error.contains("Candela compiles Gemm"), "{error}");
            assert!(error.ends_with("list them with the export recipes)"), "{error}");
        }
        let plain = refusal(vec![node("Hardmax", "", "x", "y")]);
        assert!(plain.contains("`Hardmax_0` (Hardmax) is an unsupported op; Candela compiles"), "{plain}");
        let late = refusal(vec![node("Relu", "", "x", "h"), node("Imputer", "ai.onnx.ml", "h", "y")]);
        assert!(late.contains("compiled where it comes first, before the model's first layer"), "{late}");
        let empty = refusal(vec![node("Imputer", "ai.onnx.ml", "x", "y")]);
        assert!(empty.contains("an Imputer without a finite value for every column"), "{empty}");
    }

    #[test]
    fn linear_classifiers_are_compiled_only_where_their_scores_are_probabilities() {
        let classifier = |transform: &str, targets: usize| {
            let floats = |name: &str, floats: Vec<f32>| proto::AttributeProto {
                name: name.into(),
                floats,
                ..Default::default()
            };
            let mut node = node("LinearClassifier", "ai.onnx.ml", "x", "label");
            node.output.push("y".into());
            node.attribute = vec![
                floats("coefficients", vec![0.5; 3 * targets]),
                floats("intercepts", vec![0.1; targets]),
                proto::AttributeProto { name: "classlabels_ints".into(), ints: vec![0, 1, 2], ..Default::default() },
                proto::AttributeProto { name: "post_transform".into(), s: transform.into(), ..Default::default() },
            ];
            refusal(vec![node])
        };
        let one_vs_rest = classifier("LOGISTIC", 3);
        assert!(one_vs_rest.contains("post_transform LOGISTIC over 3 scores for 3 labels"), "{one_vs_rest}");
        assert!(one_vs_rest.contains("one-vs-rest is not compiled yet"), "{one_vs_rest}");
        let raw = classifier("NONE", 3);
        assert!(raw.contains("post_transform NONE over 3 scores"), "{raw}");
    }

    #[test]
    fn a_graph_ending_in_logits_says_to_export_its_softmax_not_to_edit_layers() {
        let error = refusal(vec![node("Relu", "", "x", "y")]);
        assert!(error.contains("`y` is raw scores (logits) from node `Relu_0` (Relu)"), "{error}");
        assert!(error.contains("torch.nn.Softmax(dim=1)"), "{error}");
        assert!(error.contains("cannot add one to an ONNX graph"), "{error}");
    }

    #[test]
    fn a_graph_with_an_input_per_column_must_be_named_by_the_features() {
        let mut model = proto::decode(&graph(vec![node("Relu", "", "x", "y")])).unwrap();
        let graph = model.graph.as_mut().unwrap();
        graph.input.push(proto::ValueInfoProto { name: "amount".into(), ..Default::default() });
        let error = import(&proto::encode(&model), &names(2), None).err().expect("unnamed inputs are refused");
        assert!(error.contains(r#"an input per feature (a DataFrame's columns) named ["x", "amount"]"#), "{error}");
        assert!(error.contains(r#"it lists ["f0", "f1"]"#), "{error}");
    }

    #[test]
    fn a_reshape_ahead_of_the_model_must_keep_the_rows_shape() {
        let shape = |dims: Vec<i64>| proto::NodeProto {
            op_type: "Constant".into(),
            output: vec!["shape".into()],
            attribute: vec![proto::AttributeProto {
                name: "value".into(),
                t: Some(proto::TensorProto { dims: vec![2], data_type: 7, int64_data: dims, ..Default::default() }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let reshape = || {
            let mut reshape = node("Reshape", "", "x", "r");
            reshape.input.push("shape".into());
            reshape
        };
        let error = refusal(vec![shape(vec![-1, 2]), reshape(), node("Relu", "", "r", "y")]);
        assert!(error.contains("`Reshape_0` (Reshape) is a Reshape that changes the row shape [rows, 3]"), "{error}");
        // The same shape is a no-op: what is refused then is the logits, further on.
        let error = refusal(vec![shape(vec![-1, 3]), reshape(), node("Relu", "", "r", "y")]);
        assert!(error.contains("raw scores (logits)"), "{error}");
    }
}
