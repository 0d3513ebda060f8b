//! What a booster file says about its inputs, reconciled with model.json.
//! A LightGBM or XGBoost model trained on a DataFrame stores its feature
//! names (and, for categorical features, their categories in code order):
//! served under a model.json listing the same names in another order, rows
//! sent by name would be scored on the wrong columns without a word. So
//! the file's names are the truth: model.json may leave `features` out (the
//! file's are used) or repeat them exactly; anything else is refused naming
//! both lists. A categorical feature's categories come from the file, or
//! from model.json's `categories` where the file keeps none (older XGBoost,
//! integer-coded training); callers then name them as strings. A feature
//! with neither takes the integer codes the model was trained on.

use super::Ensemble;
use crate::model::categories::Categories;
use crate::model::manifest::{Manifest, Task};

/// The inputs as a booster file describes them.
#[derive(Debug, Default)]
pub struct FileSchema {
    /// The names the model was trained under, in column order; empty when
    /// the file keeps none (trained on an array).
    pub names: Vec<String>,
    /// The features whose splits are categorical.
    pub categorical: Vec<usize>,
    /// Per categorical feature (by index), its categories in code order,
    /// where the file keeps them.
    pub vocabularies: Vec<(usize, Vec<String>)>,
    /// The library refuses a category it was not trained on (this says
    /// so, for the refusal); `None`: it scores one as missing.
    pub unknown_refused_by: Option<&'static str>,
}

/// Settles `manifest` with what the file says (features, a regressor's
/// task) and returns each feature's categories, for callers to name.
pub fn settle(
    schema: FileSchema,
    ensemble: &Ensemble,
    manifest: &mut Manifest,
) -> Result<Vec<Option<Categories>>, String> {
    let FileSchema { names, categorical, vocabularies, unknown_refused_by } = schema;
    if manifest.features.is_empty() {
        if names.is_empty() {
            return Err(format!(
                "`features` is empty and the model file stores no feature names (it was trained on an array): list \
                 its {} features in training column order",
                ensemble.features
            ));
        }
        manifest.features = names;
    } else if !names.is_empty() && names != manifest.features {
        let reordered = {
            let (mut a, mut b) = (names.clone(), manifest.features.clone());
            a.sort();
            b.sort();
            a == b
        };
        return Err(format!(
            "`features` is {:?} but the model was trained on {names:?}{}: list the file's names in its order, or \
             leave `features` out to use them",
            manifest.features,
            if reordered {
                " (the same names in another order: rows would be scored on the wrong columns)"
            } else {
                ""
            }
        ));
    }
    if manifest.task.is_none()
        && manifest.labels.is_empty()
        && ensemble.link.answers_value()
        && ensemble.base.len() == 1
    {
        manifest.task = Some(Task::Regression);
    }
    let mut categories: Vec<Option<Categories>> = vec![None; manifest.features.len()];
    for (feature, values) in vocabularies {
        if let Some(slot) = categories.get_mut(feature) {
            let known = Categories::of_booster(values, unknown_refused_by);
            *slot = Some(known.map_err(|e| format!("feature `{}`: {e}", manifest.features[feature]))?);
        }
    }
    for (name, values) in &manifest.categories {
        let Some(feature) = manifest.features.iter().position(|f| f == name) else {
            return Err(format!(
                "`categories` names `{name}`, which is not one of the features {:?}",
                manifest.features
            ));
        };
        if !categorical.contains(&feature) {
            return Err(format!(
                "`categories.{name}`: the model splits `{name}` as a number, not as a category: remove it"
            ));
        }
        match &categories[feature] {
            Some(known) if known.values() != values.as_slice() => {
                return Err(format!(
                    "`categories.{name}` is {values:?} but the model file stores {:?}: remove it to use the file's",
                    known.values()
                ));
            }
            Some(_) => {}
            None => {
                let known = Categories::of_booster(values.clone(), unknown_refused_by);
                categories[feature] = Some(known.map_err(|e| format!("`categories.{name}`: {e}"))?);
            }
        }
    }
    Ok(categories)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::trees::{Link, Sum};

    fn ensemble(link: Link) -> Ensemble {
        Ensemble {
            trees: Vec::new(),
            base: vec![0.0],
            link,
            sum: Sum::F32,
            features: 3,
            kind: "test".into(),
            sets: Vec::new(),
        }
    }

    fn manifest(json: &str) -> Manifest {
        serde_json::from_str(json).unwrap()
    }

    fn schema(names: &[&str]) -> FileSchema {
        FileSchema {
            names: names.iter().map(|n| n.to_string()).collect(),
            categorical: vec![1],
            vocabularies: vec![(1, vec!["a".into(), "b".into()])],
            unknown_refused_by: None,
        }
    }

    #[test]
    fn the_files_names_fill_model_json_and_a_regressor_objective_its_task() {
        let mut m = manifest(r#"{"format": "xgboost"}"#);
        let categories = settle(schema(&["x", "c", "y"]), &ensemble(Link::Identity), &mut m).unwrap();
        assert_eq!(m.features, ["x", "c", "y"]);
        assert_eq!(m.task, Some(Task::Regression));
        assert!(categories[0].is_none() && categories[2].is_none());
        assert_eq!(categories[1].as_ref().unwrap().values(), ["a", "b"]);
    }

    #[test]
    fn another_order_or_other_names_are_refused_naming_both_lists() {
        let mut m = manifest(r#"{"format": "xgboost", "features": ["c", "x", "y"], "labels": ["n", "y"]}"#);
        let error = settle(schema(&["x", "c", "y"]), &ensemble(Link::Sigmoid { scale: 1.0 }), &mut m).unwrap_err();
        assert!(error.contains(r#"["c", "x", "y"]"#) && error.contains(r#"["x", "c", "y"]"#), "{error}");
        assert!(error.contains("another order"), "{error}");
        let mut m = manifest(r#"{"format": "xgboost", "features": ["x", "c", "z"], "labels": ["n", "y"]}"#);
        let error = settle(schema(&["x", "c", "y"]), &ensemble(Link::Sigmoid { scale: 1.0 }), &mut m).unwrap_err();
        assert!(!error.contains("another order") && error.contains("leave `features` out"), "{error}");
    }

    #[test]
    fn model_json_names_categories_only_where_the_file_keeps_none() {
        let bare = FileSchema { names: Vec::new(), categorical: vec![1], ..FileSchema::default() };
        let mut m = manifest(r#"{"format": "xgboost", "features": ["x", "c", "y"], "categories": {"c": ["p", "q"]}}"#);
        let categories = settle(bare, &ensemble(Link::Identity), &mut m).unwrap();
        assert_eq!(categories[1].as_ref().unwrap().values(), ["p", "q"]);
        let mut m = manifest(r#"{"format": "xgboost", "categories": {"c": ["b", "a"]}}"#);
        let error = settle(schema(&["x", "c", "y"]), &ensemble(Link::Identity), &mut m).unwrap_err();
        assert!(error.contains("the model file stores [\"a\", \"b\"]"), "{error}");
        let mut m = manifest(r#"{"format": "xgboost", "categories": {"x": ["b", "a"]}}"#);
        let error = settle(schema(&["x", "c", "y"]), &ensemble(Link::Identity), &mut m).unwrap_err();
        assert!(error.contains("as a number"), "{error}");
        let mut m = manifest(r#"{"format": "xgboost"}"#);
        let error = settle(FileSchema::default(), &ensemble(Link::Identity), &mut m).unwrap_err();
        assert!(error.contains("stores no feature names") && error.contains("its 3 features"), "{error}");
    }
}
