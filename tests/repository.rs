//! The model repository: every layer type computes what PyTorch's module
//! computes (checked against plain f64 arithmetic written here), and every way
//! a repository can be broken is refused at load with a message that names the
//! file, the tensor and what was expected.

use candela_server::model::LoadedModel;
use candela_server::model::error::LoadErrors;
use candela_server::model::repository;
use candle_core::{Device, Tensor};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

type Tensors = Vec<(&'static str, Vec<usize>, Vec<f32>)>;

fn write_model(root: &Path, segment: &str, version: &str, manifest: &serde_json::Value, tensors: &Tensors) {
    let dir = root.join(segment).join(version);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.json"), serde_json::to_string_pretty(manifest).unwrap()).unwrap();
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(name, shape, values)| {
            (name.to_string(), Tensor::from_vec(values.clone(), shape.as_slice(), &Device::Cpu).unwrap())
        })
        .collect();
    candle_core::safetensors::save(&map, dir.join("model.safetensors")).unwrap();
}

fn load(root: &Path) -> Result<Vec<LoadedModel>, LoadErrors> {
    repository::load(root, &Device::Cpu, "cpu", repository::DEFAULT_MAX_MODEL_BYTES)
}

fn load_error(root: &Path) -> String {
    match load(root) {
        Ok(_) => panic!("the repository at {} loaded", root.display()),
        Err(errors) => errors.to_string(),
    }
}

fn assert_mentions(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "`{text}`\n lacks `{part}`");
    }
}

/// Deterministic small weights.
fn values(n: usize, salt: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 * 0.37 + salt).sin()) * 0.5).collect()
}

/// A 3-feature, 2-label model using every layer type, PyTorch-named.
fn every_layer() -> (serde_json::Value, Tensors) {
    let manifest = json!({
        "features": ["a", "b", "c"],
        "labels": ["no", "yes", "maybe"],
        "layers": [
            {"type": "standardize"},
            {"type": "batch_norm", "eps": 0.001},
            {"type": "linear"},
            {"type": "gelu"},
            {"type": "dropout", "p": 0.1},
            {"type": "layer_norm"},
            {"type": "linear", "bias": false},
            {"type": "tanh"},
            {"type": "linear"},
            {"type": "gelu", "approximate": "tanh"},
            {"type": "linear"},
            {"type": "relu"},
            {"type": "linear"},
            {"type": "sigmoid"},
            {"type": "linear"},
            {"type": "softmax"}
        ],
        "provenance": {"created": "2026-11-23T00:00:00Z", "metrics": {"auc": 0.5}}
    });
    let tensors: Tensors = vec![
        ("0.mean", vec![3], vec![1.0, -2.0, 0.5]),
        ("0.std", vec![3], vec![2.0, 0.5, 1.5]),
        ("1.weight", vec![3], vec![1.1, 0.9, 1.3]),
        ("1.bias", vec![3], vec![0.1, -0.2, 0.05]),
        ("1.running_mean", vec![3], vec![0.2, -0.1, 0.0]),
        ("1.running_var", vec![3], vec![1.5, 0.8, 1.0]),
        ("2.weight", vec![4, 3], values(12, 0.1)),
        ("2.bias", vec![4], values(4, 0.2)),
        ("5.weight", vec![4], vec![1.0, 0.8, 1.2, 0.9]),
        ("5.bias", vec![4], vec![0.0, 0.1, -0.1, 0.2]),
        ("6.weight", vec![5, 4], values(20, 0.3)),
        ("8.weight", vec![4, 5], values(20, 0.4)),
        ("8.bias", vec![4], values(4, 0.5)),
        ("10.weight", vec![4, 4], values(16, 0.6)),
        ("10.bias", vec![4], values(4, 0.7)),
        ("12.weight", vec![3, 4], values(12, 0.8)),
        ("12.bias", vec![3], values(3, 0.9)),
        ("14.weight", vec![3, 3], values(9, 1.0)),
        ("14.bias", vec![3], values(3, 1.1)),
    ];
    (manifest, tensors)
}

