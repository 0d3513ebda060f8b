//! What to say when a tensor a layer needs is not in the weights file: the
//! usual causes when a PyTorch model is written by hand into model.json are a
//! different name prefix (`torch.compile`'s `_orig_mod.`, a Sequential nested
//! in a module), layer indices shifted by a layer left out of model.json (a
//! Dropout, an activation), a Linear saved with `bias=False`, or scikit-learn
//! attribute names. The hint names the file's nearest tensors and the fix.

use super::manifest::LayerSpec;

/// How many of the file's tensor names a hint lists.
const LISTED: usize = 6;

/// The hint for `name` (`{prefix}{index}.{param}`), missing from a file
/// holding `in_file`.
pub(super) fn missing(
    name: &str,
    prefix: &str,
    index: usize,
    param: &str,
    layer: &LayerSpec,
    in_file: &[String],
) -> String {
    if in_file.is_empty() {
        return "the weights file holds no tensors".to_string();
    }
    let suffix = format!("{index}.{param}");
    // The same layer under another prefix: `_orig_mod.0.weight`, `net.0.0.weight`.
    let prefixes: Vec<&str> = in_file
        .iter()
        .filter(|n| n.as_str() != name && n.ends_with(&suffix))
        .map(|n| &n[..n.len() - suffix.len()])
        .filter(|p| p.is_empty() || p.ends_with('.'))
        .collect();
    let nearest = nearest(name, in_file);
    let fix = if let Some(other) = prefixes.first() {
        format!(
            "the file names its tensors with the prefix `{other}`: set \"tensor_prefix\": \"{other}\" in model.json"
        )
    } else if param == "bias" && matches!(layer, LayerSpec::Linear { .. }) {
        "if this layer was built with `bias=False`, say so: {\"type\": \"linear\", \"bias\": false}".to_string()
    } else if in_file.iter().any(|n| n.ends_with("mean_") || n.ends_with("scale_")) {
        "`mean_`/`scale_` are scikit-learn StandardScaler attributes: save them as `<index>.mean` and `<index>.std` for a `standardize` layer".to_string()
    } else if shifted(prefix, index, param, in_file) {
        "the file has this tensor under a neighbouring layer index: is a layer (a Dropout, an activation) missing from model.json's `layers`, or one listed that the network does not have? model.json must list every module of the nn.Sequential, in order".to_string()
    } else {
        "check model.json's `layers` against the network's modules, in order".to_string()
    };
    format!("{fix}; the file's nearest tensors: {}", nearest.join(", "))
}

/// Whether `{prefix}{j}.{param}` exists for a layer index next to `index`.
fn shifted(prefix: &str, index: usize, param: &str, in_file: &[String]) -> bool {
    [index.checked_sub(1), index.checked_add(1), index.checked_add(2)]
        .into_iter()
        .flatten()
        .any(|j| in_file.iter().any(|n| *n == format!("{prefix}{j}.{param}")))
}

/// The file's tensor names closest to `name` by edit distance, at most `LISTED`.
fn nearest(name: &str, in_file: &[String]) -> Vec<String> {
    let mut ranked: Vec<(usize, &String)> = in_file.iter().map(|n| (distance(name, n), n)).collect();
    ranked.sort();
    ranked.into_iter().take(LISTED).map(|(_, n)| format!("`{n}`")).collect()
}

/// Levenshtein distance over bytes (tensor names are ASCII in practice).
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_compiled_models_prefix_is_named_with_the_setting_that_fixes_it() {
        let file = names(&["_orig_mod.0.weight", "_orig_mod.0.bias", "_orig_mod.2.weight"]);
        let hint = missing("0.weight", "", 0, "weight", &LayerSpec::Linear { bias: true }, &file);
        assert!(hint.contains("\"tensor_prefix\": \"_orig_mod.\""), "{hint}");
        assert!(hint.contains("`_orig_mod.0.weight`"), "{hint}");
    }

    #[test]
    fn a_missing_bias_suggests_bias_false_and_a_shift_suggests_a_missing_layer() {
        let file = names(&["0.weight", "2.weight", "2.bias"]);
        let hint = missing("0.bias", "", 0, "bias", &LayerSpec::Linear { bias: true }, &file);
        assert!(hint.contains("\"bias\": false"), "{hint}");
        let hint = missing("1.weight", "", 1, "weight", &LayerSpec::Linear { bias: true }, &file);
        assert!(hint.contains("missing from model.json"), "{hint}");
    }

    #[test]
    fn scikit_learn_names_are_recognised() {
        let file = names(&["mean_", "scale_"]);
        let hint = missing("0.mean", "", 0, "mean", &LayerSpec::Standardize, &file);
        assert!(hint.contains("StandardScaler"), "{hint}");
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("0.weight", "0.weight"), 0);
        assert_eq!(distance("0.weight", "1.weight"), 1);
        assert_eq!(distance("", "abc"), 3);
    }
}
