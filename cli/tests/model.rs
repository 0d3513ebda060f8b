//! `candela model init` and `candela model publish` into a directory, the
//! real binary: a LightGBM booster trained on a DataFrame with category
//! columns gets its model.json written from the file (what it cannot say
//! is refused naming the key), statistics from a sample of training rows,
//! and is published into a live repository whose server then answers as
//! the library did. A broken version is never published; a published one
//! is never overwritten. (Into S3: tests/model_s3.rs.)

mod common;

use candela_client::Client;
use candela_server::testing::{TestServer, eventually, settings};
use common::{candela, first_row, text, trained};
use std::time::Duration;

#[tokio::test]
async fn init_writes_model_json_from_the_file_and_publish_serves_it_live() {
    let work = tempfile::tempdir().unwrap();
    let (file, sample) = trained(work.path());
    let file_arg = file.to_str().unwrap();

    // A classifier's labels are not in the file: refused naming the key.
    let refused = candela(&["model", "init", file_arg], &[]).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("`labels` has 0 entries") && text(&refused).contains("--labels"),
        "{}",
        text(&refused)
    );
    assert!(!file.with_file_name("model.json").exists(), "nothing is written when refused");

    let init =
        candela(&["model", "init", file_arg, "--labels", "legit,fraud", "--sample", sample.to_str().unwrap()], &[])
            .await;
    assert!(init.status.success(), "{}", text(&init));
    assert!(
        text(&init).contains("4 features (2 categories), labels [\"legit\", \"fraud\"], monitoring"),
        "{}",
        text(&init)
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file.with_file_name("model.json")).unwrap()).unwrap();
    assert_eq!(manifest["features"], serde_json::json!(["amount", "merchant", "hour", "country"]));
    assert_eq!(manifest["format"], "lightgbm");
    let merchants = &manifest["categories"]["merchant"];
    assert_eq!((&merchants[0], &merchants[2]), (&"grocery".into(), &"electronics".into()), "in code order");
    assert_eq!(manifest["files"]["lightgbm.txt"].as_str().unwrap().len(), 64);
    let monitored: Vec<&String> = manifest["monitoring"]["features"].as_object().unwrap().keys().collect();
    assert_eq!(monitored, ["amount", "hour"], "number features only");
    assert!(manifest["monitoring"]["score"]["edges"].as_array().is_some_and(|e| !e.is_empty()));
    let again = candela(&["model", "init", file_arg, "--labels", "legit,fraud"], &[]).await;
    assert!(!again.status.success() && text(&again).contains("--force"), "{}", text(&again));

    // Publish into a live repository: version 1 before the server starts, 2 while it runs.
    let repository = work.path().join("repository");
    let dir = file.parent().unwrap().to_str().unwrap();
    let publish = |version: &[&'static str]| {
        let mut args = vec!["model", "publish", dir, repository.to_str().unwrap(), "--segment", "fraud"];
        args.extend(version);
        args.iter().map(|a| a.to_string()).collect::<Vec<String>>()
    };
    let run = async |args: Vec<String>| candela(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await;
    let first = run(publish(&[])).await;
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("published fraud version 1"), "{}", text(&first));
    assert!(repository.join("fraud/1/model.json").is_file() && repository.join("fraud/1/lightgbm.txt").is_file());
    let server = TestServer::start_with(settings(&repository, &["--repository-poll-seconds", "0.2"])).await;
    let mut client = Client::connect(&server.url, Duration::from_secs(5)).await.unwrap();
    let (row, want) = first_row(&mut client, "fraud").await;
    let answer = client.predict("fraud", row.clone()).await.unwrap();
    assert!((f64::from(answer.prediction.unwrap().probabilities[1]) - want).abs() <= 1e-5);
    let second = run(publish(&[])).await;
    assert!(text(&second).contains("published fraud version 2"), "{}", text(&second));
    let served =
        async || client.predict("fraud", row.clone()).await.ok().and_then(|a| a.model).is_some_and(|m| m.version == 2);
    eventually(Duration::from_secs(20), "version 2 served", served).await;
    let taken = run(publish(&["--version", "1"])).await;
    assert!(
        !taken.status.success() && text(&taken).contains("version 1 of `fraud` is already published"),
        "{}",
        text(&taken)
    );

    // A version that does not load is not published.
    std::fs::write(file.with_file_name("lightgbm.txt"), "tree\nnot a model\n").unwrap();
    let broken = run(publish(&[])).await;
    assert!(!broken.status.success() && text(&broken).contains("does not load"), "{}", text(&broken));
    assert!(!repository.join("fraud/3").exists());
    server.stop().await.unwrap();
}