/// The same network in plain f64, written from PyTorch's documented formulas.
fn reference(row: &[f64], t: &Tensors) -> Vec<f64> {
    let get =
        |name: &str| t.iter().find(|(n, _, _)| *n == name).unwrap().2.iter().map(|v| *v as f64).collect::<Vec<f64>>();
    let linear = |x: &[f64], w: &str, b: Option<&str>| {
        let w = get(w);
        let out = w.len() / x.len();
        let b = b.map(get).unwrap_or(vec![0.0; out]);
        (0..out).map(|o| (0..x.len()).map(|i| w[o * x.len() + i] * x[i]).sum::<f64>() + b[o]).collect::<Vec<f64>>()
    };
    let erf = |x: f64| {
        // The Chebyshev fit of erfc from Numerical Recipes (fractional error < 1.2e-7).
        let t = 1.0 / (1.0 + 0.5 * x.abs());
        let poly = [
            -1.26551223,
            1.00002368,
            0.37409196,
            0.09678418,
            -0.18628806,
            0.27886807,
            -1.13520398,
            1.48851587,
            -0.82215223,
            0.17087277,
        ];
        let erfc = t * (-x * x + poly.iter().rev().fold(0.0, |acc, c| acc * t + c)).exp();
        if x >= 0.0 { 1.0 - erfc } else { erfc - 1.0 }
    };
    let (mean, std) = (get("0.mean"), get("0.std"));
    let mut x: Vec<f64> = row.iter().enumerate().map(|(i, v)| (v - mean[i]) / std[i]).collect();
    let (w, b, rm, rv) = (get("1.weight"), get("1.bias"), get("1.running_mean"), get("1.running_var"));
    x = x.iter().enumerate().map(|(i, v)| (v - rm[i]) / (rv[i] + 0.001).sqrt() * w[i] + b[i]).collect();
    x = linear(&x, "2.weight", Some("2.bias"));
    x = x.iter().map(|v| 0.5 * v * (1.0 + erf(v / 2f64.sqrt()))).collect();
    let mu = x.iter().sum::<f64>() / x.len() as f64;
    let var = x.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / x.len() as f64;
    let (w, b) = (get("5.weight"), get("5.bias"));
    x = x.iter().enumerate().map(|(i, v)| (v - mu) / (var + 1e-5).sqrt() * w[i] + b[i]).collect();
    x = linear(&x, "6.weight", None).iter().map(|v| v.tanh()).collect();
    x = linear(&x, "8.weight", Some("8.bias"));
    x = x
        .iter()
        .map(|v| 0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh()))
        .collect();
    x = linear(&x, "10.weight", Some("10.bias")).iter().map(|v| v.max(0.0)).collect();
    x = linear(&x, "12.weight", Some("12.bias")).iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
    x = linear(&x, "14.weight", Some("14.bias"));
    let max = x.iter().cloned().fold(f64::MIN, f64::max);
    let sum: f64 = x.iter().map(|v| (v - max).exp()).sum();
    x.iter().map(|v| (v - max).exp() / sum).collect()
}

#[test]
fn every_layer_type_matches_pytorch_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, tensors) = every_layer();
    write_model(dir.path(), "mixed", "1", &manifest, &tensors);
    let models = load(dir.path()).unwrap();
    let network = &models[0].scorer;
    assert_eq!(network.description()[2], "linear(3→4)");
    assert_eq!(network.description()[4], "dropout (identity at inference)");
    let rows = [[0.3, -1.7, 2.2], [5.0, 0.0, -3.0], [-0.4, 8.0, 0.1]];
    let flat: Vec<f32> = rows.iter().flatten().map(|v| *v as f32).collect();
    let got = network.forward(&flat).unwrap().probabilities;
    for (r, row) in rows.iter().enumerate() {
        let want = reference(row, &tensors);
        for (k, w) in want.iter().enumerate() {
            let g = got[r * 3 + k] as f64;
            assert!((g - w).abs() < 1e-5, "row {r} class {k}: candela {g} vs reference {w}");
        }
    }
}

