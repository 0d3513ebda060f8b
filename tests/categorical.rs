//! Boosters with categorical features, trained on a DataFrame with pandas
//! `category` columns by the real libraries (`tests/fixtures/formats/
//! make_fixtures.py categorical_models`): LightGBM's bitset splits and
//! XGBoost's partition splits, served under a model.json that names neither
//! features nor categories (the file's are used). Callers name categories
//! as strings (candela.v1 text columns, whose `missing` rows say which are
//! missing; HTTP `/score` objects, null for missing; the Open
//! Inference Protocol's BYTES inputs are checked by tests/peers/typed_check.py)
//! or send their codes (NaN: missing); answers are within 1e-5 of the
//! library's predict_proba, unseen categories scored as LightGBM does
//! (missing) and refused as XGBoost does. HTTP metadata lists a matrix
//! input's features and a category input's categories. A model.json whose features
//! disagree with the file's names is refused naming both lists.

mod common;

use candela_server::testing::{TestServer, repo_root, settings};
use common::{free_port, post_json, wait_for};
use std::path::PathBuf;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const MODELS: [&str; 2] = ["lightgbm-categorical", "xgboost-categorical"];

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/formats/repo")
}

/// A segment's expected columns (by feature, null: missing) and the library's probabilities.
fn expected(segment: &str) -> (serde_json::Map<String, serde_json::Value>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(fixtures().join(segment).join("expected.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    let columns = expected["columns"].as_object().unwrap().clone();
    (columns, serde_json::from_value(expected["probabilities"].clone()).unwrap())
}

fn worst(got: impl IntoIterator<Item = f32>, want: &[Vec<f64>]) -> f64 {
    let got: Vec<f32> = got.into_iter().collect();
    assert_eq!(got.len(), want.len() * 2);
    got.iter().zip(want.concat()).map(|(g, w)| (f64::from(*g) - w).abs()).fold(0.0, f64::max)
}

#[tokio::test]
async fn categorical_boosters_answer_as_their_libraries_on_every_front() {
    let http = free_port();
    let server = TestServer::start_with(settings(&fixtures(), &["--http-listen", &http])).await;
    let mut client = common::client(&server).await;
    wait_for(&mut client, "", ServingStatus::Serving).await;
    for segment in MODELS {
        let (columns, want) = expected(segment);
        let info = client.get_model(segment).await.unwrap();
        // Features and categories from the file: model.json lists neither.
        assert_eq!(info.features, ["amount", "merchant", "hour", "country"], "{segment}");
        let kinds: Vec<&str> = info.feature_types.iter().map(|f| f.kind.as_str()).collect();
        assert_eq!(kinds, ["number", "category", "number", "category"], "{segment}");
        let merchants = info.feature_types[1].categories.clone();
        assert_eq!(merchants[..3], ["grocery", "travel", "electronics"], "{segment}: the training order");

        // candela.v1 plain rows: categories as their codes, NaN for missing
        // (-1 for an unseen one, which LightGBM scores as missing).
        let categories = [&merchants, &info.feature_types[3].categories];
        let code = |feature: usize, value: &serde_json::Value| match value.as_str() {
            Some(name) => {
                let at = categories[feature / 2].iter().position(|c| c == name);
                at.map_or(-1.0, |at| at as f32)
            }
            None => f32::NAN,
        };
        let names = ["amount", "merchant", "hour", "country"];
        let rows = want.len();
        let values: Vec<f32> = (0..rows)
            .flat_map(|r| names.iter().enumerate().map(move |(f, name)| (f, name, r)).collect::<Vec<_>>())
            .map(|(f, name, r)| {
                let value = &columns[*name][r];
                if f % 2 == 1 { code(f, value) } else { value.as_f64().map_or(f32::NAN, |v| v as f32) }
            })
            .collect();
        let answer = client.batch_predict(segment, 4, values).await.unwrap();
        let coded = worst(answer.predictions.iter().flat_map(|p| p.probabilities.clone()), &want);
        assert!(coded <= 1e-5, "{segment} by codes: {coded:e}");

        // HTTP /score: rows as objects by name, categories as strings, null for missing.
        let objects: Vec<serde_json::Value> = (0..rows)
            .map(|r| serde_json::Value::Object(names.iter().map(|n| (n.to_string(), columns[*n][r].clone())).collect()))
            .collect();
        let body = serde_json::json!({"segment": segment, "features": objects}).to_string();
        let answer = post_json(&http, "/score", &body).await;
        let probabilities = answer["probability"].as_array().unwrap_or_else(|| panic!("{answer}"));
        let got =
            probabilities.iter().flat_map(|row| row.as_array().unwrap().iter().map(|p| p.as_f64().unwrap() as f32));
        let scored = worst(got, &want);
        assert!(scored <= 1e-5, "{segment} over /score: {scored:e}");

        // candela.v1 text columns, a missing category listed in the column's `missing` rows.
        let number = |name: &str, r: usize| columns[name][r].as_f64().map_or(f32::NAN, |v| v as f32);
        let text = |feature: u32, name: &str| candela::v1::TextColumn {
            feature,
            values: (0..rows).map(|r| columns[name][r].as_str().unwrap_or_default().to_string()).collect(),
            missing: (0..rows).filter(|&r| columns[name][r].is_null()).map(|r| r as u32).collect(),
        };
        let typed_rows = candela::v1::Rows {
            feature_count: 4,
            values: (0..rows).flat_map(|r| [number("amount", r), 0.0, number("hour", r), 0.0]).collect(),
            text: vec![text(1, "merchant"), text(3, "country")],
        };
        assert!(!typed_rows.text[0].missing.is_empty(), "the rows hold missing categories");
        let answer = client.batch_predict_rows(segment, typed_rows.clone()).await.unwrap();
        let typed = worst(answer.predictions.iter().flat_map(|p| p.probabilities.clone()), &want);
        assert!(typed <= 1e-5, "{segment} by text columns: {typed:e}");
        let mut beyond = typed_rows;
        beyond.text[0].missing.push(rows as u32);
        let status = client.batch_predict_rows(segment, beyond).await.unwrap_err();
        assert!(status.message().contains("rows.text[0].missing["), "{}", status.message());
        println!(
            "{segment}: {rows} rows, largest |Δp| {:.1e} (codes), {scored:.1e} (/score), {typed:.1e} (text columns)",
            coded
        );
    }

    // An unseen category: LightGBM scores it as missing, XGBoost refuses it, naming the field.
    let row = |merchant: serde_json::Value| serde_json::json!({"amount": 20.0, "merchant": merchant, "hour": 3.0, "country": "us"});
    for segment in MODELS {
        let body =
            serde_json::json!({"segment": segment, "features": [row("casino".into()), row(serde_json::Value::Null)]});
        let answer = post_json(&http, "/score", &body.to_string()).await;
        if segment.starts_with("lightgbm") {
            let p = answer["probability"].as_array().unwrap_or_else(|| panic!("{segment}: {answer}"));
            assert_eq!(p.len(), 2);
            assert_eq!(p[0], p[1], "{segment}: unseen is missing: {answer}");
        } else {
            let error = answer["error"].as_str().unwrap_or_else(|| panic!("{answer}"));
            assert!(
                error.contains("features[0].merchant") && error.contains("the unknown category `casino`"),
                "{error}"
            );
            assert!(error.contains("XGBoost refuses a category not in its training set"), "{error}");
        }
    }
    // HTTP metadata says what a row holds: a matrix input's features, a category input's categories.
    let metadata = async |model: &str| {
        let mut curl = std::process::Command::new("curl");
        curl.args(["-sS", "--max-time", "20", &format!("http://{http}/v2/models/{model}")]);
        let output = tokio::task::spawn_blocking(move || curl.output().unwrap()).await.unwrap();
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let matrix = metadata("xgboost-binary").await;
    let features: Vec<String> = (0..8).map(|i| format!("f{i}")).collect();
    assert_eq!(matrix["inputs"][0]["parameters"]["features"], serde_json::json!(features), "{matrix}");
    let named = metadata("lightgbm-categorical").await;
    assert_eq!(named["inputs"][1]["name"], "merchant");
    assert_eq!(named["inputs"][1]["parameters"]["categories"][0], "grocery", "{named}");
    assert!(named["inputs"][0].get("parameters").is_none() && named["outputs"][0].get("parameters").is_none());
    let status = client.predict("xgboost-categorical", vec![20.0, 99.0, 3.0, 0.0]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("is a category"), "{}", status.message());
    server.stop().await.unwrap();
}

#[test]
fn a_model_json_that_disagrees_with_the_files_feature_names_is_refused_naming_both() {
    let root = tempfile::tempdir().unwrap();
    for (segment, features) in [
        ("lightgbm-categorical", r#"["merchant", "amount", "hour", "country"]"#),
        ("xgboost-categorical", r#"["amount", "merchant", "hour", "region"]"#),
    ] {
        let dir = root.path().join(segment).join("1");
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(fixtures().join(segment).join("1")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        let manifest = std::fs::read_to_string(dir.join("model.json")).unwrap();
        let manifest = manifest.replacen("{", &format!("{{\"features\": {features},"), 1);
        std::fs::write(dir.join("model.json"), manifest).unwrap();
    }
    let device = candle_core::Device::Cpu;
    let Err(errors) = candela_server::model::repository::load(root.path(), &device, "cpu", 1 << 30) else {
        panic!("a model.json naming the features wrongly was served");
    };
    let errors = errors.to_string();
    for needle in [
        r#"`features` is ["merchant", "amount", "hour", "country"] but the model was trained on ["amount", "merchant", "hour", "country"] (the same names in another order"#,
        r#"`features` is ["amount", "merchant", "hour", "region"] but the model was trained on ["amount", "merchant", "hour", "country"]: list"#,
    ] {
        assert!(errors.contains(needle), "`{needle}` not in:\n{errors}");
    }
}