/// `init` on each format: what the file says is taken, what it cannot say is refused naming the flag.
#[tokio::test]
async fn init_takes_what_each_format_says_and_names_the_flag_for_the_rest() {
    let work = tempfile::tempdir().unwrap();
    let copy = |segment: &str, file: &str| {
        let dir = work.path().join(segment);
        std::fs::create_dir_all(&dir).unwrap();
        let from = candela_server::testing::repo_root().join("tests/fixtures/formats/repo").join(segment).join("1");
        std::fs::copy(from.join(file), dir.join(file)).unwrap();
        dir.join(file).to_str().unwrap().to_string()
    };
    let read = |path: &str| -> serde_json::Value {
        let manifest = std::path::Path::new(path).with_file_name("model.json");
        serde_json::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap()
    };
    // ONNX: the graph names its width and says it regresses.
    let onnx = copy("onnx-reg-forest", "model.onnx");
    let init = candela(&["model", "init", &onnx], &[]).await;
    assert!(init.status.success(), "{}", text(&init));
    let manifest = read(&onnx);
    assert_eq!((manifest["format"].as_str(), manifest["task"].as_str()), (Some("onnx"), Some("regression")));
    assert_eq!(manifest["features"].as_array().unwrap().len(), 8);
    // XGBoost trained on an array stores no names: refused naming the key, then given.
    let xgboost = copy("xgboost-binary", "xgboost.json");
    let refused = candela(&["model", "init", &xgboost, "--labels", "no,yes"], &[]).await;
    assert!(!refused.status.success() && text(&refused).contains("stores no feature names"), "{}", text(&refused));
    let features = "f0,f1,f2,f3,f4,f5,f6,f7";
    let init = candela(&["model", "init", &xgboost, "--labels", "no,yes", "--features", features], &[]).await;
    assert!(init.status.success(), "{}", text(&init));
    assert_eq!(read(&xgboost)["labels"], serde_json::json!(["no", "yes"]));
    // safetensors names tensors, not layers.
    let weights = copy("torch-safetensors", "model.safetensors");
    let refused = candela(&["model", "init", &weights, "--features", features], &[]).await;
    assert!(!refused.status.success() && text(&refused).contains("`layers`") && text(&refused).contains("--layers"));
    let layers = r#"[{"type": "linear", "bias": false}, {"type": "layer_norm", "eps": 0.001}, {"type": "gelu", "approximate": "tanh"},
        {"type": "dropout"}, {"type": "linear"}, {"type": "batch_norm", "eps": 0.01}, {"type": "tanh"}, {"type": "linear"},
        {"type": "softmax"}]"#;
    let init = candela(
        &["model", "init", &weights, "--features", features, "--labels", "class0,class1,class2", "--layers", layers],
        &[],
    )
    .await;
    assert!(init.status.success(), "{}", text(&init));
    // An unknown extension needs --format.
    let unknown = work.path().join("model.bin");
    std::fs::write(&unknown, b"x").unwrap();
    let refused = candela(&["model", "init", unknown.to_str().unwrap()], &[]).await;
    assert!(text(&refused).contains("pass --format"), "{}", text(&refused));
}