#[test]
fn other_dtypes_agree_with_f32() {
    let dir = tempfile::tempdir().unwrap();
    let (mut manifest, tensors) = every_layer();
    write_model(dir.path(), "mixed", "1", &manifest, &tensors);
    for (version, dtype) in [("2", "f64"), ("3", "f16"), ("4", "bf16")] {
        manifest["dtype"] = json!(dtype);
        write_model(dir.path(), "mixed", version, &manifest, &tensors);
    }
    let models = load(dir.path()).unwrap();
    let row = [0.3f32, -1.7, 2.2];
    let f32_out = models[0].scorer.forward(&row).unwrap().probabilities;
    for (model, tolerance) in models[1..].iter().zip([1e-6, 2e-2, 5e-2]) {
        let out = model.scorer.forward(&row).unwrap().probabilities;
        for (a, b) in out.iter().zip(&f32_out) {
            assert!((a - b).abs() < tolerance, "{:?}: {out:?} vs f32 {f32_out:?}", model.manifest.dtype);
        }
    }
}

#[test]
fn a_sigmoid_head_gives_two_class_probabilities_and_prefixes_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = json!({
        "features": ["x", "y"],
        "labels": ["legit", "fraud"],
        "tensor_prefix": "net.",
        "layers": [{"type": "linear"}, {"type": "sigmoid"}]
    });
    write_model(
        dir.path(),
        "s",
        "1",
        &manifest,
        &vec![("net.0.weight", vec![1, 2], vec![2.0, -1.0]), ("net.0.bias", vec![1], vec![0.5])],
    );
    let models = load(dir.path()).unwrap();
    let out = models[0].scorer.forward(&[1.0, 3.0]).unwrap().probabilities;
    let p = 1.0 / (1.0 + (0.5f32).exp()); // sigmoid(2 - 3 + 0.5)
    assert!((out[1] - p).abs() < 1e-6 && (out[0] - (1.0 - p)).abs() < 1e-6, "{out:?}");
}

#[test]
fn a_network_with_a_value_head_is_a_regressor_answering_its_one_output() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = json!({
        "features": ["x", "y"],
        "task": "regression",
        "layers": [{"type": "linear"}, {"type": "relu"}, {"type": "linear"}]
    });
    let tensors: Tensors = vec![
        ("0.weight", vec![2, 2], vec![1.0, 0.0, 0.0, 1.0]),
        ("0.bias", vec![2], vec![0.0, 0.0]),
        ("2.weight", vec![1, 2], vec![3.0, -2.0]),
        ("2.bias", vec![1], vec![100.0]),
    ];
    write_model(dir.path(), "prices", "1", &manifest, &tensors);
    let models = load(dir.path()).unwrap();
    assert_eq!(models[0].scorer.outputs(), 1);
    let out = models[0].scorer.forward(&[2.0, 5.0, -1.0, 4.0]).unwrap().probabilities;
    assert_eq!(out, [100.0 + 6.0 - 10.0, 100.0 - 8.0], "relu(x)·w + b per row");
    // Two outputs are no value; labels are for classifiers.
    let mut two = manifest.clone();
    two["layers"] = json!([{"type": "linear", "bias": false}]);
    write_model(dir.path(), "prices", "2", &two, &vec![("0.weight", vec![2, 2], values(4, 0.0))]);
    assert_mentions(&load_error(dir.path()), &["ends in 2 outputs but a regressor answers one value"]);
    std::fs::remove_dir_all(dir.path().join("prices/2")).unwrap();
    let mut labelled = manifest.clone();
    labelled["labels"] = json!(["low", "high"]);
    write_model(dir.path(), "prices", "3", &labelled, &tensors);
    assert_mentions(
        &load_error(dir.path()),
        &["`labels` is for classifiers; a regressor (`task` regression) answers one value"],
    );
}

fn tiny() -> (serde_json::Value, Tensors) {
    let manifest = json!({
        "features": ["a", "b", "c"],
        "labels": ["legit", "fraud"],
        "layers": [{"type": "linear"}, {"type": "relu"}, {"type": "linear"}, {"type": "softmax"}]
    });
    let tensors: Tensors = vec![
        ("0.weight", vec![4, 3], values(12, 0.0)),
        ("0.bias", vec![4], values(4, 1.0)),
        ("2.weight", vec![2, 4], values(8, 2.0)),
        ("2.bias", vec![2], values(2, 3.0)),
    ];
    (manifest, tensors)
}

