//! Named, typed inputs: models converted from a DataFrame of numbers and
//! string categories (an input per column) answered through Triton's gRPC
//! and HTTP clients with a tensor per input and through HTTP `/score` with
//! rows by name, within 1e-5 of onnxruntime, unknown categories as each
//! model's encoder says (tests/peers/typed_check.py); and through
//! candela.v1, whose plain numeric rows carry a category as its code,
//! checked against the model's categories.

mod common;

use candela_server::testing::{TestServer, peers_python, repo_root, settings};
use common::wait_for;
use std::process::Command;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

fn fixtures() -> std::path::PathBuf {
    repo_root().join("tests/fixtures/formats/repo")
}

async fn serve(http: &str) -> TestServer {
    let server = TestServer::start_with(settings(&fixtures(), &["--http-listen", http])).await;
    wait_for(&mut common::client(&server).await, "", ServingStatus::Serving).await;
    server
}

#[tokio::test]
async fn triton_clients_and_score_send_an_input_per_feature_and_agree_with_onnxruntime() {
    let http = common::free_port();
    let server = serve(&http).await;
    let mut command = Command::new(peers_python());
    command.arg(repo_root().join("tests/peers/typed_check.py")).arg(server.addr.to_string()).arg(&http).arg(fixtures());
    let output = tokio::task::spawn_blocking(move || command.output().expect("the peer check runs")).await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "typed-input peer checks failed:\n{text}");
    println!("{text}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn plain_numeric_rows_carry_a_category_as_its_code() {
    let http = common::free_port();
    let server = serve(&http).await;
    let mut client = common::client(&server).await;
    // amount, country, age, channel: "fr" and "web" as their codes in the encoder's sorted categories.
    let info = client.get_model("onnx-dataframe").await.unwrap();
    assert_eq!(info.features, ["amount", "country", "age", "channel"]);
    let coded = client.predict("onnx-dataframe", vec![20.0, 1.0, 35.0, 2.0]).await.unwrap().prediction.unwrap();
    let body = serde_json::json!({"segment": "onnx-dataframe",
        "features": [{"amount": 20.0, "country": "fr", "age": 35.0, "channel": "web"}]});
    let named: serde_json::Value = common::post_json(&http, "/score", &body.to_string()).await;
    let by_name = named["probability"][0].as_array().unwrap();
    for (c, n) in coded.probabilities.iter().zip(by_name) {
        assert!((f64::from(*c) - n.as_f64().unwrap()).abs() < 1e-7, "{:?} vs {by_name:?}", coded.probabilities);
    }
    let status = client.predict("onnx-dataframe", vec![20.0, 7.0, 35.0, 2.0]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("feature `country` is a category"), "{}", status.message());
    let status = client.predict("onnx-dataframe-strict", vec![20.0, -1.0, 35.0, 2.0]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "the strict encoder has no code for an unknown category");
    server.stop().await.unwrap();
}