/// A repository holding the `tiny` model as `retail/1`.
fn tiny_repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, tensors) = tiny();
    write_model(dir.path(), "retail", "1", &manifest, &tensors);
    dir
}

fn broken(edit: impl FnOnce(&mut serde_json::Value, &mut Tensors)) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let (mut manifest, mut tensors) = tiny();
    edit(&mut manifest, &mut tensors);
    write_model(dir.path(), "retail", "1", &manifest, &tensors);
    let error = load_error(dir.path());
    (dir, error)
}

#[test]
fn a_missing_tensor_is_named_with_its_layer() {
    let (_dir, error) = broken(|_, t| t.retain(|(n, _, _)| *n != "2.weight"));
    assert_mentions(&error, &["retail/1/model.safetensors", "tensor `2.weight` is missing: layer 2 (linear) needs it"]);
}

#[test]
fn a_shape_mismatch_names_the_tensor_and_the_expected_shape() {
    let (_dir, error) = broken(|_, t| t[2] = ("2.weight", vec![2, 5], values(10, 0.0)));
    assert_mentions(
        &error,
        &[
            "retail/1/model.safetensors",
            "tensor `2.weight` has shape [2, 5]; expected [out, 4] (layer 2 receives 4 features)",
        ],
    );
    let (_dir, error) = broken(|_, t| t[1] = ("0.bias", vec![3], values(3, 0.0)));
    assert_mentions(&error, &["tensor `0.bias` has shape [3]; expected [4] (one per output of `0.weight`)"]);
    let (_dir, error) = broken(|_, t| t[0] = ("0.weight", vec![4, 2], values(8, 0.0)));
    assert_mentions(&error, &["tensor `0.weight` has shape [4, 2]; expected [out, 3]"]);
}

#[test]
fn an_unknown_layer_is_refused_with_the_known_ones() {
    let (_dir, error) = broken(|m, _| m["layers"][1] = json!({"type": "conv2d"}));
    assert_mentions(
        &error,
        &["retail/1/model.json", "valid JSON, but at `layers[1].type`", "unknown variant `conv2d`", "linear"],
    );
}

#[test]
fn unreadable_json_is_refused_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, tensors) = tiny();
    write_model(dir.path(), "retail", "1", &manifest, &tensors);
    std::fs::write(dir.path().join("retail/1/model.json"), "{\"features\": [\"a\",\n").unwrap();
    assert_mentions(&load_error(dir.path()), &["retail/1/model.json: invalid JSON", "line 2"]);
    std::fs::write(
        dir.path().join("retail/1/model.json"),
        "{\"features\": [\"a\"], \"labels\": [\"x\",\"y\"], \"layers\": [], \"colour\": 1}",
    )
    .unwrap();
    assert_mentions(&load_error(dir.path()), &["valid JSON, but at `colour`: unknown field `colour`"]);
    std::fs::write(dir.path().join("retail/1/model.json"), "{\"labels\": [\"x\",\"y\"], \"features\": 3}").unwrap();
    assert_mentions(
        &load_error(dir.path()),
        &["valid JSON, but at `features`: invalid type: integer `3`, expected a sequence"],
    );
}

#[test]
fn an_empty_or_absent_repository_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "not a model").unwrap();
    assert_mentions(
        &load_error(dir.path()),
        &["the model repository is empty: expected directories <segment>/<version>/"],
    );
    assert_mentions(&load_error(&dir.path().join("nowhere")), &["nowhere: cannot read"]);
}

#[test]
fn the_network_must_end_in_probabilities_for_the_labels() {
    let (_dir, error) = broken(|m, _| m["layers"][3] = json!({"type": "relu"}));
    assert_mentions(&error, &["the last layer must be `softmax`"]);
    let (_dir, error) = broken(|m, _| m["labels"] = json!(["a", "b", "c"]));
    assert_mentions(&error, &["ends in a softmax over 2 outputs but model.json has 3 labels"]);
}

#[test]
fn tensors_no_layer_uses_are_refused() {
    let (_dir, error) = broken(|_, t| t.push(("4.weight", vec![2, 2], values(4, 0.0))));
    assert_mentions(
        &error,
        &["tensor `4.weight` is not used by any layer: is a layer missing from model.json's `layers`?"],
    );
}

#[test]
fn non_finite_weights_and_bad_statistics_are_refused() {
    let (_dir, error) = broken(|_, t| t[3].2[1] = f32::NAN);
    assert_mentions(&error, &["tensor `2.bias` holds a non-finite value (NaN) at flat index 1"]);
    let (_dir, error) = broken(|m, t| {
        m["layers"] = json!([{"type": "standardize"}, {"type": "linear"}, {"type": "softmax"}]);
        *t = vec![
            ("0.mean", vec![3], vec![0.0; 3]),
            ("0.std", vec![3], vec![1.0, 0.0, 1.0]),
            ("1.weight", vec![2, 3], values(6, 0.0)),
            ("1.bias", vec![2], values(2, 0.0)),
        ];
    });
    assert_mentions(&error, &["tensor `0.std` has a value ≤ 0"]);
}

#[test]
fn a_weight_beyond_f16_range_is_refused_for_f16_only() {
    let (_dir, error) = broken(|m, t| {
        m["dtype"] = json!("f16");
        t[2].2[5] = -70_000.0;
    });
    assert_mentions(
        &error,
        &["layer 2 (linear) holds a value of magnitude 70000, beyond f16's largest (65504)", "use dtype `bf16`"],
    );
    for dtype in ["bf16", "f32"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut manifest, mut tensors) = tiny();
        manifest["dtype"] = json!(dtype);
        tensors[2].2[5] = -70_000.0;
        write_model(dir.path(), "retail", "1", &manifest, &tensors);
        load(dir.path()).unwrap_or_else(|e| panic!("{dtype}: {e}"));
    }
}

#[test]
fn standardization_runs_in_f32_so_large_raw_features_suit_an_f16_model() {
    // Raw features around 1e6 (amounts in cents, say) are beyond f16, but
    // standardised they are small: an f16 model must score them as f32 does.
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = json!({
        "features": ["a", "b", "c"],
        "labels": ["legit", "fraud"],
        "layers": [{"type": "standardize"}, {"type": "linear"}, {"type": "relu"}, {"type": "linear"}, {"type": "softmax"}]
    });
    let tensors: Tensors = vec![
        ("0.mean", vec![3], vec![1.0e6, -2.0e5, 3.0]),
        ("0.std", vec![3], vec![5.0e5, 1.0e5, 2.0]),
        ("1.weight", vec![4, 3], values(12, 0.0)),
        ("1.bias", vec![4], values(4, 1.0)),
        ("3.weight", vec![2, 4], values(8, 2.0)),
        ("3.bias", vec![2], values(2, 3.0)),
    ];
    write_model(dir.path(), "wide", "1", &manifest, &tensors);
    manifest["dtype"] = json!("f16");
    write_model(dir.path(), "wide", "2", &manifest, &tensors);
    let models = load(dir.path()).unwrap();
    let row = [1.8e6f32, -3.1e5, 4.0];
    let f32_out = models[0].scorer.forward(&row).unwrap().probabilities;
    let f16_out = models[1].scorer.forward(&row).unwrap().probabilities;
    for (a, b) in f16_out.iter().zip(&f32_out) {
        assert!(a.is_finite() && (a - b).abs() < 1e-2, "f16 {f16_out:?} vs f32 {f32_out:?}");
    }
}

#[test]
fn names_labels_and_version_directories_are_checked() {
    let (_dir, error) = broken(|m, _| m["features"] = json!(["a", "b", "a"]));
    assert_mentions(&error, &["`features` names `a` twice"]);
    let (_dir, error) = broken(|m, _| m["labels"] = json!(["only"]));
    assert_mentions(&error, &["`labels` has 1 entries: a classifier needs at least 2"]);
    let dir = tempfile::tempdir().unwrap();
    let (manifest, tensors) = tiny();
    write_model(dir.path(), "retail", "v2", &manifest, &tensors);
    write_model(dir.path(), "retail", "01", &manifest, &tensors);
    let error = load_error(dir.path());
    assert_mentions(
        &error,
        &["(2 problems)", "`01` is not a valid version directory", "`v2` is not a valid version directory"],
    );
}

#[test]
fn missing_or_corrupt_weights_are_refused() {
    let dir = tiny_repository();
    let weights = dir.path().join("retail/1/model.safetensors");
    std::fs::write(&weights, b"definitely not safetensors").unwrap();
    assert_mentions(&load_error(dir.path()), &["retail/1/model.safetensors: unreadable safetensors file"]);
    std::fs::remove_file(&weights).unwrap();
    assert_mentions(&load_error(dir.path()), &["retail/1/model.safetensors: is missing"]);
}

#[test]
fn every_broken_model_is_reported_not_just_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, tensors) = tiny();
    write_model(dir.path(), "good", "1", &manifest, &tensors);
    let mut missing = tensors.clone();
    missing.remove(0);
    write_model(dir.path(), "retail", "1", &manifest, &missing);
    write_model(dir.path(), "sme", "1", &json!({"features": []}), &tensors);
    let error = load_error(dir.path());
    assert_mentions(
        &error,
        &["(2 problems)", "retail/1/model.safetensors: tensor `0.weight` is missing", "sme/1/model.json"],
    );
    assert!(!error.contains("good/1"), "{error}");
}

#[test]
fn a_dangling_or_looping_version_link_is_reported_not_skipped() {
    let dir = tiny_repository();
    std::os::unix::fs::symlink("/nonexistent/candela", dir.path().join("retail/2")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("retail/3"), dir.path().join("retail/3")).unwrap();
    let error = load_error(dir.path());
    assert_mentions(
        &error,
        &[
            "(2 problems)",
            "retail/2: is a symbolic link to `/nonexistent/candela` that cannot be followed",
            "retail/3: is a symbolic link",
        ],
    );
}

#[test]
fn a_fifo_is_refused_at_once_instead_of_hanging_the_load() {
    for file in ["model.json", "model.safetensors"] {
        let dir = tiny_repository();
        let path = dir.path().join("retail/1").join(file);
        std::fs::remove_file(&path).unwrap();
        let made = std::process::Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(made.success());
        let started = std::time::Instant::now();
        let error = load_error(dir.path());
        assert_mentions(&error, &[&format!("retail/1/{file}: is not a regular file (a FIFO)")]);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}

#[test]
fn weights_are_checked_against_their_header_and_the_size_limit_before_they_are_read() {
    let dir = tiny_repository();
    let weights = dir.path().join("retail/1/model.safetensors");
    let size = std::fs::metadata(&weights).unwrap().len();
    // A valid header followed by 2 GiB of (sparse) padding: refused from its header.
    let file = std::fs::OpenOptions::new().write(true).open(&weights).unwrap();
    file.set_len(2 << 30).unwrap();
    drop(file);
    let started = std::time::Instant::now();
    let error = repository::load(dir.path(), &Device::Cpu, "cpu", 4 << 30).err().unwrap().to_string();
    assert_mentions(&error, &[&format!("is 2147483648 bytes but its header describes {size}"), "padded or corrupt"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "read the padding: {:?}", started.elapsed());
    // Over --max-model-bytes: refused naming the limit, unread.
    let error = load_error(dir.path());
    assert_mentions(&error, &["is 2147483648 bytes, over the limit of 1073741824 bytes (--max-model-bytes)"]);
    // Truncated (an upload in progress).
    let file = std::fs::OpenOptions::new().write(true).open(&weights).unwrap();
    file.set_len(size - 7).unwrap();
    drop(file);
    assert_mentions(&load_error(dir.path()), &["truncated (an upload still in progress?)"]);
}

#[test]
fn a_torch_save_file_is_recognised_and_the_fix_named() {
    let dir = tiny_repository();
    let version = dir.path().join("retail/1");
    // What torch.save writes: a zip archive.
    let zip = b"PK\x03\x04\x14\x00\x00\x00\x08\x00archive/data.pkl".to_vec();
    std::fs::write(version.join("model.safetensors"), &zip).unwrap();
    assert_mentions(&load_error(dir.path()), &["is a zip archive", "torch.save", "safetensors.torch.save_file"]);
    std::fs::remove_file(version.join("model.safetensors")).unwrap();
    std::fs::write(version.join("model.pt"), &zip).unwrap();
    assert_mentions(
        &load_error(dir.path()),
        &["model.safetensors: is missing; the directory holds model.pt", "safetensors.torch.save_file"],
    );
}

#[test]
fn a_missing_tensor_lists_the_files_nearest_names_and_the_fix() {
    // torch.compile's prefix.
    let (_dir, error) = broken(|_, t| {
        for entry in t.iter_mut() {
            entry.0 = Box::leak(format!("_orig_mod.{}", entry.0).into_boxed_str());
        }
    });
    assert_mentions(&error, &["\"tensor_prefix\": \"_orig_mod.\"", "`_orig_mod.0.weight`"]);
    // A Dropout left out of model.json shifts the indices.
    let (_dir, error) = broken(|m, t| {
        m["layers"] = json!([{"type": "linear"}, {"type": "relu"}, {"type": "linear"}, {"type": "softmax"}]);
        t[2].0 = "3.weight";
        t[3].0 = "3.bias";
    });
    assert_mentions(&error, &["tensor `2.weight` is missing", "missing from model.json's `layers`", "`3.weight`"]);
    // A Linear saved with bias=False.
    let (_dir, error) = broken(|_, t| t.retain(|(n, _, _)| *n != "2.bias"));
    assert_mentions(&error, &["{\"type\": \"linear\", \"bias\": false}"]);
}

#[test]
fn a_network_ending_in_logits_is_told_to_add_softmax() {
    let (_dir, error) = broken(|m, _| m["layers"] = json!([{"type": "linear"}, {"type": "relu"}, {"type": "linear"}]));
    assert_mentions(&error, &["ends in linear(4→2)", "raw scores (logits)", "adding {\"type\": \"softmax\"}"]);
}

#[test]
fn norm_layers_without_affine_parameters_use_weight_one_and_bias_zero() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = json!({
        "features": ["a", "b", "c"],
        "labels": ["no", "yes", "maybe"],
        "layers": [{"type": "batch_norm"}, {"type": "layer_norm"}, {"type": "softmax"}]
    });
    write_model(
        dir.path(),
        "plain",
        "1",
        &manifest,
        &vec![("0.running_mean", vec![3], vec![0.5, -1.0, 2.0]), ("0.running_var", vec![3], vec![4.0, 1.0, 0.25])],
    );
    let models = load(dir.path()).unwrap();
    let row = [1.5f64, 0.0, 2.5];
    let out = models[0].scorer.forward(&row.map(|v| v as f32)).unwrap().probabilities;
    // PyTorch: BatchNorm1d(affine=False), LayerNorm(elementwise_affine=False), softmax.
    let bn: Vec<f64> = [(0.5, 4.0), (-1.0, 1.0), (2.0, 0.25)]
        .iter()
        .zip(row)
        .map(|((m, v), x)| (x - m) / (v + 1e-5f64).sqrt())
        .collect();
    let mu = bn.iter().sum::<f64>() / 3.0;
    let var = bn.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / 3.0;
    let ln: Vec<f64> = bn.iter().map(|v| (v - mu) / (var + 1e-5).sqrt()).collect();
    let sum: f64 = ln.iter().map(|v| v.exp()).sum();
    for (k, v) in ln.iter().enumerate() {
        assert!((out[k] as f64 - v.exp() / sum).abs() < 1e-5, "{out:?}");
    }
}

#[test]
fn f16_and_bf16_probabilities_sum_to_one_within_f32_precision() {
    let dir = tempfile::tempdir().unwrap();
    let (mut manifest, tensors) = every_layer();
    for (version, dtype) in [("1", "f16"), ("2", "bf16")] {
        manifest["dtype"] = json!(dtype);
        write_model(dir.path(), "mixed", version, &manifest, &tensors);
    }
    for model in load(dir.path()).unwrap() {
        let rows: Vec<f32> = (0..300).map(|i| ((i * 37 % 101) as f32 - 50.0) / 10.0).collect();
        let out = model.scorer.forward(&rows).unwrap().probabilities;
        for row in out.chunks(3) {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{:?}: {row:?} sums to {sum}", model.manifest.dtype);
        }
    }
}
